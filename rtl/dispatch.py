"""The dispatcher: decodes instructions, refuses illegal ones, and queues each for its unit.

Instructions arrive on a stream in program order. Each is registered with the sums its range
checks compare, checked on its way into a two-entry decode FIFO, and dispatched from there, one
per cycle and in order, into the queue of its unit (:data:`rtl.isa.QUEUE_OF`): a
:class:`~rtl.fifo.HeadRegisterFIFO` whose head the unit reads as a stream. An illegal
instruction stops dispatch where it is, with ``error`` and an :class:`~rtl.isa.ErrorCode`
(the same checks, and codes, as :func:`rtl.isa.check`); instructions after it are dropped.

Adding an instruction: decode its checks in :meth:`Dispatcher._check` (and any sum they compare
in :meth:`Dispatcher._sum_terms`), after the assembler's in ``rtl/isa.py``.
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

        # Stage 1: the word, and the sums its range checks compare (the adders), in registers
        # (so the stream's ready comes from registers alone).
        stopped = self.error | self.halt
        p_valid = Signal()
        p_insn = Signal(insn_layout)
        terms = self._sum_terms(self.insn.payload)
        sums = {name: Signal(ADDR_BITS + 1 if name.endswith("_end") else ROW_BITS + 1,
                             name=f"sum_{name}") for name in terms}
        m.submodules.decode = dq = RegisterFIFO(width=_decoded.size, depth=t.decode_depth)
        m.d.comb += self.insn.ready.eq(~stopped & (~p_valid | dq.w_rdy))
        with m.If(self.insn.valid & self.insn.ready):
            m.d.sync += [p_valid.eq(1), p_insn.eq(self.insn.payload)]
            m.d.sync += [sums[k].eq(a + b) for k, (a, b) in terms.items()]
        with m.Elif(dq.w_rdy):
            m.d.sync += p_valid.eq(0)

        # Stage 2: the compares, on the way into the decode FIFO.
        code = Signal(ErrorCode)
        self._check(m, p_insn, code, sums)
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

    # -- the checks -----------------------------------------------------------------------------

    def _sum_terms(self, insn) -> dict:
        """The pairs whose sums the range checks compare, by name: (first row, row count) of
        each memory an instruction touches, and (address, bytes) of a transfer's first row
        (``_end``; its later rows are checked by the unit as it gets to them)."""
        r = self.config.rows
        os_ = self.config.dataflow == "os"
        ld, cp, st = insn.args.load, insn.args.compute, insn.args.store
        return {"load": (ld.row, ld.rows), "a": (cp.a_row, cp.extent),
                "b": (cp.b_row, cp.extent if os_ else r),
                "acc": (cp.acc_row, r if os_ else cp.extent),
                "store": (st.acc_row, st.rows), "q": (st.q_row, Q_BLOCK_ROWS),
                "load_end": (ld.addr, ld.length),
                "store_end": (st.addr, Mux(st.requant, st.cols, st.cols << 2))}

    def _check(self, m, insn, code, sums):
        """Decide whether ``insn`` can run; ``code`` says why not (:class:`ErrorCode`, as
        :func:`rtl.isa.check` decides). ``sums`` holds the sums of :meth:`_sum_terms`."""
        deps = insn.deps
        with m.Switch(insn.op):
            for op in Op:
                with m.Case(op):
                    allowed = set(POPS[op]) | set(PUSHES[op])
                    flags = [getattr(deps, name) for name, _ in deps.shape()
                             if name not in allowed]
                    if not flags:
                        self._check_fields(m, op, insn, code, sums)
                        continue
                    with m.If(Cat(*flags).any()):
                        m.d.comb += code.eq(ErrorCode.DEPS)
                    with m.Else():
                        self._check_fields(m, op, insn, code, sums)
            with m.Default():
                m.d.comb += code.eq(ErrorCode.OPCODE)

    def _check_fields(self, m, op, insn, code, sums):
        """The checks of one operation's fields (its dependency flags are fine)."""
        cfg, g = self.config, self.geometry
        ld, cp, st, cf = insn.args.load, insn.args.compute, insn.args.store, insn.args.config
        lo, hi = -(1 << (cfg.in_bits - 1)), (1 << (cfg.in_bits - 1)) - 1

        def misaligned(*values):
            return Cat(*(v[:2] for v in values)).any()

        if op == Op.LOAD:
            with m.Switch(ld.spad):
                for spad, depth, width in ((Spad.A, g.a_rows, g.a_row_bytes),
                                           (Spad.B, g.b_rows, g.b_row_bytes),
                                           (Spad.Q, g.q_rows, g.q_row_bytes)):
                    with m.Case(spad):
                        with m.If((ld.rows == 0) | (ld.length == 0) | (ld.length > width)):
                            m.d.comb += code.eq(ErrorCode.EXTENT)
                        with m.Elif(sums["load"] > depth):
                            m.d.comb += code.eq(ErrorCode.OVERRUN)
                        if spad == Spad.Q:
                            with m.Elif(misaligned(ld.addr, ld.stride, ld.length)):
                                m.d.comb += code.eq(ErrorCode.ALIGN)
                        with m.Elif(sums["load_end"] > 1 << ADDR_BITS):
                            m.d.comb += code.eq(ErrorCode.ADDRESS)
                with m.Default():
                    m.d.comb += code.eq(ErrorCode.SPAD)
        elif op == Op.COMPUTE:
            with m.If(cp.extent == 0):
                m.d.comb += code.eq(ErrorCode.EXTENT)
            with m.Elif((sums["a"] > g.a_rows) | (sums["b"] > g.b_rows)
                        | (sums["acc"] > g.acc_rows)):
                m.d.comb += code.eq(ErrorCode.OVERRUN)
        elif op == Op.STORE:
            row_bytes = Mux(st.requant, st.cols, st.cols << 2)
            several = st.rows > 1
            with m.If((st.rows == 0) | (st.cols == 0) | (st.cols > cfg.cols)):
                m.d.comb += code.eq(ErrorCode.EXTENT)
            with m.Elif((sums["store"] > g.acc_rows)
                        | (st.requant & (sums["q"] > g.q_rows))):
                m.d.comb += code.eq(ErrorCode.OVERRUN)
            with m.Elif(~st.requant & (misaligned(st.addr) | several & misaligned(st.stride))):
                m.d.comb += code.eq(ErrorCode.ALIGN)
            with m.Elif(several & (st.stride < row_bytes)):
                m.d.comb += code.eq(ErrorCode.STRIDE)
            with m.Elif(sums["store_end"] > 1 << ADDR_BITS):
                m.d.comb += code.eq(ErrorCode.ADDRESS)
        elif op == Op.CONFIG:
            values = (cf.zero_point, cf.qmin, cf.qmax)
            out_of_range = Cat(*((v < lo) | (v > hi) for v in values)).any()
            with m.If(out_of_range | (cf.qmin > cf.qmax)):
                m.d.comb += code.eq(ErrorCode.RANGE)
