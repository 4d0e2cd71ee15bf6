"""The load unit: LOAD instructions, memory rows into scratchpad A, B or Q.

A LOAD reads ``rows`` rows of ``length`` bytes, ``stride`` bytes apart, into consecutive
scratchpad rows (the rest of each row zero). The unit turns it into memory read requests, one
beat of up to W = ``mem_bytes_per_cycle`` bytes per cycle at any alignment, keeps a tag per
outstanding beat, and assembles returning beats into rows that it writes into the scratchpad.
It waits for a token from compute before it starts if the LOAD says ``pop_next``, and gives one
(``push_next``) once its last row is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .isa import ADDR_BITS, Spad, geometry, insn_layout
from .memory import engine_memories, request_layout
from .tokens import consumer_signature, producer_signature

__all__ = ["LoadTiming", "LoadUnit"]


@dataclass(frozen=True)
class LoadTiming:
    """The load unit's timing, in cycles, from the configuration alone.

    A LOAD the unit takes in cycle ``s`` asks for its first beat in ``s + request_delay``, then
    one beat per cycle the memory port grants it; the unit takes its next LOAD ``release`` cycles
    after its last beat is granted (in cycle ``g``), and the LOAD's last row is written, and its
    token pushed, in ``g + read_latency + write_latency``.
    """

    config: EngineConfig

    #: the instruction's fields into the unit's registers, then its first request
    request_delay = 1
    #: the last beat's data arriving to its row written and the token pushed: the beat
    #: registered with its tag, then assembled into the row's register (written from there)
    write_latency = 2
    #: after the last beat is granted, the unit is free the next cycle
    release = 1

    @property
    def read_latency(self) -> int:
        """The memory's: cycles from a read's grant to its data."""
        return self.config.read_latency

    #: throughput: memory beats the unit asks for per cycle (while it has a LOAD)
    throughput = 1

    def row_beats(self, length: int) -> int:
        """Beats of one row of ``length`` bytes."""
        return -(-length // self.config.mem_bytes_per_cycle)

    def beats(self, rows: int, length: int) -> int:
        """Beats of a LOAD of ``rows`` rows of ``length`` bytes."""
        return rows * self.row_beats(length)

    def span(self, beats: int) -> int:
        """Cycles from taking a LOAD of ``beats`` beats to its last row being written, when the
        memory port grants every beat as it asks."""
        return self.request_delay + beats - 1 + self.read_latency + self.write_latency


class LoadUnit(wiring.Component):
    """Runs LOADs.

    ``insn``: LOADs (the head of the load queue). ``req``/``rdata``: the memory port's read
    requests and their data, in order. ``write_a``, ``write_b``, ``write_q``: the scratchpads'
    write ports. ``c2l``: tokens from compute (a buffer is free); ``l2c``: tokens to compute
    (rows are in). ``idle``: nothing in flight. ``error``: a LOAD ran past the 32-bit address
    space (its first row is checked as it is decoded; later rows as the unit gets to them): the
    unit stops before that row's first request.
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        self.geometry = geometry(config)
        self.timing = LoadTiming(config)
        w = config.mem_bytes_per_cycle
        mems = engine_memories(config)
        super().__init__({
            "insn": In(stream.Signature(insn_layout)),
            "req": Out(stream.Signature(request_layout(config))),
            "rdata": In(stream.Signature(data.ArrayLayout(8, w))),
            "write_a": In(mems["a"].write_signature()),
            "write_b": In(mems["b"].write_signature()),
            "write_q": In(mems["q"].write_signature()),
            "c2l": Out(consumer_signature),
            "l2c": Out(producer_signature),
            "idle": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, g = self.config, self.geometry
        w = cfg.mem_bytes_per_cycle
        latency = cfg.read_latency
        head = self.insn.payload
        req = self.req

        widest = max(g.a_row_bytes, g.b_row_bytes, g.q_row_bytes)
        beats_per_row = -(-widest // w)
        tag_layout = data.StructLayout({
            "spad": Spad, "row": range(max(g.a_rows, g.b_rows, g.q_rows)),
            "beat": range(beats_per_row),
            "row_done": 1, "push": 1,
        })
        m.submodules.tags = tags = SyncFIFO(width=tag_layout.size, depth=latency + 3)
        # Room for a tag, from the FIFO's level a cycle ago (it rises by at most one a cycle):
        # no compare between the level and the memory arbiter. At most `latency` tags ever
        # wait (read data returns `latency` cycles after its request and is always taken),
        # so neither this nor the FIFO's own ready ever holds a request back.
        tag_room = Signal(init=1)
        m.d.sync += tag_room.eq(tags.level <= latency)

        ld = head.args.load
        busy = Signal()
        spad = Signal(Spad)
        row = Signal.like(ld.row)
        rows_left = Signal.like(ld.rows)
        length = Signal.like(ld.length)
        remaining = Signal.like(ld.length)   # bytes of the current row still to request
        beat = Signal(range(beats_per_row + 1))
        addr = Signal.like(ld.addr)
        stride = Signal.like(ld.stride)
        push = Signal()
        # remaining <= w, and length <= w, kept in registers (a compare fewer on the path from
        # memory's ready to the unit's registers)
        last_beat = Signal()
        one_beat_rows = Signal()
        # The next row's address, a row ahead, in bits enough never to wrap (the unit stops at
        # the first row past the address space): a row starts from a register copy, and
        # whether it runs past the address space is a compare of registers, made as the row
        # before it ends. `asking` is busy and not past it, kept in its own register, so the
        # request's valid is two register outputs, as it was before the check (it reaches the
        # memory arbiter's choice, and from there the clock enables of both units).
        next_row = Signal(ADDR_BITS + 2)
        limit = Signal(ADDR_BITS + 2)   # the last address a row may start at
        asking = Signal()

        # Take the next LOAD once its token (if it waits for one) is there.
        start = ~busy & ~self.error & self.insn.valid \
            & (~head.deps.pop_next | self.c2l.available)
        m.d.comb += [self.insn.ready.eq(start), self.c2l.pop.eq(start & head.deps.pop_next)]
        with m.If(start):
            m.d.sync += [busy.eq(1), spad.eq(ld.spad), row.eq(ld.row), rows_left.eq(ld.rows),
                         length.eq(ld.length), remaining.eq(ld.length), beat.eq(0),
                         addr.eq(ld.addr), stride.eq(ld.stride),
                         next_row.eq(ld.addr + ld.stride),
                         limit.eq((1 << ADDR_BITS) - ld.length),
                         asking.eq(1),   # (the decoder checked the first row)
                         push.eq(head.deps.push_next), last_beat.eq(ld.length <= w),
                         one_beat_rows.eq(ld.length <= w)]

        last_row = rows_left == 1
        m.d.comb += [
            req.valid.eq(asking & tag_room),
            req.payload.write.eq(0),
            req.payload.addr.eq(addr),
            req.payload.length.eq(Mux(last_beat, remaining, w)),
        ]
        with m.If(busy & ~asking):   # stopped before a row past the address space
            m.d.sync += self.error.eq(1)
        tag_in = data.View(tag_layout, tags.w_data)
        m.d.comb += [tag_in.spad.eq(spad), tag_in.row.eq(row), tag_in.beat.eq(beat),
                     tag_in.row_done.eq(last_beat), tag_in.push.eq(push & last_beat & last_row),
                     tags.w_en.eq(req.valid & req.ready)]
        with m.If(req.valid & req.ready):
            with m.If(last_beat):
                m.d.sync += [remaining.eq(length), last_beat.eq(one_beat_rows), beat.eq(0),
                             row.eq(row + 1), rows_left.eq(rows_left - 1),
                             addr.eq(next_row), next_row.eq(next_row + stride),
                             asking.eq(~last_row & ~(next_row > limit))]
                with m.If(last_row):
                    m.d.sync += busy.eq(0)
            with m.Else():
                m.d.sync += [remaining.eq(remaining - w), last_beat.eq(remaining <= 2 * w),
                             beat.eq(beat + 1), addr.eq(addr + w)]

        # Returning beats, in order: registered with their tag as they arrive (the tag comes
        # out of LUT RAM, and what it selects spreads over the whole row), then assembled into
        # rows and written into their scratchpad.
        rdata = self.rdata
        m.d.comb += [tags.r_en.eq(rdata.valid), rdata.ready.eq(1)]
        beat_valid = Signal()
        beat_data = Signal(8 * w)
        tag_bits = Signal(tag_layout.size)   # (a view: a one-beat row's `beat` has no bits)
        tag = data.View(tag_layout, tag_bits)
        m.d.sync += [beat_valid.eq(rdata.valid), beat_data.eq(rdata.payload),
                     tag_bits.eq(tags.r_data)]
        row_buf = Signal(8 * w * beats_per_row)
        assembled = Signal(8 * w * beats_per_row)
        for b in range(beats_per_row):
            part = slice(8 * w * b, 8 * w * (b + 1))
            with m.If(tag.beat == b):
                m.d.comb += assembled[part].eq(beat_data)
            if b < beats_per_row - 1:
                with m.Elif(tag.beat > b):
                    m.d.comb += assembled[part].eq(row_buf[part])
            # (parts after this beat stay zero: a row starts clean)
        with m.If(beat_valid):
            m.d.sync += row_buf.eq(assembled)
        # A finished row is registered, then written (the scratchpads' block RAMs lie spread
        # over the chip), and its token follows the write.
        w_row = Signal.like(tag.row)
        w_data = Signal.like(assembled)
        w_push = Signal()
        writing = []
        m.d.sync += [w_row.eq(tag.row), w_data.eq(assembled), w_push.eq(beat_valid & tag.push)]
        for spad_enum, port in ((Spad.A, self.write_a), (Spad.B, self.write_b),
                                (Spad.Q, self.write_q)):
            en = Signal(name=f"write_{spad_enum.name.lower()}")
            m.d.sync += en.eq(beat_valid & tag.row_done & (tag.spad == spad_enum))
            m.d.comb += [port.addr.eq(w_row), port.data.eq(w_data), port.en.eq(en)]
            writing.append(en)
        m.d.comb += self.l2c.push.eq(w_push)

        m.d.comb += self.idle.eq(~busy & (tags.level == 0)
                                 & ~Cat(beat_valid, *writing, w_push).any())
        return m

