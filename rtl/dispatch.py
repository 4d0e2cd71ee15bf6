"""The dispatcher: decodes instructions, refuses illegal ones, and queues each for its unit.

Instructions arrive on a stream in program order. Each is registered with the sums its range
checks compare, checked on its way into a two-entry decode FIFO, and dispatched from there, one
per cycle and in order, into the queue of its unit (:data:`rtl.isa.QUEUE_OF`): a
:class:`~rtl.fifo.HeadRegisterFIFO` whose head the unit reads as a stream. An illegal
instruction stops dispatch where it is, with ``error`` and an :class:`~rtl.isa.ErrorCode`
(the same checks, and codes, as :func:`rtl.isa.check`); instructions after it are dropped.

Adding an instruction: decode its checks in :meth:`Dispatcher._stage1` (those that need no sum)
and :meth:`Dispatcher._overrun` (row ranges, with their sums in :meth:`Dispatcher._sum_terms`),
in the order the assembler's in ``rtl/isa.py`` makes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .fifo import HeadRegisterFIFO, RegisterFIFO
from .isa import (
    ADDR_BITS,
    INSN_BITS,
    POPS,
    PUSHES,
    Q_BLOCK_ROWS,
    QUEUE_OF,
    ROW_BITS,
    X0_MIN,
    ErrorCode,
    Op,
    Queue,
    Spad,
    geometry,
    insn_layout,
)

__all__ = ["DispatchTiming", "Dispatcher"]


@dataclass(frozen=True)
class DispatchTiming:
    """When the dispatcher hands instruction ``i`` (program order) to its unit, in cycles.

    With ``a_i`` the cycle the ``insn`` stream's transfer of instruction ``i`` happens, ``d_i``
    the cycle it is checked into the decode FIFO and ``w_i`` the cycle it is written into its
    queue (``s_j`` is the cycle its unit takes instruction ``j`` of the same queue, ``k`` its
    place in that queue)::

        a_i = d_(i-1)                         (the register frees as its word moves on)
        d_i = max(a_i + decode_latency, w_(i - decode_depth) + 1)
        w_i = max(d_i + check_latency, w_(i-1) + 1, s_(k - queue_depth) + room_latency)
        unit may take it from w_i + queue_latency

    With a stream that never waits and queues with room, ``a_i = i`` and the unit may take
    instruction ``i`` from cycle ``i + latency``.
    """

    config: EngineConfig

    #: the word and the sums its range checks compare, registered (stage 1)
    decode_latency = 1
    #: checked into the decode FIFO (a RegisterFIFO: readable the cycle after its write)
    check_latency = 1
    #: entries of the decode FIFO
    decode_depth = 2
    #: written into the queue to readable at its head (a HeadRegisterFIFO: storage, then the
    #: head register)
    queue_latency = 2
    #: instructions each queue holds
    queue_depth = 64
    #: a queue entry taken by its unit in cycle s can be written again from cycle s + this
    room_latency = 1
    #: throughput: instructions per cycle
    throughput = 1

    @property
    def latency(self) -> int:
        """Cycles from an instruction's transfer on ``insn`` to its unit seeing it, with room."""
        return self.decode_latency + self.check_latency + self.queue_latency


#: an instruction on its way from decode to its queue
_decoded = data.StructLayout({"insn": INSN_BITS, "code": ErrorCode, "illegal": 1,
                              "to": len(Queue)})   # one bit per queue


class Dispatcher(wiring.Component):
    """Decode, check and queue instructions for the load, compute and store units.

    ``insn``: instructions in program order. ``load``, ``compute``, ``store``: the head of each
    unit's queue (``valid`` while it holds one; the unit's ``ready`` takes it). ``halt``: stop
    dispatching (a unit found an error as it ran). ``error``/``error_code``: the first illegal
    instruction, after which nothing is dispatched. ``dispatched``: high for one cycle per
    instruction that left the decode FIFO (the illegal one included). ``idle``: no instruction
    is anywhere in the dispatcher or the queues.
    """

    #: multipliers (DSP blocks): a STORE's extra segments times their stride, for the
    #: accumulator range check
    MULTIPLIERS = 1

    def __init__(self, config: EngineConfig):
        self.config = config
        self.geometry = geometry(config)
        self.timing = DispatchTiming(config)
        super().__init__({
            "insn": In(stream.Signature(insn_layout)),
            "load": Out(stream.Signature(insn_layout)),
            "compute": Out(stream.Signature(insn_layout)),
            "store": Out(stream.Signature(insn_layout)),
            "halt": In(1),
            "error": Out(1),
            "error_code": Out(ErrorCode),
            "dispatched": Out(1),
            "idle": Out(1),
        })

    @property
    def latency(self) -> int:
        return self.timing.latency

    def elaborate(self, platform):
        m = Module()
        t = self.timing
        heads = {Queue.LOAD: self.load, Queue.COMPUTE: self.compute, Queue.STORE: self.store}
        queues = {}
        for queue, head in heads.items():
            # The head waits in a register (behind LUT RAM on an FPGA), so each unit's
            # decision to take it starts from a register and not from a memory read.
            q = HeadRegisterFIFO(width=INSN_BITS, depth=t.queue_depth)
            m.submodules[f"{queue.name.lower()}_queue"] = q
            queues[queue] = q
            m.d.comb += [head.valid.eq(q.r_rdy), head.payload.eq(q.r_data), q.r_en.eq(head.ready)]

        # Stage 1: the word, the sums the range checks compare (the adders), and every check
        # that needs no sum, answered: the early codes (operation, flags, scratchpad), whether
        # a count is zero or too large, and the codes of the checks that come after the range
        # checks (alignment, stride, address space, CONFIG values). All in registers, so the
        # stream's ready comes from registers alone.
        stopped = self.error | self.halt
        p_valid = Signal()
        p_insn = Signal(insn_layout)
        terms = self._sum_terms(self.insn.payload)
        sums = {name: Signal(ROW_BITS + 1, name=f"sum_{name}") for name in terms}
        early, extent, late = Signal(ErrorCode), Signal(), Signal(ErrorCode)
        e_early, e_extent, e_late = Signal(ErrorCode), Signal(), Signal(ErrorCode)
        self._stage1(m, self.insn.payload, e_early, e_extent, e_late)
        m.submodules.decode = dq = RegisterFIFO(width=_decoded.size, depth=t.decode_depth)
        m.d.comb += self.insn.ready.eq(~stopped & (~p_valid | dq.w_rdy))
        with m.If(self.insn.valid & self.insn.ready):
            m.d.sync += [p_valid.eq(1), p_insn.eq(self.insn.payload),
                         early.eq(e_early), extent.eq(e_extent), late.eq(e_late)]
            m.d.sync += [sums[k].eq(a + b) for k, (a, b) in terms.items()]
        with m.Elif(dq.w_rdy):
            m.d.sync += p_valid.eq(0)

        # Stage 2: the range checks' compares, and the first failing check's code, on the way
        # into the decode FIFO.
        overrun = self._overrun(m, p_insn, sums)
        code = Signal(ErrorCode)
        m.d.comb += code.eq(Mux(early != ErrorCode.NONE, early,
                                Mux(extent, ErrorCode.EXTENT,
                                    Mux(overrun, ErrorCode.OVERRUN, late))))
        illegal = code != ErrorCode.NONE
        to = Signal(len(Queue))
        with m.Switch(p_insn.op):
            for op, queue in QUEUE_OF.items():
                with m.Case(op):
                    m.d.comb += to.eq(1 << queue.value)
        d_in = data.View(_decoded, dq.w_data)
        m.d.comb += [d_in.insn.eq(p_insn.as_value()), d_in.code.eq(code),
                     d_in.illegal.eq(illegal),
                     # no queue for an illegal instruction, so a queue's write enable is four
                     # inputs from registers (head valid, stop, its queue's bit, its full flag)
                     d_in.to.eq(Mux(illegal, 0, to)),
                     dq.w_en.eq(p_valid)]

        # Dispatch: the decode FIFO's head into its queue, one per cycle, in program order.
        d = data.View(_decoded, dq.r_data)
        ready = dq.r_rdy & ~stopped
        takes = [ready & d.to[queue.value] & q.w_rdy for queue, q in queues.items()]
        dispatch = ready & d.illegal | Cat(*takes).any()
        m.d.comb += [dq.r_en.eq(dispatch), self.dispatched.eq(dispatch)]
        for take, q in zip(takes, queues.values(), strict=True):
            m.d.comb += [q.w_data.eq(d.insn), q.w_en.eq(take)]
        with m.If(dispatch & d.illegal):
            m.d.sync += [self.error.eq(1), self.error_code.eq(d.code)]

        m.d.comb += self.idle.eq(~Cat(*(q.level != 0 for q in queues.values())).any()
                                 & ~((p_valid | dq.r_rdy) & ~stopped))
        return m

    # -- the checks (in the order rtl.isa.check makes them) ---------------------------------

    def _sum_terms(self, insn) -> dict:
        """The (first row, row count) pairs whose sums the range checks compare, by name."""
        r = self.config.rows
        os_ = self.config.dataflow == "os"
        ld, cp, st = insn.args.load, insn.args.compute, insn.args.store
        return {"load": (ld.row, ld.rows), "a": (cp.a_row, cp.extent),
                "b": (cp.b_row, cp.extent if os_ else r),
                "acc": (cp.acc_row, r if os_ else cp.extent),
                "store": (st.acc_row + st.extra_segs * st.seg_stride, st.rows),
                "q": (st.q_row, Q_BLOCK_ROWS)}

    def _stage1(self, m, insn, early, extent, late):
        """Every check that needs no sum, from the incoming word: ``early`` the code of the
        checks made before the fields' ranges (opcode, dependency flags, scratchpad),
        ``extent`` whether a count is zero or too large, ``late`` the code of the first
        failing check among those made after the range checks (alignment, stride, the first
        row past the 32-bit address space: later rows are the unit's to check as it gets to
        them; CONFIG values)."""
        cfg, g = self.config, self.geometry
        ld, cp, st, cf = insn.args.load, insn.args.compute, insn.args.store, insn.args.config
        lo, hi = -(1 << (cfg.in_bits - 1)), (1 << (cfg.in_bits - 1)) - 1

        def misaligned(*values):
            return Cat(*(v[:2] for v in values)).any()

        with m.Switch(insn.op):
            for op in Op:
                with m.Case(op):
                    allowed = set(POPS[op]) | set(PUSHES[op])
                    flags = [getattr(insn.deps, name) for name, _ in insn.deps.shape()
                             if name not in allowed]
                    if flags:
                        with m.If(Cat(*flags).any()):
                            m.d.comb += early.eq(ErrorCode.DEPS)
                    if op == Op.LOAD:
                        with m.If(~Cat(*flags).any() if flags else 1):
                            with m.If(ld.spad.as_value() == 3):   # no such Spad
                                m.d.comb += early.eq(ErrorCode.SPAD)
                        widths = Mux(ld.spad == Spad.A, g.a_row_bytes,
                                     Mux(ld.spad == Spad.B, g.b_row_bytes, g.q_row_bytes))
                        m.d.comb += extent.eq((ld.rows == 0) | (ld.length == 0)
                                              | (ld.length > widths))
                        # the last byte's address carries out of 32 bits
                        past = (ld.addr + (ld.length - 1))[ADDR_BITS] & (ld.length != 0)
                        with m.If((ld.spad == Spad.Q) & misaligned(ld.addr, ld.stride,
                                                                    ld.length)):
                            m.d.comb += late.eq(ErrorCode.ALIGN)
                        with m.Elif(past):
                            m.d.comb += late.eq(ErrorCode.ADDRESS)
                    elif op == Op.COMPUTE:
                        m.d.comb += extent.eq(cp.extent == 0)
                    elif op == Op.STORE:
                        m.d.comb += extent.eq((st.rows == 0) | (st.cols == 0)
                                              | (st.cols > cfg.cols))
                        last_bytes = Mux(st.requant, st.cols, st.cols << 2)
                        seg_bytes = Mux(st.requant, cfg.cols, cfg.cols << 2)
                        full = st.extra_segs * cfg.cols   # (a constant multiplier)
                        row_bytes = Mux(st.requant, full, full << 2) + last_bytes
                        first_bytes = Mux(st.extra_segs == 0, last_bytes, seg_bytes)
                        several = st.rows > 1
                        past = (st.addr + (first_bytes - 1))[ADDR_BITS] & (first_bytes != 0)
                        with m.If(st.softmax & (~st.requant | (st.rows > cfg.rows))
                                  | st.causal & ~st.softmax):
                            m.d.comb += late.eq(ErrorCode.MODE)
                        with m.Elif(~st.requant & (misaligned(st.addr)
                                                   | several & misaligned(st.stride))):
                            m.d.comb += late.eq(ErrorCode.ALIGN)
                        with m.Elif(several & (st.stride < row_bytes)):
                            m.d.comb += late.eq(ErrorCode.STRIDE)
                        with m.Elif(past):
                            m.d.comb += late.eq(ErrorCode.ADDRESS)
                    elif op == Op.CONFIG:
                        values = (cf.zero_point, cf.qmin, cf.qmax)
                        with m.If(cf.softmax):
                            with m.If((cf.x0 < X0_MIN) | (cf.x0 > -1)):
                                m.d.comb += late.eq(ErrorCode.RANGE)
                        with m.Elif(Cat(*((v < lo) | (v > hi) for v in values)).any()
                                    | (cf.qmin > cf.qmax)):
                            m.d.comb += late.eq(ErrorCode.RANGE)
            with m.Default():
                m.d.comb += early.eq(ErrorCode.OPCODE)

    def _overrun(self, m, insn, sums):
        """Whether the instruction's rows run past a memory's end (stage 2: the compares of the
        sums stage 1 registered)."""
        g = self.geometry
        ld, st = insn.args.load, insn.args.store
        overrun = Signal()
        with m.Switch(insn.op):
            with m.Case(Op.LOAD):
                depth = Mux(ld.spad == Spad.A, sums["load"] > g.a_rows,
                            Mux(ld.spad == Spad.B, sums["load"] > g.b_rows,
                                sums["load"] > g.q_rows))
                m.d.comb += overrun.eq(depth)
            with m.Case(Op.COMPUTE):
                m.d.comb += overrun.eq((sums["a"] > g.a_rows) | (sums["b"] > g.b_rows)
                                       | (sums["acc"] > g.acc_rows))
            with m.Case(Op.STORE):
                m.d.comb += overrun.eq((sums["store"] > g.acc_rows)
                                       | (st.requant & (sums["q"] > g.q_rows)))
        return overrun
