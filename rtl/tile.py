"""The tile engine: skew, the systolic array and deskew behind ``lib.stream`` ports."""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import EnableInserter, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .array import SystolicArray, array_latency
from .config import EngineConfig
from .skew import Skew

__all__ = ["TileEngine", "TileTiming", "a_layout", "b_layout", "c_layout"]


def a_layout(config: EngineConfig) -> data.StructLayout:
    """One beat of A: a vector of ``rows`` operands and the flag that ends the tile."""
    return data.StructLayout({"data": data.ArrayLayout(signed(config.in_bits), config.rows),
                              "last": 1})


def b_layout(config: EngineConfig) -> data.ArrayLayout:
    """One beat of B: a vector of ``cols`` operands."""
    return data.ArrayLayout(signed(config.in_bits), config.cols)


def c_layout(config: EngineConfig) -> data.StructLayout:
    """One beat of C: a row of ``cols`` accumulators and the flag that ends the tile."""
    return data.StructLayout({"data": data.ArrayLayout(signed(config.acc_bits), config.cols),
                              "last": 1})


@dataclass(frozen=True)
class TileTiming:
    """The tile engine's timing, computed from the configuration alone.

    The mapper and the tests read these instead of repeating numbers; simulation checks them.
    """

    config: EngineConfig

    @property
    def latency(self) -> int:
        """Cycles from accepting a beat of ``a`` to its first result beat being valid on ``c``.

        For ``ws`` that is from row m of A to row m of C: the input register, the array (R+C-2
        PE hops, the last PE's product and sum registers: :func:`~rtl.array.array_latency`)
        and the deskew, ``rows + cols + PE.latency - 1``. For ``os`` it is from the tile's last
        beat to the tile's first row (row R-1), one more for the drain chain's link register.
        """
        cfg = self.config
        return self.INPUT_REGISTER + array_latency(cfg) + (cfg.dataflow == "os")

    #: the skew's first register: every operand is registered as it enters
    INPUT_REGISTER = 1

    @property
    def min_tile_cycles(self) -> int:
        """Fewest cycles one tile occupies the array (``os``: its drain; ``ws``: one row)."""
        return self.config.rows if self.config.dataflow == "os" else 1

    @property
    def weight_swap_cycles(self) -> int:
        """``ws``: cycles after a tile's first row before the next weights may start to load."""
        return self.config.rows + self.config.cols - 1


class TileEngine(wiring.Component):
    """Runs tiles of an int GEMM on the array; operands and results are streams.

    With R = ``rows`` and C = ``cols``:

    **Output-stationary** (``dataflow="os"``) computes ``C[R x C] = A[R x K] @ B[K x C]`` for
    any ``K >= 1``. Beat ``k`` of ``a`` carries column ``k`` of A (``A[:, k]``, one element per
    array row) and beat ``k`` of ``b`` carries row ``k`` of B; the two streams are consumed in
    lockstep and ``a.last`` marks ``k = K-1``. The tile's R rows of C leave on ``c`` bottom row
    first (row R-1, R-2, ..., 0; ``last`` on row 0). Tiles follow each other with no bubble
    while K >= R; a shorter tile occupies R cycles.

    **Weight-stationary** (``dataflow="ws"``) computes ``C[M x C] = A[M x R] @ W[R x C]`` for
    any ``M >= 1``. First R beats of ``b`` load the weights, row 0 of W first. Then beat ``m``
    of ``a`` carries row ``m`` of A (``a.last`` on the tile's final row) and row ``m`` of the
    result leaves on ``c`` in order (``last`` on the final row). The next tile's weights load
    while the current tile computes.

    Zero-pad smaller tiles. Sums wrap at ``acc_bits``. If ``c`` is not ready the whole pipeline
    holds still; a missing input beat enters the array as a bubble of zeros.
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        super().__init__({
            "a": In(stream.Signature(a_layout(config))),
            "b": In(stream.Signature(b_layout(config))),
            "c": Out(stream.Signature(c_layout(config))),
        })

    @property
    def timing(self) -> TileTiming:
        """The engine's cycle figures (also available without building it: ``TileTiming``)."""
        return TileTiming(self.config)

    @property
    def latency(self) -> int:
        """See :attr:`TileTiming.latency`."""
        return self.timing.latency

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        r, c = cfg.rows, cfg.cols
        os_ = cfg.dataflow == "os"

        # The pipeline advances unless a result is waiting for a consumer.
        en = Signal()
        m.d.comb += en.eq(~self.c.valid | self.c.ready)
        core = Module()  # everything that holds still when en is low
        m.submodules.core = EnableInserter(en)(core)

        m.submodules.array = array = EnableInserter(en)(SystolicArray(cfg))
        m.d.comb += array.ce.eq(en)
        lane_a = data.StructLayout({"value": signed(cfg.in_bits), "flag": 1})
        # Row i waits i+1 cycles (the first register is the input register), column j likewise.
        first = self.timing.INPUT_REGISTER
        m.submodules.skew_a = skew_a = EnableInserter(en)(
            Skew(lane_a, [i + first for i in range(r)]))
        m.submodules.deskew = deskew = EnableInserter(en)(
            Skew(signed(cfg.acc_bits), [c - 1 - j for j in range(c)]))
        for i in range(r):
            m.d.comb += array.a[i].eq(skew_a.o[i].value)
            m.d.comb += (array.a_last if os_ else array.a_swap)[i].eq(skew_a.o[i].flag)
        for j in range(c):
            m.d.comb += deskew.i[j].eq(array.c[j] if os_ else array.psum[j])
            m.d.comb += self.c.payload.data[j].eq(deskew.o[j])

        # Result beats: a delay line carries each accepted beat's flags to the output.
        out_valid = Signal()
        out_last = Signal()
        m.d.comb += [self.c.valid.eq(out_valid), self.c.payload.last.eq(out_last)]
        fire_a = Signal()
        flag = Signal()  # the per-beat flag injected into the array (os: last, ws: swap)

        if os_:
            m.submodules.skew_b = skew_b = EnableInserter(en)(
                Skew(signed(cfg.in_bits), [j + first for j in range(c)]))
            for j in range(c):
                m.d.comb += array.b[j].eq(skew_b.o[j])
            # A tile's drain takes R cycles, so its last beat must follow the previous one by R.
            since_last = Signal(range(r + 1), init=r)
            can_end = since_last >= self.timing.min_tile_cycles
            allowed = ~self.a.payload.last | can_end
            m.d.comb += fire_a.eq(en & self.a.valid & self.b.valid & allowed)
            m.d.comb += [self.a.ready.eq(fire_a), self.b.ready.eq(fire_a)]
            m.d.comb += flag.eq(self.a.payload.last)
            with m.If(fire_a):
                for j in range(c):
                    m.d.comb += skew_b.i[j].eq(self.b.payload[j])
            with core.If(fire_a & self.a.payload.last):
                core.d.sync += since_last.eq(1)
            with core.Elif(~can_end):
                core.d.sync += since_last.eq(since_last + 1)
            # The tile's first row reaches the output `latency` cycles after its last beat.
            pending = Signal(self.latency - 1)
            core.d.sync += pending.eq((pending << 1) | (fire_a & self.a.payload.last))
            remaining = Signal(range(r + 1))
            with core.If(pending[-1]):
                core.d.sync += remaining.eq(r)
            with core.Elif(remaining != 0):
                core.d.sync += remaining.eq(remaining - 1)
            m.d.comb += [out_valid.eq(remaining != 0), out_last.eq(remaining == 1)]
        else:
            loaded = Signal(range(r + 1))
            in_tile = Signal()
            swap_busy = Signal(range(max(r + c - 1, 2)))
            fire_b = Signal()
            full = loaded == r
            m.d.comb += fire_b.eq(en & self.b.valid & ~full & (swap_busy == 0))
            m.d.comb += self.b.ready.eq(fire_b)
            m.d.comb += [array.w_shift.eq(fire_b)]
            for j in range(c):
                m.d.comb += array.w[j].eq(self.b.payload[j])
            starts = ~in_tile
            m.d.comb += fire_a.eq(en & self.a.valid & (in_tile | full))
            m.d.comb += self.a.ready.eq(fire_a)
            m.d.comb += flag.eq(starts)
            with core.If(fire_a):
                core.d.sync += in_tile.eq(~self.a.payload.last)
            # The swap wave reaches PE(R-1, C-1) R+C-1 cycles after the first row; the shadow
            # registers must not shift before it has read them.
            with core.If(fire_a & starts):
                core.d.sync += [loaded.eq(0), swap_busy.eq(self.timing.weight_swap_cycles - 1)]
            with core.Else():
                with core.If(swap_busy != 0):
                    core.d.sync += swap_busy.eq(swap_busy - 1)
                with core.If(fire_b):
                    core.d.sync += loaded.eq(loaded + 1)
            # Row m of C leaves `latency` cycles after row m of A came in.
            pend_valid = Signal(self.latency)
            pend_last = Signal(self.latency)
            core.d.sync += [
                pend_valid.eq((pend_valid << 1) | fire_a),
                pend_last.eq((pend_last << 1) | (fire_a & self.a.payload.last)),
            ]
            m.d.comb += [out_valid.eq(pend_valid[-1]), out_last.eq(pend_last[-1])]

        with m.If(fire_a):
            for i in range(r):
                m.d.comb += [skew_a.i[i].value.eq(self.a.payload.data[i]),
                             skew_a.i[i].flag.eq(flag)]
        return m
