"""The compute unit: COMPUTE instructions, scratchpad rows through the array into the accumulator.

Three parts, each a component:

- a front end that takes a COMPUTE once its tokens are there and hands it on as descriptors:
  what to read to the row source(s), where the results go to the writeback;
- :class:`RowSource`: streams scratchpad rows into the tile engine (``os``: one source reads A
  and B together; ``ws``: one reads A, another B's weights);
- :class:`Writeback`: writes (or adds) each result row of the tile engine into the accumulator
  and pushes the COMPUTE's tokens once its last row is in.

The sources present a row only when the tile engine will take it the moment it arrives: a
tile's last beat no sooner than ``rows`` cycles after the previous tile's (``os``, the drain),
a tile's first row of A only once its weights are in, and weights only once the previous tile's
swap has passed (``ws``). The rules are the tile engine's own (:class:`~rtl.tile.TileTiming`),
applied ``RowSource.latency`` cycles earlier, so the array never holds a row back and every
row's cycle follows from when it was presented: that is what makes the unit's timing a few
formulas (:class:`ComputeTiming`).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .config import EngineConfig, refuse
from .isa import ROW_BITS, insn_layout
from .memory import EngineMemory, engine_memories
from .tile import TileEngine, TileTiming, c_layout
from .tokens import consumer_signature, producer_signature

__all__ = ["ComputeTiming", "ComputeUnit", "RowSource", "Writeback"]


@dataclass(frozen=True)
class ComputeTiming:
    """The compute unit's timing, in cycles, from the configuration alone.

    The front end takes a COMPUTE in cycle ``s`` (once its tokens are there, one per cycle, and
    while each source's descriptor FIFO and the writeback's have room). A source takes the
    descriptor in ``max(s + descriptor_latency, P)``, ``P`` the cycle it presents the previous
    instruction's final row, and presents its rows from the next cycle, one per cycle, except
    where a rule of the array holds a row (see the module's docstring); a row presented in
    cycle ``p`` enters the tile engine in ``p + source_latency``. The tile's result rows leave
    the tile engine as :class:`~rtl.tile.TileTiming` says, and each is in the accumulator (its
    tokens pushed with the last) ``writeback_latency`` cycles later.

    A descriptor FIFO entry is free again ``room_latency`` cycles after its source takes it;
    a writeback entry ``room_latency`` cycles after the tile's last result row leaves.
    """

    config: EngineConfig

    #: the front end's descriptor written to the source taking it (a SyncFIFOBuffered)
    descriptor_latency = 2
    #: a source taking a descriptor to presenting its first row
    present_delay = 1
    #: a row presented (its scratchpad address) to the tile engine taking it: the block RAM's
    #: read, its output register, the register that carries the row to the array
    source_latency = 3
    #: a result row leaving the tile engine to being in the accumulator: the old row read and
    #: registered, the sum registered, written
    writeback_latency = 3
    #: descriptors each source's FIFO holds
    source_depth = 4
    #: descriptors the writeback's FIFO holds
    writeback_depth = 8
    #: a FIFO entry taken in cycle t is writable again in t + this
    room_latency = 1

    @property
    def issue_latency(self) -> int:
        """From the front end taking a COMPUTE to its first beat entering the array, when the
        sources are idle and no rule holds the row."""
        return self.descriptor_latency + self.present_delay + self.source_latency

    @property
    def tile(self) -> TileTiming:
        return TileTiming(self.config)

    #: throughput: operand beats into the array per cycle (COMPUTEs one per cycle)
    throughput = 1


class RowSource(wiring.Component):
    """Streams rows ``first .. first + count - 1`` of one or more memories, instruction after
    instruction, through each memory's read port (with its output register) and a register that
    carries the row to the consumer.

    ``cmd``: descriptors (a first row per memory, ``count``), into a FIFO of ``depth``.
    ``o``: the rows, one field per memory, and ``last`` on an instruction's final row.
    ``hold_first``/``hold_final``: do not present an instruction's first (final) row in this
    cycle. ``presented``, ``presented_first``, ``presented_final``: a row (the first, the final
    one of its instruction) was presented this cycle. A row presented in cycle ``p`` is valid on
    ``o`` in ``p + latency`` if ``o`` has not held the pipeline meanwhile (while ``o`` is valid
    and not ready, everything holds).
    """

    #: presentation to valid on ``o``: the read, the output register, the register behind
    latency = ComputeTiming.source_latency

    def __init__(self, memories: dict[str, EngineMemory], *, depth: int):
        if not memories:
            raise refuse(self, "a row source reads at least one memory")
        self.memories = memories
        self.depth = depth
        self.cmd_layout = data.StructLayout(
            {**{name: ROW_BITS for name in memories}, "count": ROW_BITS})
        members = {
            "cmd": In(stream.Signature(self.cmd_layout)),
            "o": Out(stream.Signature(data.StructLayout(
                {**{name: mem.shape for name, mem in memories.items()}, "last": 1}))),
            "hold_first": In(1), "hold_final": In(1),
            "presented": Out(1), "presented_first": Out(1), "presented_final": Out(1),
            "idle": Out(1),
        }
        for name, mem in memories.items():
            members[f"read_{name}"] = In(mem.read_signature())
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = q = SyncFIFOBuffered(width=self.cmd_layout.size, depth=self.depth)
        m.d.comb += [q.w_data.eq(self.cmd.payload), q.w_en.eq(self.cmd.valid),
                     self.cmd.ready.eq(q.w_rdy)]
        d = data.View(self.cmd_layout, q.r_data)
        active = Signal()
        index = Signal(ROW_BITS)
        count = Signal(ROW_BITS)
        first = Signal()        # index == 0, in a register
        final = Signal()        # index + 1 == count, kept a step ahead
        read = Signal()         # the read ports hold a row
        read_last = Signal()
        near = Signal()         # their output registers hold it
        near_last = Signal()
        valid = Signal()        # the registers after those hold it
        last = Signal()
        advance = ~valid | self.o.ready
        present = active & ~(first & self.hold_first) & ~(final & self.hold_final)
        with m.If(advance):
            m.d.sync += [read.eq(present), read_last.eq(final), near.eq(read),
                         near_last.eq(read_last), valid.eq(near), last.eq(near_last)]
            with m.If(present):
                m.d.sync += [index.eq(index + 1), final.eq(index + 2 == count), first.eq(0)]
                with m.If(final):
                    m.d.sync += active.eq(0)
        presented = advance & present
        m.d.comb += [self.presented.eq(presented),
                     self.presented_first.eq(presented & first),
                     self.presented_final.eq(presented & final)]
        take = q.r_rdy & (~active | (presented & final))
        m.d.comb += q.r_en.eq(take)
        with m.If(take):
            m.d.sync += [active.eq(1), index.eq(0), count.eq(d.count), final.eq(d.count == 1),
                         first.eq(1)]
        for name in self.memories:
            port = getattr(self, f"read_{name}")
            base = Signal(ROW_BITS, name=f"base_{name}")
            with m.If(take):
                m.d.sync += base.eq(getattr(d, name))
            row = Signal.like(port.data, name=f"row_{name}")
            with m.If(advance):
                m.d.sync += row.eq(port.data)
            m.d.comb += [port.en.eq(advance), port.addr.eq(base + index),
                         getattr(self.o.payload, name).eq(row)]
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.last.eq(last),
                     self.idle.eq(~active & ~read & ~near & ~valid & (q.level == 0))]
        return m


#: where a tile's results go, and the tokens its last row pushes
wb_layout = data.StructLayout({"first_row": ROW_BITS, "accumulate": 1, "push_prev": 1,
                               "push_next": 1})


class Writeback(wiring.Component):
    """Writes each result row of the tile engine into the accumulator, or adds it to the row
    there, in :attr:`latency` cycles, one row per cycle.

    ``c``: result rows (always taken). ``desc``: one descriptor per tile (:data:`wb_layout`):
    its first row goes to ``first_row`` and the next ones count down (``os``: bottom row first)
    or up (``ws``); taken with the tile's last row. ``c2l``/``c2s``: the descriptor's
    ``push_prev``/``push_next`` tokens, pushed as the tile's last row is written. ``busy``: a
    row is on its way.
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        acc = engine_memories(config)["acc"]
        super().__init__({
            "c": In(stream.Signature(c_layout(config))),
            "desc": In(stream.Signature(wb_layout)),
            "acc_read": In(acc.read_signature()),
            "acc_write": In(acc.write_signature()),
            "c2l": Out(producer_signature),
            "c2s": Out(producer_signature),
            "busy": Out(1),
        })

    @property
    def latency(self) -> int:
        return ComputeTiming.writeback_latency

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        c = cfg.cols
        os_ = cfg.dataflow == "os"
        acc_rd, acc_wr = self.acc_read, self.acc_write
        desc = self.desc.payload
        m.d.comb += [self.c.ready.eq(1), self.desc.ready.eq(self.c.valid & self.c.payload.last)]
        # The row a result goes to: a tile's first from its descriptor, the next ones from a
        # register counting from it (no adder before the block RAMs' address).
        in_tile = Signal()     # a row of this tile has gone: the next one is `next_row`
        next_row = Signal(ROW_BITS)
        target = Signal(ROW_BITS)
        m.d.comb += [target.eq(Mux(in_tile, next_row, desc.first_row)),
                     acc_rd.addr.eq(target), acc_rd.en.eq(1)]
        row_layout = data.ArrayLayout(signed(cfg.acc_bits), c)
        s1_valid = Signal()
        s1_addr = Signal(ROW_BITS)
        s1_data = Signal(row_layout)
        s1_acc = Signal()
        s1_push_prev = Signal()
        s1_push_next = Signal()
        fire = self.c.valid
        tile_done = fire & self.c.payload.last
        m.d.sync += [s1_valid.eq(fire), s1_addr.eq(target), s1_data.eq(self.c.payload.data),
                     s1_acc.eq(desc.accumulate),
                     s1_push_prev.eq(tile_done & desc.push_prev),
                     s1_push_next.eq(tile_done & desc.push_next)]
        with m.If(fire):
            m.d.sync += [in_tile.eq(~self.c.payload.last),
                         next_row.eq(target - 1 if os_ else target + 1)]
        # Stage 2 registers the row read from the accumulator as it leaves the block RAM (whose
        # output is slow on an FPGA: nothing may stand between it and a register) and adds to
        # it; stage 3 registers the sum and writes it (the block RAMs lie spread over the chip).
        # The read happened two cycles before stage 2, before the writes of the three rows
        # ahead (the third one writes in the read's own cycle): a row one of them wrote is
        # registered beside the one read and taken instead, the nearest first.
        s2_valid = Signal()
        s2_addr = Signal(ROW_BITS)
        s2_data = Signal(row_layout)
        s2_read = Signal(row_layout)
        s2_acc = Signal()
        s2_push_prev = Signal()
        s2_push_next = Signal()
        new_row = Signal(row_layout)
        s3_valid = Signal()
        s3_addr = Signal(ROW_BITS)
        s3_row = Signal(row_layout)
        s3_push_prev = Signal()
        s3_push_next = Signal()
        # forward[d]: the row d + 1 ahead wrote this row; written[d]: what it wrote
        s2_forward = [Signal(name=f"s2_forward_{d}") for d in range(3)]
        s2_written = [Signal(row_layout, name=f"s2_written_{d}") for d in range(3)]
        s1_forward = [Signal(name=f"s1_forward_{d}") for d in (1, 2)]
        s1_written = [Signal(row_layout, name=f"s1_written_{d}") for d in (1, 2)]
        old = s2_read.as_value()
        for d in reversed(range(3)):
            old = Mux(s2_forward[d], s2_written[d].as_value(), old)
        old_row = data.View(row_layout, old)
        for j in range(c):
            m.d.comb += new_row[j].eq(Mux(s2_acc, old_row[j], 0) + s2_data[j])
        m.d.sync += [
            s2_valid.eq(s1_valid), s2_addr.eq(s1_addr), s2_data.eq(s1_data),
            s2_acc.eq(s1_acc), s2_push_prev.eq(s1_push_prev), s2_push_next.eq(s1_push_next),
            s2_read.eq(acc_rd.data),
            s3_valid.eq(s2_valid), s3_addr.eq(s2_addr), s3_row.eq(new_row),
            s3_push_prev.eq(s2_push_prev), s3_push_next.eq(s2_push_next),
            # one ahead: in stage 2 while this row is in stage 1
            s2_forward[0].eq(s2_valid & (s2_addr == s1_addr)), s2_written[0].eq(new_row),
            # two and three ahead: in stages 2 and 3 while this row is read
            s1_forward[0].eq(s2_valid & (s2_addr == target)), s1_written[0].eq(new_row),
            s1_forward[1].eq(s3_valid & (s3_addr == target)), s1_written[1].eq(s3_row),
            s2_forward[1].eq(s1_forward[0]), s2_written[1].eq(s1_written[0]),
            s2_forward[2].eq(s1_forward[1]), s2_written[2].eq(s1_written[1]),
        ]
        m.d.comb += [acc_wr.addr.eq(s3_addr), acc_wr.en.eq(s3_valid), acc_wr.data.eq(s3_row),
                     self.c2l.push.eq(s3_push_prev), self.c2s.push.eq(s3_push_next),
                     self.busy.eq(s1_valid | s2_valid | s3_valid)]
        return m


class ComputeUnit(wiring.Component):
    """Runs COMPUTEs on the tile engine.

    ``insn``: COMPUTEs (the head of the compute queue). ``read_a``, ``read_b``: the scratchpads'
    read ports; ``acc_read``, ``acc_write``: the accumulator's. ``l2c``/``s2c``: tokens it waits
    for (operands in, an accumulator buffer free); ``c2l``/``c2s``: tokens it gives (operands
    free, results in). ``beat``: the array took an operand beat this cycle; ``load_wait`` /
    ``store_wait``: a COMPUTE waited for an l2c (else s2c) token this cycle. ``idle``: nothing
    in flight.
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        self.timing = ComputeTiming(config)
        mems = engine_memories(config)
        self._mems = mems
        super().__init__({
            "insn": In(stream.Signature(insn_layout)),
            "read_a": In(mems["a"].read_signature()),
            "read_b": In(mems["b"].read_signature()),
            "acc_read": In(mems["acc"].read_signature()),
            "acc_write": In(mems["acc"].write_signature()),
            "l2c": Out(consumer_signature),
            "s2c": Out(consumer_signature),
            "c2l": Out(producer_signature),
            "c2s": Out(producer_signature),
            "beat": Out(1),
            "load_wait": Out(1),
            "store_wait": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, t = self.config, self.timing
        r = cfg.rows
        os_ = cfg.dataflow == "os"
        tile_timing = TileTiming(cfg)
        m.submodules.tile = tile = TileEngine(cfg)
        m.submodules.writeback = wb = Writeback(cfg)
        m.submodules.wb_q = wb_q = SyncFIFOBuffered(width=wb_layout.size,
                                                     depth=t.writeback_depth)
        wiring.connect(m, wiring.flipped(self.acc_read), wb.acc_read)
        wiring.connect(m, wiring.flipped(self.acc_write), wb.acc_write)
        wiring.connect(m, wiring.flipped(self.c2l), wb.c2l)
        wiring.connect(m, wiring.flipped(self.c2s), wb.c2s)
        wiring.connect(m, tile.c, wb.c)
        m.d.comb += [wb.desc.valid.eq(wb_q.r_rdy), wb.desc.payload.eq(wb_q.r_data),
                     wb_q.r_en.eq(wb.desc.ready)]

        if os_:
            sources = [RowSource({"a": self._mems["a"], "b": self._mems["b"]},
                                 depth=t.source_depth)]
            m.submodules.source = src = sources[0]
            wiring.connect(m, wiring.flipped(self.read_a), src.read_a)
            wiring.connect(m, wiring.flipped(self.read_b), src.read_b)
            m.d.comb += [tile.a.valid.eq(src.o.valid), tile.b.valid.eq(src.o.valid),
                         tile.a.payload.data.eq(src.o.payload.a),
                         tile.a.payload.last.eq(src.o.payload.last),
                         tile.b.payload.eq(src.o.payload.b),
                         src.o.ready.eq(tile.a.ready)]
            # A tile's last beat no sooner than min_tile_cycles after the previous tile's (its
            # drain), as the tile engine would hold it. (Whether it may go is a register: the
            # count's compare is made a cycle ahead.)
            min_tile = tile_timing.min_tile_cycles
            since_final = Signal(range(r + 1), init=r)
            final_ok = Signal(init=1)
            with m.If(src.presented_final):
                m.d.sync += [since_final.eq(1), final_ok.eq(min_tile <= 1)]
            with m.Elif(since_final < min_tile):
                m.d.sync += [since_final.eq(since_final + 1),
                             final_ok.eq(since_final + 1 >= min_tile)]
            m.d.comb += src.hold_final.eq(~final_ok)
        else:
            src_a = RowSource({"a": self._mems["a"]}, depth=t.source_depth)
            src_b = RowSource({"b": self._mems["b"]}, depth=t.source_depth)
            sources = [src_a, src_b]
            m.submodules.source_a, m.submodules.source_b = src_a, src_b
            wiring.connect(m, wiring.flipped(self.read_a), src_a.read_a)
            wiring.connect(m, wiring.flipped(self.read_b), src_b.read_b)
            m.d.comb += [tile.a.valid.eq(src_a.o.valid), tile.a.payload.data.eq(src_a.o.payload.a),
                         tile.a.payload.last.eq(src_a.o.payload.last),
                         src_a.o.ready.eq(tile.a.ready),
                         tile.b.valid.eq(src_b.o.valid), tile.b.payload.eq(src_b.o.payload.b),
                         src_b.o.ready.eq(tile.b.ready)]
            # A tile's first row of A once its weights are all in; the next weights once that
            # row's swap has passed every PE, as the tile engine would hold them.
            # (Both decisions start from registers: the flags are kept beside the counts.)
            pending = Signal(2)   # weight sets presented whose tile has not started
            some_pending = Signal()
            pending_next = pending + src_b.presented_final - src_a.presented_first
            m.d.sync += [pending.eq(pending_next), some_pending.eq(pending_next != 0)]
            # (at least one bit: a zero-width signal would be a [-1:0] wire in the Verilog)
            swap = Signal(range(max(2, tile_timing.weight_swap_cycles)))
            swapping = Signal()
            with m.If(src_a.presented_first):
                m.d.sync += [swap.eq(tile_timing.weight_swap_cycles - 1),
                             swapping.eq(tile_timing.weight_swap_cycles > 1)]
            with m.Elif(swap != 0):
                m.d.sync += [swap.eq(swap - 1), swapping.eq(swap != 1)]
            m.d.comb += [src_a.hold_first.eq(~some_pending),
                         src_b.hold_first.eq(some_pending | swapping)]

        # Front end: a COMPUTE goes ahead once its tokens are there and there is room.
        head = self.insn.payload
        cp = head.args.compute
        need_load = head.deps.pop_prev & ~self.l2c.available
        need_store = head.deps.pop_next & ~self.s2c.available
        room = wb_q.w_rdy
        for src in sources:
            room &= src.cmd.ready
        go = self.insn.valid & ~need_load & ~need_store & room
        m.d.comb += [self.insn.ready.eq(go), self.l2c.pop.eq(go & head.deps.pop_prev),
                     self.s2c.pop.eq(go & head.deps.pop_next),
                     self.load_wait.eq(self.insn.valid & need_load),
                     self.store_wait.eq(self.insn.valid & ~need_load & need_store)]
        for src in sources:
            m.d.comb += src.cmd.valid.eq(go)
            for name in src.memories:
                m.d.comb += getattr(src.cmd.payload, name).eq(getattr(cp, f"{name}_row"))
            # os: K rows of A and B; ws: M rows of A, and R rows of weights
            m.d.comb += src.cmd.payload.count.eq(r if not os_ and "b" in src.memories
                                                 else cp.extent)
        wb_in = data.View(wb_layout, wb_q.w_data)
        m.d.comb += [wb_in.first_row.eq(cp.acc_row + (r - 1 if os_ else 0)),
                     wb_in.accumulate.eq(cp.accumulate),
                     wb_in.push_prev.eq(head.deps.push_prev),
                     wb_in.push_next.eq(head.deps.push_next),
                     wb_q.w_en.eq(go)]
        m.d.comb += self.beat.eq(tile.a.valid & tile.a.ready)

        idle = (wb_q.level == 0) & ~wb.busy
        for src in sources:
            idle &= src.idle
        m.d.comb += self.idle.eq(idle)
        return m
