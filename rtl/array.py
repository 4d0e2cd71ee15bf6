"""A rows x cols grid of PEs with registered links (Gemmini's Mesh)."""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .pe import PE

__all__ = ["SystolicArray", "array_latency"]


def array_latency(config: EngineConfig) -> int:
    """Cycles for an operand entering PE(0,0) to reach PE(rows-1, cols-1)'s output: it hops
    ``rows + cols - 2`` PEs, then the last PE's product and sum registers."""
    return (config.rows + config.cols - 2) * PE.hop + PE.latency


class SystolicArray(wiring.Component):
    """The grid of PEs, no skew: callers present row ``i``'s operand ``i`` cycles late.

    Ports, by dataflow (see :class:`~rtl.pe.PE` for what each PE does):

    - ``os``: ``a[i]``/``a_last[i]`` enter row ``i`` from the left, ``b[j]`` enters column ``j``
      from the top; ``c[j]`` leaves the bottom of column ``j`` (the drain chain).
    - ``ws``: ``a[i]``/``a_swap[i]`` enter row ``i``; ``w[j]`` enters the weight chain at the
      bottom of column ``j`` while ``w_shift``; ``psum[j]`` leaves the bottom of column ``j``.
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        op, acc = signed(config.in_bits), signed(config.acc_bits)
        r, c = config.rows, config.cols
        # ce: the enable the array runs under, for PEs whose product register is a DSP block's
        members_common = {"ce": In(1, init=1)}
        if config.dataflow == "os":
            members = {"a": In(op).array(r), "a_last": In(1).array(r), "b": In(op).array(c),
                       "c": Out(acc).array(c)}
        else:
            members = {"a": In(op).array(r), "a_swap": In(1).array(r), "w": In(op).array(c),
                       "w_shift": In(1), "psum": Out(acc).array(c)}
        super().__init__({**members_common, **members})

    @property
    def latency(self) -> int:
        """See :func:`array_latency`."""
        return array_latency(self.config)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        r, c = cfg.rows, cfg.cols
        pes = [[PE(dataflow=cfg.dataflow, in_bits=cfg.in_bits, acc_bits=cfg.acc_bits)
                for _ in range(c)] for _ in range(r)]
        for i in range(r):
            for j in range(c):
                m.submodules[f"pe_{i}_{j}"] = pes[i][j]
        os_ = cfg.dataflow == "os"
        for i in range(r):
            for j in range(c):
                pe = pes[i][j]
                m.d.comb += pe.ce.eq(self.ce)
                left = pes[i][j - 1] if j else None
                m.d.comb += pe.a_in.eq(left.a_out if left else self.a[i])
                if os_:
                    m.d.comb += pe.a_last_in.eq(left.a_last_out if left else self.a_last[i])
                    m.d.comb += pe.b_in.eq(pes[i - 1][j].b_out if i else self.b[j])
                    m.d.comb += pe.c_in.eq(pes[i - 1][j].c_out if i else 0)
                else:
                    m.d.comb += pe.a_swap_in.eq(left.a_swap_out if left else self.a_swap[i])
                    m.d.comb += pe.psum_in.eq(pes[i - 1][j].psum_out if i else 0)
                    m.d.comb += pe.w_in.eq(pes[i + 1][j].w_out if i + 1 < r else self.w[j])
                    m.d.comb += pe.w_shift.eq(self.w_shift)
        for j in range(c):
            if os_:
                m.d.comb += self.c[j].eq(pes[r - 1][j].c_out)
            else:
                m.d.comb += self.psum[j].eq(pes[r - 1][j].psum_out)
        return m
