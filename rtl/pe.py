"""The processing element: one multiply-accumulate cell of the systolic array."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import DATAFLOWS, refuse
from .dsp import registered_product

__all__ = ["PE"]


class PE(wiring.Component):
    """One PE. Every output is a register, so links between neighbours are registered.

    The product is registered twice before it is added, so the multiplier (a DSP block on an
    FPGA), the route out of it and the accumulator's adder are separate pipeline stages: a
    result takes :attr:`latency` = 3 cycles from its operands, while operands still hop one PE
    per cycle. Every PE is one cycle later by the same amount, so the systolic wave keeps its
    shape and only the array's output moves, which :class:`~rtl.tile.TileTiming` accounts for.

    ``dataflow="os"`` (output-stationary): ``a`` passes right, ``b`` passes down, the PE adds
    ``a * b`` into its accumulator. ``a_last`` travels with ``a``: the cycle it is set, the
    finished sum (including this product) moves into the output register and the accumulator
    restarts from zero, so the next tile computes while this one drains. Output registers form a
    chain down the column (``c_in`` from the PE above, ``c_out`` to the PE below) with one link
    register per hop, which lets the drain run against the diagonal wave of ``a_last``.

    ``dataflow="ws"`` (weight-stationary): ``a`` passes right, partial sums pass down
    (``psum_out = psum_in + a * w``). Weights shift up the column through a shadow register
    (``w_in`` from below, ``w_out`` to above) while ``w_shift`` is set; ``a_swap`` travels with
    ``a`` and makes the PE switch to the shadow weight from that product on, so the next tile's
    weights load while this one computes.

    Accumulation wraps at ``acc_bits`` (two's complement). Sync logic only: wrap the PE in an
    ``EnableInserter`` to stall it.
    """

    #: cycles from operands in to the result they make: the product register, a second one
    #: (on an FPGA the first is inside the DSP block, whose output has a long way to the
    #: fabric: the second splits that route), then the sum
    latency = 3
    #: cycles an operand takes to pass to the neighbouring PE
    hop = 1

    def __init__(self, *, dataflow: str = "os", in_bits: int = 8, acc_bits: int = 32):
        if dataflow not in DATAFLOWS:
            raise refuse(self, f"dataflow must be one of {', '.join(DATAFLOWS)}, not {dataflow!r}")
        if acc_bits < 2 * in_bits:
            raise refuse(self, f"acc_bits ({acc_bits}) is too narrow for {in_bits}-bit operands: "
                               f"a product needs {2 * in_bits} bits")
        self.dataflow = dataflow
        self.in_bits = in_bits
        self.acc_bits = acc_bits
        op, acc = signed(in_bits), signed(acc_bits)
        # ce: the enable the PE runs under, for a product register inside a DSP block
        # (rtl/dsp.py), which the array's EnableInserter does not reach
        common = {"ce": In(1, init=1)}
        if dataflow == "os":
            members = {
                "a_in": In(op), "a_last_in": In(1), "b_in": In(op), "c_in": In(acc),
                "a_out": Out(op), "a_last_out": Out(1), "b_out": Out(op), "c_out": Out(acc),
            }
        else:
            members = {
                "a_in": In(op), "a_swap_in": In(1), "psum_in": In(acc),
                "w_in": In(op), "w_shift": In(1),
                "a_out": Out(op), "a_swap_out": Out(1), "psum_out": Out(acc), "w_out": Out(op),
            }
        super().__init__({**common, **members})

    def product(self, a, b):
        """The PE's arithmetic, in one place: the int8 datapath multiplies."""
        return a * b

    def _late_product(self, m, a, b, platform):
        """``a * b``, :attr:`latency` - 1 cycles later."""
        prod = registered_product(m, a, b, platform=platform, ce=self.ce, multiply=self.product)
        return self._delayed(m, prod, "prod")

    def _delayed(self, m, value, name):
        """``value``, :attr:`latency` - 2 cycles later (the product registers after the
        first)."""
        for n in range(self.latency - 2):
            late = Signal.like(value, name=f"{name}_{n + 1}")
            m.d.sync += late.eq(value)
            value = late
        return value

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.a_out.eq(self.a_in)
        if self.dataflow == "os":
            acc = Signal(signed(self.acc_bits))
            out = Signal(signed(self.acc_bits))
            m.d.sync += [
                self.b_out.eq(self.b_in),
                self.a_last_out.eq(self.a_last_in),
                self.c_out.eq(out),  # the link register of the drain chain
            ]
            prod = self._late_product(m, self.a_in, self.b_in, platform)
            last = Signal()   # a_last, in step with the product
            m.d.sync += last.eq(self._delayed(m, self.a_last_in, "last"))
            total = acc + prod
            with m.If(last):
                m.d.sync += [out.eq(total), acc.eq(0)]
            with m.Else():
                m.d.sync += [out.eq(self.c_in), acc.eq(total)]
        else:
            active = Signal(signed(self.in_bits))
            shadow = Signal(signed(self.in_bits))
            m.d.comb += self.w_out.eq(shadow)
            m.d.sync += self.a_swap_out.eq(self.a_swap_in)
            weight = Mux(self.a_swap_in, shadow, active)
            # The product register delays this PE's term by one cycle; the partial sum from the
            # PE above comes out of its own product + sum stages one hop later, so they meet.
            prod = self._late_product(m, self.a_in, weight, platform)
            m.d.sync += self.psum_out.eq(self.psum_in + prod)
            with m.If(self.a_swap_in):
                m.d.sync += active.eq(shadow)
            with m.If(self.w_shift):
                m.d.sync += shadow.eq(self.w_in)
        return m
