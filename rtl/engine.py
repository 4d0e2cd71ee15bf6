"""The programmable engine: instruction queues, scratchpads, accumulator, tile engine, requantizer.

Instructions (``rtl/isa.py``) arrive on a stream and are dispatched to three queues that run
decoupled and synchronize only through dependency tokens:

- the **load unit** turns a LOAD into memory read requests (one beat of up to W bytes per cycle,
  any alignment), keeps a tag per outstanding beat and assembles returning beats into scratchpad
  rows;
- the **compute unit** waits for its tokens, streams scratchpad rows into the tile engine and
  writes (or adds) the results into the accumulator memory;
- the **store unit** reads accumulator rows, requantizes them (or keeps them int32) and writes
  them to memory.

Loads and stores share the memory port through a round-robin arbiter. An instruction the engine
cannot run (unknown opcode, scratchpad overrun, zero or oversized extent) sets ``error`` with a
code and stops the dispatcher, so a bad program never hangs the engine.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .config import EngineConfig, refuse
from .fifo import HeadRegisterFIFO, RegisterFIFO
from .isa import INSN_BITS, Op, Spad, geometry, insn_layout
from .memory import BlockMemory, mem_signature
from .requant import Requantizer
from .tile import TileEngine

__all__ = ["Engine", "EngineTiming", "ErrorCode", "counter_layout"]

#: activity counters, each 32 bits, readable after a run
counter_layout = data.StructLayout({
    "busy": 32,        # cycles the engine had work (not idle)
    "compute": 32,     # cycles the array accepted an operand beat
    "load_wait": 32,   # cycles the compute unit waited for a load token
    "store_wait": 32,  # cycles the compute unit waited for a free accumulator (store token)
    "mem_reads": 32,   # read beats accepted by memory
    "mem_writes": 32,  # write beats accepted by memory
    "insns": 32,       # instructions dispatched
})


class ErrorCode(enum.Enum, shape=4):
    NONE = 0
    OPCODE = 1       # not one of the four operations
    SPAD = 2         # LOAD into a scratchpad that does not exist
    OVERRUN = 3      # rows beyond a scratchpad or the accumulator
    EXTENT = 4       # zero rows, zero extent, a row longer than the scratchpad's, cols > array


QUEUE_DEPTH = 64
#: rows a store may have between the accumulator read and the beat splitter (more than the
#: requantizer holds, so it never waits)
STORE_ROW_FIFO_DEPTH = len(Requantizer.STAGES) + 5


class EngineTiming:
    """Fixed latencies of the engine's control path, in cycles, for the mapper's cycle model.

    Simulation checks each against the RTL (``tests/test_engine_sim.py``): a change to the
    control logic that moves a register must change the number here.
    """

    #: an instruction entering the dispatcher to its unit seeing it (decode register, check into
    #: the decode FIFO, the queue's write, the queue's head register)
    dispatch_latency = 4
    #: the compute unit taking an instruction to its first operand beat (source FIFO in and out,
    #: source register, synchronous scratchpad read, its output register, the register behind)
    compute_issue_latency = 6
    #: a LOAD's last beat returning from memory to its row being in the scratchpad (and its
    #: token pushed): registered with its tag, assembled into the row's register, then written
    load_write_latency = 3
    #: the store unit taking an instruction to its first accumulator read (FSM transition)
    store_setup = 1
    #: an accumulator row read for a store to its arrival at the beat splitter, besides the
    #: requantizer (synchronous read, the register behind it, the row FIFO)
    store_read_latency = 3
    #: cycles to read bias, multiplier and shift rows from scratchpad Q before a requantized store
    store_params = 5
    #: instruction queue depth per unit
    queue_depth = QUEUE_DEPTH
    #: the requantizer's pipeline depth
    requant_latency = len(Requantizer.STAGES)
    #: a result row leaving the tile engine to its write into the accumulator (and the tokens
    #: it pushes): read the old row, register it and add, register the sum and write
    writeback_latency = 3


class Engine(wiring.Component):
    """The whole engine for one :class:`~rtl.config.EngineConfig` (int8 operands)."""

    def __init__(self, config: EngineConfig):
        if config.in_bits != 8:
            raise refuse(self, f"the programmable engine moves int8 operands: in_bits must be 8, "
                               f"not {config.in_bits}")
        if config.acc_bits > 32:
            raise refuse(self, f"the programmable engine stores int32 results: acc_bits must be "
                               f"at most 32, not {config.acc_bits}")
        if config.acc_bits < 17:
            raise refuse(self, f"the requantizer needs acc_bits of at least 17, not "
                               f"{config.acc_bits}")
        self.config = config
        self.geometry = geometry(config)
        super().__init__({
            "insn": In(stream.Signature(insn_layout)),
            "mem": Out(mem_signature(config)),
            "idle": Out(1),
            "error": Out(1),
            "error_code": Out(ErrorCode),
            "counters": Out(counter_layout),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, g = self.config, self.geometry
        r, c = cfg.rows, cfg.cols
        acc_shape = signed(cfg.acc_bits)

        # -- memories -----------------------------------------------------------------------
        # (column slices one block RAM deep: see BlockMemory)
        m.submodules.spad_a = spad_a = BlockMemory(
            shape=data.ArrayLayout(signed(8), r), depth=g.a_rows)
        m.submodules.spad_b = spad_b = BlockMemory(
            shape=data.ArrayLayout(signed(8), c), depth=g.b_rows)
        m.submodules.spad_q = spad_q = BlockMemory(
            shape=data.ArrayLayout(signed(32), c), depth=g.q_rows)
        m.submodules.acc = acc = BlockMemory(
            shape=data.ArrayLayout(acc_shape, c), depth=g.acc_rows)

        # -- dependency tokens ---------------------------------------------------------------
        tokens = {name: Signal(8, name=f"tok_{name}") for name in ("l2c", "c2l", "c2s", "s2c")}
        inc = {name: Signal(name=f"inc_{name}") for name in tokens}
        dec = {name: Signal(name=f"dec_{name}") for name in tokens}
        for name, t in tokens.items():
            m.d.sync += t.eq(t + inc[name] - dec[name])

        # -- dispatch ------------------------------------------------------------------------
        queues = {}
        for name in ("load", "compute", "store"):
            # The head waits in a register (behind LUT RAM on an FPGA), so each unit's
            # decision to take it starts from a register and not from a memory read.
            q = HeadRegisterFIFO(width=INSN_BITS, depth=QUEUE_DEPTH)
            m.submodules[f"{name}_queue"] = q
            queues[name] = q
        # Decode, in two registered steps so the stream's ready comes from registers alone:
        # the instruction is taken into a register with the sums its range checks compare
        # (the adders), then checked (the compares) on its way into a two-entry FIFO, which
        # dispatches one instruction per cycle, in program order, to its unit's queue. An
        # illegal instruction stops dispatch where it is; words taken after it are dropped
        # (``counters.insns`` counts the instructions dispatched, the illegal one included).
        p_valid = Signal()
        p_insn = Signal(insn_layout)
        terms = self._sum_terms(self.insn.payload)
        sums = {name: Signal(17, name=f"sum_{name}") for name in terms}
        decoded = data.StructLayout({"insn": INSN_BITS, "code": ErrorCode, "illegal": 1,
                                     "to": 3})   # one bit per unit: load, compute, store
        m.submodules.decode = dq = RegisterFIFO(width=decoded.size, depth=2)
        m.d.comb += self.insn.ready.eq(~self.error & (~p_valid | dq.w_rdy))
        accept = self.insn.valid & self.insn.ready
        with m.If(accept):
            m.d.sync += [p_valid.eq(1), p_insn.eq(self.insn.payload)]
            m.d.sync += [sums[k].eq(a + b) for k, (a, b) in terms.items()]
        with m.Elif(dq.w_rdy):
            m.d.sync += p_valid.eq(0)
        code = Signal(ErrorCode)
        self._check(m, p_insn, code, sums)
        is_load, is_compute = p_insn.op == Op.LOAD, p_insn.op == Op.COMPUTE
        d_in = data.View(decoded, dq.w_data)
        illegal = code != ErrorCode.NONE
        m.d.comb += [d_in.insn.eq(p_insn.as_value()), d_in.code.eq(code),
                     d_in.illegal.eq(illegal),
                     # no unit for an illegal instruction, so a queue's write enable is four
                     # inputs from registers (head valid, error, its unit's bit, its full flag)
                     d_in.to.eq(Mux(illegal, 0, Cat(is_load, is_compute, ~is_load & ~is_compute))),
                     dq.w_en.eq(p_valid)]
        d = data.View(decoded, dq.r_data)
        d_illegal = d.illegal
        ready = dq.r_rdy & ~self.error
        takes = [ready & d.to[i] & q.w_rdy for i, q in enumerate(queues.values())]
        dispatch = ready & d_illegal | Cat(*takes).any()
        m.d.comb += dq.r_en.eq(dispatch)
        for take, q in zip(takes, queues.values(), strict=True):
            m.d.comb += [q.w_data.eq(d.insn), q.w_en.eq(take)]
        with m.If(dispatch & d_illegal):
            m.d.sync += [self.error.eq(1), self.error_code.eq(d.code)]
        with m.If(dispatch):
            m.d.sync += self.counters.insns.eq(self.counters.insns + 1)

        # -- the three units ----------------------------------------------------------------
        load_req, load_idle = self._load_unit(m, queues["load"], spad_a, spad_b, spad_q,
                                              tokens, inc, dec)
        compute_idle = self._compute_unit(m, queues["compute"], spad_a, spad_b, acc, tokens,
                                          inc, dec)
        store_req, store_idle = self._store_unit(m, queues["store"], spad_q, acc, tokens, inc,
                                                 dec)

        # -- memory arbitration: round robin between loads (reads) and stores (writes) ----------
        turn = Signal()
        pick_store = store_req.valid & (~load_req.valid | turn)
        req = self.mem.req
        with m.If(pick_store):
            m.d.comb += [req.valid.eq(1), req.payload.eq(store_req.payload),
                         store_req.ready.eq(req.ready)]
        with m.Else():
            m.d.comb += [req.valid.eq(load_req.valid), req.payload.eq(load_req.payload),
                         load_req.ready.eq(req.ready)]
        with m.If(req.valid & req.ready):
            m.d.sync += turn.eq(~pick_store)
            with m.If(req.payload.write):
                m.d.sync += self.counters.mem_writes.eq(self.counters.mem_writes + 1)
            with m.Else():
                m.d.sync += self.counters.mem_reads.eq(self.counters.mem_reads + 1)

        idle = Signal()
        m.d.comb += idle.eq(load_idle & compute_idle & store_idle
                            & (queues["load"].level == 0) & (queues["compute"].level == 0)
                            & (queues["store"].level == 0)
                            & ~((p_valid | dq.r_rdy) & ~self.error))
        m.d.comb += self.idle.eq(idle)
        with m.If(~idle):
            m.d.sync += self.counters.busy.eq(self.counters.busy + 1)
        return m

    # ------------------------------------------------------------------------------------------

    def _sum_terms(self, insn) -> dict:
        """The (first row, row count) pairs whose sums the range checks compare, by name."""
        r = self.config.rows
        os_ = self.config.dataflow == "os"
        ld, cp, st = insn.args.load, insn.args.compute, insn.args.store
        return {"load": (ld.row, ld.rows), "a": (cp.a_row, cp.extent),
                "b": (cp.b_row, cp.extent if os_ else r),
                "acc": (cp.acc_row, r if os_ else cp.extent),
                "store": (st.acc_row, st.rows), "q": (st.q_row, 3)}

    def _check(self, m, insn, code, sums):
        """Decide whether ``insn`` can run; ``code`` says why not. ``sums`` holds the sums of
        :meth:`_sum_terms` of the same instruction."""
        cfg, g = self.config, self.geometry
        c = cfg.cols

        ld, cp, st = insn.args.load, insn.args.compute, insn.args.store
        with m.Switch(insn.op):
            with m.Case(Op.LOAD):
                with m.Switch(ld.spad):
                    for spad, depth, width in ((Spad.A, g.a_rows, g.a_row_bytes),
                                               (Spad.B, g.b_rows, g.b_row_bytes),
                                               (Spad.Q, g.q_rows, g.q_row_bytes)):
                        with m.Case(spad):
                            with m.If((ld.rows == 0) | (ld.length == 0) | (ld.length > width)):
                                m.d.comb += code.eq(ErrorCode.EXTENT)
                            with m.Elif(sums["load"] > depth):
                                m.d.comb += code.eq(ErrorCode.OVERRUN)
                    with m.Default():
                        m.d.comb += code.eq(ErrorCode.SPAD)
            with m.Case(Op.COMPUTE):
                with m.If(cp.extent == 0):
                    m.d.comb += code.eq(ErrorCode.EXTENT)
                with m.Elif((sums["a"] > g.a_rows) | (sums["b"] > g.b_rows)
                            | (sums["acc"] > g.acc_rows)):
                    m.d.comb += code.eq(ErrorCode.OVERRUN)
            with m.Case(Op.STORE):
                with m.If((st.rows == 0) | (st.cols == 0) | (st.cols > c)):
                    m.d.comb += code.eq(ErrorCode.EXTENT)
                with m.Elif((sums["store"] > g.acc_rows)
                            | (st.requant & (sums["q"] > g.q_rows))):
                    m.d.comb += code.eq(ErrorCode.OVERRUN)
            with m.Case(Op.CONFIG):
                pass
            with m.Default():
                m.d.comb += code.eq(ErrorCode.OPCODE)

    # ------------------------------------------------------------------------------------------

    def _load_unit(self, m, queue, spad_a, spad_b, spad_q, tokens, inc, dec):
        cfg, g = self.config, self.geometry
        w = cfg.mem_bytes_per_cycle
        latency = max(1, cfg.mem_latency)
        head = data.View(insn_layout, queue.r_data)
        req = stream.Signature(self.mem.req.payload.shape()).create(path=("load_req",))

        widest = max(g.a_row_bytes, g.b_row_bytes, g.q_row_bytes)
        self._beats_per_row = -(-widest // w)
        tag_layout = data.StructLayout({
            "spad": Spad, "row": range(max(g.a_rows, g.b_rows, g.q_rows)),
            "beat": range(self._beats_per_row),
            "row_done": 1, "push": 1,
        })
        m.submodules.load_tags = tags = SyncFIFO(width=tag_layout.size, depth=latency + 3)
        # Room for a tag, from the FIFO's level a cycle ago (it rises by at most one a cycle):
        # no compare between the level and the memory arbiter. At most `latency` tags ever
        # wait (read data returns `latency` cycles after its request and is always taken),
        # so neither this nor the FIFO's own ready ever holds a request back.
        tag_room = Signal(init=1)
        m.d.sync += tag_room.eq(tags.level <= latency)

        busy = Signal()
        spad = Signal(Spad)
        row = Signal(16)
        rows_left = Signal(16)
        length = Signal(16)
        remaining = Signal(16)  # bytes of the current row still to request
        beat = Signal(range(self._beats_per_row + 1))
        addr = Signal(32)
        row_addr = Signal(32)
        stride = Signal(32)
        push = Signal()
        # remaining <= w, and length <= w, kept in registers (a compare fewer on the path from
        # memory's ready to the unit's registers)
        last_beat = Signal()
        one_beat_rows = Signal()

        # Take the next LOAD once its token (if it waits for one) is there.
        ready_token = ~head.deps.pop_next | (tokens["c2l"] != 0)
        start = ~busy & queue.r_rdy & ready_token
        m.d.comb += queue.r_en.eq(start)
        with m.If(start):
            ld = head.args.load
            m.d.comb += dec["c2l"].eq(head.deps.pop_next)
            m.d.sync += [busy.eq(1), spad.eq(ld.spad), row.eq(ld.row), rows_left.eq(ld.rows),
                         length.eq(ld.length), remaining.eq(ld.length), beat.eq(0),
                         addr.eq(ld.addr), row_addr.eq(ld.addr), stride.eq(ld.stride),
                         push.eq(head.deps.push_next), last_beat.eq(ld.length <= w),
                         one_beat_rows.eq(ld.length <= w)]

        last_row = rows_left == 1
        m.d.comb += [
            req.valid.eq(busy & tag_room),
            req.payload.write.eq(0),
            req.payload.addr.eq(addr),
            req.payload.length.eq(Mux(last_beat, remaining, w)),
        ]
        tag_in = data.View(tag_layout, tags.w_data)
        m.d.comb += [tag_in.spad.eq(spad), tag_in.row.eq(row), tag_in.beat.eq(beat),
                     tag_in.row_done.eq(last_beat), tag_in.push.eq(push & last_beat & last_row),
                     tags.w_en.eq(req.valid & req.ready)]
        with m.If(req.valid & req.ready):
            with m.If(last_beat):
                m.d.sync += [remaining.eq(length), last_beat.eq(one_beat_rows), beat.eq(0),
                             row.eq(row + 1), rows_left.eq(rows_left - 1),
                             addr.eq(row_addr + stride), row_addr.eq(row_addr + stride)]
                with m.If(last_row):
                    m.d.sync += busy.eq(0)
            with m.Else():
                m.d.sync += [remaining.eq(remaining - w), last_beat.eq(remaining <= 2 * w),
                             beat.eq(beat + 1), addr.eq(addr + w)]

        # Returning beats, in order: registered with their tag as they arrive (the tag comes
        # out of LUT RAM, and what it selects spreads over the whole row), then assembled into
        # rows and written into their scratchpad.
        rdata = self.mem.rdata
        m.d.comb += [tags.r_en.eq(rdata.valid), rdata.ready.eq(1)]
        beat_valid = Signal()
        beat_data = Signal(8 * w)
        tag_bits = Signal(tag_layout.size)   # (a view: a one-beat row's `beat` has no bits)
        tag = data.View(tag_layout, tag_bits)
        m.d.sync += [beat_valid.eq(rdata.valid), beat_data.eq(rdata.payload),
                     tag_bits.eq(tags.r_data)]
        words = self._beats_per_row
        row_buf = Signal(8 * w * words)
        assembled = Signal(8 * w * words)
        for b in range(words):
            part = slice(8 * w * b, 8 * w * (b + 1))
            with m.If(tag.beat == b):
                m.d.comb += assembled[part].eq(beat_data)
            if b < words - 1:
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
        for spad_enum, memory in ((Spad.A, spad_a), (Spad.B, spad_b), (Spad.Q, spad_q)):
            port = memory.write_port()
            en = Signal(name=f"write_{spad_enum.name.lower()}")
            m.d.sync += en.eq(beat_valid & tag.row_done & (tag.spad == spad_enum))
            m.d.comb += [port.addr.eq(w_row), port.data.eq(w_data), port.en.eq(en)]
            writing.append(en)
        m.d.comb += inc["l2c"].eq(w_push)

        idle = ~busy & (tags.level == 0) & ~Cat(beat_valid, *writing, w_push).any()
        return req, idle

    # ------------------------------------------------------------------------------------------

    def _compute_unit(self, m, queue, spad_a, spad_b, acc, tokens, inc, dec):
        cfg = self.config
        r, c = cfg.rows, cfg.cols
        os_ = cfg.dataflow == "os"
        m.submodules.tile = tile = TileEngine(cfg)
        head = data.View(insn_layout, queue.r_data)
        cp = head.args.compute

        src_layout = data.StructLayout({"a_row": 16, "b_row": 16, "extent": 16})
        wb_layout = data.StructLayout({"first_row": 16, "accumulate": 1, "push_prev": 1,
                                       "push_next": 1})
        m.submodules.src_a_q = src_a_q = SyncFIFOBuffered(width=src_layout.size, depth=4)
        m.submodules.wb_q = wb_q = SyncFIFOBuffered(width=wb_layout.size, depth=8)
        if not os_:
            m.submodules.src_b_q = src_b_q = SyncFIFOBuffered(width=src_layout.size, depth=4)

        # Front end: an instruction goes ahead once its tokens are there and there is room.
        need_load = head.deps.pop_prev & (tokens["l2c"] == 0)
        need_store = head.deps.pop_next & (tokens["s2c"] == 0)
        room = src_a_q.w_rdy & wb_q.w_rdy & (src_b_q.w_rdy if not os_ else 1)
        go = queue.r_rdy & ~need_load & ~need_store & room
        m.d.comb += [queue.r_en.eq(go), dec["l2c"].eq(go & head.deps.pop_prev),
                     dec["s2c"].eq(go & head.deps.pop_next)]
        with m.If(queue.r_rdy & need_load):
            m.d.sync += self.counters.load_wait.eq(self.counters.load_wait + 1)
        with m.Elif(queue.r_rdy & need_store):
            m.d.sync += self.counters.store_wait.eq(self.counters.store_wait + 1)
        src = data.View(src_layout, src_a_q.w_data)
        wb = data.View(wb_layout, wb_q.w_data)
        m.d.comb += [src.a_row.eq(cp.a_row), src.b_row.eq(cp.b_row), src.extent.eq(cp.extent),
                     src_a_q.w_en.eq(go),
                     # the tile's first result row goes to (os: bottom row first)
                     wb.first_row.eq(cp.acc_row + (r - 1 if os_ else 0)),
                     wb.accumulate.eq(cp.accumulate),
                     wb.push_prev.eq(head.deps.push_prev), wb.push_next.eq(head.deps.push_next),
                     wb_q.w_en.eq(go)]
        if not os_:
            m.d.comb += [src_b_q.w_data.eq(src_a_q.w_data), src_b_q.w_en.eq(go)]

        a_rd = spad_a.read_port(output_register=True)
        b_rd = spad_b.read_port(output_register=True)

        def source(name, q, ports, out_ready, count):
            """Stream rows ``base .. base+count-1`` of scratchpads, one instruction after
            another, through synchronous read ports with their output registers (the block
            RAM's own on ECP5: a row leaves a block RAM 5.8 ns after the clock) and a register
            behind each that carries the row across the chip to the array, all holding while
            the consumer waits. ``ports`` pairs each read port with the field giving its first
            row; returns the registers."""
            d = data.View(src_layout, q.r_data)
            active = Signal(name=f"{name}_active")
            index = Signal(16, name=f"{name}_index")
            extent = Signal(16, name=f"{name}_extent")
            read = Signal(name=f"{name}_read")     # the read ports hold a row
            read_last = Signal(name=f"{name}_read_last")
            near = Signal(name=f"{name}_near")     # the output registers hold a row
            near_last = Signal(name=f"{name}_near_last")
            valid = Signal(name=f"{name}_valid")   # the registers after those hold a row
            last = Signal(name=f"{name}_last")
            rows = [Signal.like(port.data, name=f"{name}_row_{first}") for port, first in ports]
            advance = ~valid | out_ready
            final = Signal(name=f"{name}_final")   # index + 1 == extent, kept a step ahead
            with m.If(advance):
                m.d.sync += [read.eq(active), read_last.eq(final), near.eq(read),
                             near_last.eq(read_last), valid.eq(near), last.eq(near_last)]
                m.d.sync += [row.eq(port.data) for row, (port, _) in zip(rows, ports, strict=True)]
                with m.If(active):
                    m.d.sync += [index.eq(index + 1), final.eq(index + 2 == extent)]
                    with m.If(final):
                        m.d.sync += active.eq(0)
            take = q.r_rdy & (~active | (advance & final))
            m.d.comb += q.r_en.eq(take)
            with m.If(take):
                m.d.sync += [active.eq(1), index.eq(0), extent.eq(count(d)),
                             final.eq(count(d) == 1)]
            for port, first in ports:
                base = Signal(16, name=f"{name}_base_{first}")
                with m.If(take):
                    m.d.sync += base.eq(getattr(d, first))
                m.d.comb += [port.en.eq(advance), port.addr.eq(base + index)]
            return valid, last, rows, ~active & ~read & ~near & ~valid

        if os_:
            valid, last, (a_row, b_row), sources_idle = source(
                "src", src_a_q, [(a_rd, "a_row"), (b_rd, "b_row")], tile.a.ready,
                lambda d: d.extent)
            m.d.comb += [tile.a.valid.eq(valid), tile.b.valid.eq(valid),
                         tile.a.payload.last.eq(last)]
        else:
            a_valid, a_last, (a_row,), a_idle = source(
                "src_a", src_a_q, [(a_rd, "a_row")], tile.a.ready, lambda d: d.extent)
            b_valid, _, (b_row,), b_idle = source(
                "src_b", src_b_q, [(b_rd, "b_row")], tile.b.ready, lambda d: r)
            m.d.comb += [tile.a.valid.eq(a_valid), tile.a.payload.last.eq(a_last),
                         tile.b.valid.eq(b_valid)]
            sources_idle = a_idle & b_idle
        m.d.comb += [tile.a.payload.data.eq(a_row), tile.b.payload.eq(b_row)]
        with m.If(tile.a.valid & tile.a.ready):
            m.d.sync += self.counters.compute.eq(self.counters.compute + 1)

        # Writeback: results into the accumulator, overwriting or adding (read, then write).
        m.d.comb += tile.c.ready.eq(1)
        acc_wr = acc.write_port()
        acc_rd = acc.read_port()   # not transparent: writes in flight are forwarded
        desc = data.View(wb_layout, wb_q.r_data)
        # The row a result goes to: a tile's first from its descriptor, the next ones from a
        # register counting from it (no adder before the block RAMs' address).
        in_tile = Signal()     # a row of this tile has gone: the next one is `next_row`
        next_row = Signal(16)
        target = Signal(16)
        m.d.comb += [target.eq(Mux(in_tile, next_row, desc.first_row)),
                     acc_rd.addr.eq(target), acc_rd.en.eq(1)]
        s1_valid = Signal()
        s1_addr = Signal(16)
        acc_shape = signed(cfg.acc_bits)
        s1_data = Signal(data.ArrayLayout(acc_shape, c))
        s1_acc = Signal()
        s1_push_prev = Signal()
        s1_push_next = Signal()
        fire = tile.c.valid
        m.d.sync += [s1_valid.eq(fire), s1_addr.eq(target), s1_data.eq(tile.c.payload.data),
                     s1_acc.eq(desc.accumulate),
                     s1_push_prev.eq(fire & tile.c.payload.last & desc.push_prev),
                     s1_push_next.eq(fire & tile.c.payload.last & desc.push_next)]
        m.d.comb += wb_q.r_en.eq(fire & tile.c.payload.last)
        with m.If(fire):
            m.d.sync += [in_tile.eq(~tile.c.payload.last),
                         next_row.eq(target - 1 if os_ else target + 1)]
        # Stage 2 registers the row read from the accumulator as it leaves the block RAM (whose
        # output is slow on an FPGA: nothing may stand between it and a register) and adds to
        # it; stage 3 registers the sum and writes it (the block RAMs lie spread over the chip).
        # The read happened two cycles before stage 2, before the writes of the three rows
        # ahead (the third one writes in the read's own cycle): a row one of them wrote is
        # registered beside the one read and taken instead, the nearest first.
        row_layout = data.ArrayLayout(acc_shape, c)
        s2_valid = Signal()
        s2_addr = Signal(16)
        s2_data = Signal(row_layout)
        s2_read = Signal(row_layout)
        s2_acc = Signal()
        s2_push_prev = Signal()
        s2_push_next = Signal()
        new_row = Signal(row_layout)
        s3_valid = Signal()
        s3_addr = Signal(16)
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
        m.d.comb += [acc_wr.addr.eq(s3_addr), acc_wr.en.eq(s3_valid), acc_wr.data.eq(s3_row)]
        m.d.comb += [inc["c2l"].eq(s3_push_prev), inc["c2s"].eq(s3_push_next)]

        return sources_idle & (src_a_q.level == 0) & (wb_q.level == 0) & ~s1_valid \
            & ~s2_valid & ~s3_valid

    # ------------------------------------------------------------------------------------------

    def _store_unit(self, m, queue, spad_q, acc, tokens, inc, dec):
        cfg = self.config
        c, w = cfg.cols, cfg.mem_bytes_per_cycle
        acc_shape = signed(cfg.acc_bits)
        head = data.View(insn_layout, queue.r_data)
        st = head.args.store
        req = stream.Signature(self.mem.req.payload.shape()).create(path=("store_req",))
        m.submodules.requant = rq = Requantizer(lanes=c, acc_bits=cfg.acc_bits, out_bits=8)

        zero_point = Signal(signed(8))
        qmin = Signal(signed(8), init=-128)
        qmax = Signal(signed(8), init=127)
        relu = Signal()
        m.d.comb += [rq.zero_point.eq(zero_point), rq.qmin.eq(qmin), rq.qmax.eq(qmax),
                     rq.relu.eq(relu)]

        # Instruction registers.
        acc_row = Signal(16)
        rows = Signal(16)
        cols = Signal(range(c + 1))
        stride = Signal(32)
        requant = Signal()
        q_row = Signal(16)
        push = Signal()
        bias = Signal(data.ArrayLayout(signed(32), c))
        mult = Signal(data.ArrayLayout(signed(32), c))
        shift = Signal(data.ArrayLayout(signed(32), c))

        q_rd = spad_q.read_port()
        q_word = Signal.like(q_rd.data)   # registered as it leaves the block RAM
        m.d.sync += q_word.eq(q_rd.data)
        q_step = Signal(range(5))
        rows_out = Signal(16)   # rows whose last beat memory has accepted

        with m.FSM(name="store") as fsm:
            with m.State("IDLE"):
                with m.If(queue.r_rdy):
                    with m.If(head.op == Op.CONFIG):
                        cf = head.args.config
                        m.d.comb += queue.r_en.eq(1)
                        m.d.sync += [zero_point.eq(cf.zero_point), qmin.eq(cf.qmin),
                                     qmax.eq(cf.qmax), relu.eq(cf.relu)]
                    with m.Elif(~head.deps.pop_prev | (tokens["c2s"] != 0)):
                        m.d.comb += [queue.r_en.eq(1), dec["c2s"].eq(head.deps.pop_prev)]
                        m.d.sync += [acc_row.eq(st.acc_row), rows.eq(st.rows), cols.eq(st.cols),
                                     stride.eq(st.stride),
                                     requant.eq(st.requant), q_row.eq(st.q_row),
                                     push.eq(head.deps.push_prev), q_step.eq(0),
                                     rows_out.eq(0)]
                        with m.If(st.requant):
                            m.next = "PARAMS"
                        with m.Else():
                            m.next = "RUN"
            with m.State("PARAMS"):
                # Bias, multiplier and shift rows, one read each (synchronous port, then the
                # register behind it).
                m.d.comb += [q_rd.addr.eq(q_row + q_step), q_rd.en.eq(1)]
                m.d.sync += q_step.eq(q_step + 1)
                with m.Switch(q_step):
                    with m.Case(2):
                        m.d.sync += bias.eq(q_word)
                    with m.Case(3):
                        m.d.sync += mult.eq(q_word)
                    with m.Case(4):
                        m.d.sync += shift.eq(q_word)
                        m.next = "RUN"
            with m.State("RUN"):
                with m.If(rows_out == rows):
                    m.d.comb += inc["s2c"].eq(push)
                    m.next = "IDLE"

        # Accumulator rows as a stream (synchronous read whose output holds while waiting).
        # The read port and a register behind it (block RAM output is slow on an FPGA) move
        # together and hold while the consumer waits.
        acc_rd = acc.read_port()
        issued = Signal(16)
        read = Signal()          # the read port holds a row
        read_last = Signal()
        row_valid = Signal()     # the register behind it holds a row
        row_last = Signal()
        acc_row_data = Signal(data.ArrayLayout(acc_shape, c))
        sink_ready = Signal()
        advance = ~row_valid | sink_ready
        state_run = Signal()
        m.d.comb += [acc_rd.addr.eq(acc_row + issued), acc_rd.en.eq(advance)]
        more = state_run & (issued < rows)
        with m.If(advance):
            m.d.sync += [read.eq(more), read_last.eq(issued + 1 == rows), row_valid.eq(read),
                         row_last.eq(read_last), acc_row_data.eq(acc_rd.data)]
            with m.If(more):
                m.d.sync += issued.eq(issued + 1)

        # Into the requantizer, or straight on as int32.
        m.d.comb += [rq.i.payload.acc.eq(acc_row_data), rq.i.payload.bias.eq(bias),
                     rq.i.payload.multiplier.eq(mult), rq.i.payload.last.eq(row_last)]
        for j in range(c):
            m.d.comb += rq.i.payload.shift[j].eq(shift[j])
        # Rows, requantized or straight on as int32, wait in a FIFO for the beat splitter. A
        # row enters the requantizer (or the FIFO) only with a place in the FIFO kept for it,
        # so neither the requantizer nor the read stream ever waits on the splitter: their
        # clock enables come from a register, not from the memory port's handshake.
        row_bytes_max = 4 * c
        rows_q = SyncFIFO(width=8 * row_bytes_max, depth=STORE_ROW_FIFO_DEPTH)
        m.submodules.store_rows = rows_q
        pending = Signal(range(STORE_ROW_FIFO_DEPTH + 1))   # rows taken, not yet split
        room = pending < STORE_ROW_FIFO_DEPTH
        take = row_valid & room
        packed_ready = Signal()
        pop = rows_q.r_rdy & packed_ready
        popped = Signal()   # (a row popped frees its place a cycle later: off the port's path)
        m.d.sync += [popped.eq(pop), pending.eq(pending + take - popped)]
        m.d.comb += [sink_ready.eq(room), rq.o.ready.eq(1)]
        lanes32 = [Signal(signed(32), name=f"raw_{j}") for j in range(c)]
        for j in range(c):
            m.d.comb += lanes32[j].eq(acc_row_data[j])  # sign-extends to int32
        with m.If(requant):
            m.d.comb += [rq.i.valid.eq(take), rows_q.w_en.eq(rq.o.valid),
                         rows_q.w_data.eq(rq.o.payload.data.as_value())]
        with m.Else():
            m.d.comb += [rows_q.w_en.eq(take), rows_q.w_data.eq(Cat(*lanes32))]
        packed = rows_q.r_data   # the row, as bytes in memory order
        m.d.comb += rows_q.r_en.eq(pop)

        # Split each row into memory beats of up to W bytes.
        row_size = Signal(range(row_bytes_max + 1))
        m.d.comb += row_size.eq(Mux(requant, cols, cols * 4))
        buf = Signal(8 * row_bytes_max)
        have = Signal()
        offset = Signal(range(row_bytes_max + w + 1))
        row_addr = Signal(32)
        left = Signal(range(row_bytes_max + 1))   # bytes of the row still to send
        last_beat = Signal()                       # left <= w, kept a beat ahead
        # A new row may enter as the current one's last beat leaves: one row per beat.
        m.d.comb += packed_ready.eq(~have | (req.ready & last_beat))
        m.d.comb += [
            req.valid.eq(have),
            req.payload.write.eq(1),
            req.payload.addr.eq(row_addr + offset),
            req.payload.length.eq(Mux(last_beat, left, w)),
            req.payload.data.eq(buf.bit_select(offset * 8, 8 * w)
                                if row_bytes_max > w else buf),
        ]
        with m.If(req.valid & req.ready):
            with m.If(last_beat):
                m.d.sync += [have.eq(0), row_addr.eq(row_addr + stride),
                             rows_out.eq(rows_out + 1)]
            with m.Else():
                m.d.sync += [offset.eq(offset + w), left.eq(left - w),
                             last_beat.eq(left - w <= w)]
        with m.If(pop):
            m.d.sync += [buf.eq(packed), have.eq(1), offset.eq(0), left.eq(row_size),
                         last_beat.eq(row_size <= w)]

        # Per-instruction setup of the row streamer.
        with m.If(queue.r_en & (head.op == Op.STORE)):
            m.d.sync += [issued.eq(0), row_addr.eq(st.addr)]
        m.d.comb += state_run.eq(fsm.ongoing("RUN"))

        idle = fsm.ongoing("IDLE") & (queue.level == 0)
        return req, idle
