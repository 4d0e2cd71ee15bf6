"""The requantizer: int32 accumulators back to narrow activations, gemmlowp fixed point, bit-exact.

It computes exactly :func:`golden.requantize` (TFLite's reference ``MultiplyByQuantizedMultiplier``
with a saturating left shift) for every lane of every beat, as a fixed-latency stream pipeline.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, EnableInserter, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import refuse
from .dsp import registered_product

__all__ = ["Requantizer", "in_layout", "out_layout"]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def in_layout(*, lanes: int, acc_bits: int = 32) -> data.StructLayout:
    """One input beat: per lane an accumulator and its channel's bias, multiplier and shift."""
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(acc_bits), lanes),
        "bias": data.ArrayLayout(signed(32), lanes),
        "multiplier": data.ArrayLayout(signed(32), lanes),
        "shift": data.ArrayLayout(signed(8), lanes),
        "last": 1,
    })


def out_layout(*, lanes: int, out_bits: int = 8) -> data.StructLayout:
    """One output beat: a row of ``lanes`` requantized values and the flag that came in with it."""
    return data.StructLayout({"data": data.ArrayLayout(signed(out_bits), lanes), "last": 1})


class Requantizer(wiring.Component):
    """Requantizes ``lanes`` accumulators per beat; one beat per cycle, fixed latency.

    Per lane, with ``acc`` sign-extended from ``acc_bits`` to 32 bits and every step on int32 as
    gemmlowp defines it (see ``golden/requant.py``)::

        x   = wrap32(acc + bias)
        x   = saturate32(x * 2**max(shift, 0))
        x   = SaturatingRoundingDoublingHighMul(x, multiplier)
        x   = RoundingDivideByPOT(x, max(-shift, 0))
        out = clamp(x + zero_point, max(qmin, zero_point) if relu else qmin, qmax)

    ``i``: a stream of beats (:func:`in_layout`); ``bias``, ``multiplier`` and ``shift`` are
    per lane, so per-output-channel parameters simply ride along with their accumulators.
    ``multiplier`` is any int32 (normally ``golden.quantize_multiplier``'s, in ``[2**30, 2**31)``,
    or 0 for a negligible scale, which gives ``zero_point`` clamped). ``shift`` must lie in
    ``[-31, 31]``, the whole domain of the golden model: left shifts up to 31 (31 only ever
    saturates unless ``x`` is 0 or -1), right shifts up to 31. Outside it the result is
    unspecified (only the low five bits of ``|shift|`` are used).

    ``zero_point``, ``qmin``, ``qmax``, ``relu``: static settings, held constant while beats are
    in flight (and for a cycle before the first enters), with ``qmin <= zero_point <= qmax``.

    ``o``: a stream of results (:func:`out_layout`) in input order, ``last`` carried through.

    Stages, one register each (a beat accepted in cycle ``c`` is valid on ``o`` in cycle
    ``c + latency``): the inputs, bias add, left shift, saturation, the multiplier's operands
    (in the DSP blocks' input registers on ECP5: the saturated value fans out to four DSP
    blocks, and its route to their column took 6.1 ns on the 8x8 engine), four 16x16 partial
    products, their sum (the 32x32->64 product), rounding high half, divide (shift and the
    rounding compare), rounding add, zero point, ReLU + clamp. No stage holds more than one
    carry chain, or a multiplier and a carry chain, so the requantizer is not what limits an
    FPGA's clock (on ECP5 the product and its sum in one stage held the 8x8 engine to 57 MHz,
    the divide in one stage the 4x4 to 63 MHz). While a result waits on ``o`` (valid, not
    ready) the whole pipeline holds and ``i.ready`` is low; otherwise it accepts a beat every
    cycle.
    """

    #: multipliers per lane: the 32x32 product's four 16x16 partial products (a DSP block each)
    MULTIPLIERS_PER_LANE = 4

    #: the pipeline's stages, in order; each ends in a register
    STAGES = ("input", "bias", "left_shift", "saturate", "operands", "partial_products",
              "middle_sum", "product", "high_half", "divide", "round", "zero_point", "output")

    def __init__(self, *, lanes: int, acc_bits: int = 32, out_bits: int = 8):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise refuse(self, f"lanes must be a positive integer, not {lanes!r}")
        if isinstance(acc_bits, bool) or not isinstance(acc_bits, int) \
                or not 17 <= acc_bits <= 32:
            raise refuse(self, f"acc_bits must be an integer between 17 and 32 (the arithmetic "
                               f"is int32's), not {acc_bits!r}")
        if isinstance(out_bits, bool) or not isinstance(out_bits, int) \
                or not 2 <= out_bits <= 16:
            raise refuse(self, f"out_bits must be an integer between 2 and 16, not {out_bits!r}")
        self.lanes = lanes
        self.acc_bits = acc_bits
        self.out_bits = out_bits
        q = signed(out_bits)
        super().__init__({
            "i": In(stream.Signature(in_layout(lanes=lanes, acc_bits=acc_bits))),
            "zero_point": In(q),
            "qmin": In(q),
            "qmax": In(q),
            "relu": In(1),
            "o": Out(stream.Signature(out_layout(lanes=lanes, out_bits=out_bits))),
        })

    @property
    def latency(self) -> int:
        """Cycles from accepting a beat on ``i`` to its result being valid on ``o`` (no stalls)."""
        return len(self.STAGES)

    def elaborate(self, platform):
        m = Module()

        # The pipeline advances unless a result is waiting for a consumer.
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        core = Module()  # everything that holds still when en is low
        m.submodules.core = EnableInserter(en)(core)

        def reg(value, shape, name):
            r = Signal(shape, name=name)
            core.d.sync += r.eq(value)
            return r

        # valid and last travel with the data, one register per stage
        valid, last = self.i.valid, self.i.payload.last
        for n, stage in enumerate(self.STAGES[:-1]):
            valid = reg(valid, 1, f"valid{n + 1}_{stage}")
            last = reg(last, 1, f"last{n + 1}_{stage}")
        core.d.sync += [self.o.valid.eq(valid), self.o.payload.last.eq(last)]

        zp, qmin, qmax = self.zero_point, self.qmin, self.qmax
        # ReLU clamps at the zero point, i.e. at real value 0 (qmin <= zero_point is required).
        # The settings are static, so the bounds are registered, and so are the same bounds
        # less the zero point: stage 6 compares x with those beside its add of the zero point,
        # and the output stage is a multiplexer alone.
        q = signed(self.out_bits)
        lo, hi = Signal(q), Signal(q)
        lo_x, hi_x = Signal(signed(self.out_bits + 1)), Signal(signed(self.out_bits + 1))
        m.d.sync += [lo.eq(Mux(self.relu, zp, qmin)), hi.eq(qmax),
                     lo_x.eq(Mux(self.relu, 0, qmin - zp)), hi_x.eq(qmax - zp)]

        s32 = signed(32)
        p = self.i.payload
        for k in range(self.lanes):
            # 0. the inputs, registered as they come (an accumulator row straight from block
            # RAM has little of the cycle left)
            acc0 = reg(p.acc[k], signed(self.acc_bits), f"acc0_{k}")
            bias0 = reg(p.bias[k], s32, f"bias0_{k}")
            m0 = reg(p.multiplier[k], s32, f"m0_{k}")
            s0 = reg(p.shift[k], signed(8), f"s0_{k}")

            # 1. bias add; the accumulator is sign-extended, the sum wraps to int32; beside it
            # the shift becomes its two amounts, left = max(shift, 0), right = max(-shift, 0)
            # (so the next stage holds the 63-bit shifter alone)
            x1 = reg((acc0 + bias0)[:32], s32, f"x1_{k}")
            m1 = reg(m0, s32, f"m1_{k}")
            left = reg(Mux(s0 > 0, s0, 0)[:5], unsigned(5), f"left1_{k}")
            r1 = reg(Mux(s0 < 0, -s0, 0)[:5], unsigned(5), f"r1_{k}")

            # 2. left shift, then saturate to int32 (two stages: the shift, then the compare)
            wide = reg(x1 << left, signed(32 + 31), f"x1_shifted_{k}")
            m1b = reg(m1, s32, f"m1b_{k}")
            r1b = reg(r1, unsigned(5), f"r1b_{k}")
            x2 = reg(Mux(wide > INT32_MAX, INT32_MAX, Mux(wide < INT32_MIN, INT32_MIN, wide)),
                     s32, f"x2_{k}")
            m2 = reg(m1b, s32, f"m2_{k}")
            r2 = reg(r1b, unsigned(5), f"r2_{k}")

            # 3. the 32x32->64 product as four partial products of 16-bit halves, each one
            # DSP block (a signed high half times a zero-extended low half fits 18x18) with
            # its operands registered first, then their sum in two more stages, so no stage
            # holds both a multiplier and a carry: the middle terms' sum beside hh:ll (a
            # concatenation: ll < 2**32), then the total
            xh, xl = x2[16:].as_signed(), x2[:16].as_unsigned()
            mh, ml = m2[16:].as_signed(), m2[:16].as_unsigned()
            hh, hl, lh, ll = (
                registered_product(core, a, b, platform=platform, ce=en, input_registers=True,
                                   name=f"{label}3_{k}")
                for label, a, b in (("hh", xh, mh), ("hl", xh, ml), ("lh", xl, mh), ("ll", xl, ml)))
            r2b = reg(r2, unsigned(5), f"r2b_{k}")
            r3a = reg(r2b, unsigned(5), f"r3a_{k}")
            middle = reg(hl + lh, signed(34), f"middle3_{k}")
            outer = reg(Cat(ll[:32], hh).as_signed(), signed(64), f"outer3_{k}")
            r3b = reg(r3a, unsigned(5), f"r3b_{k}")
            ab = reg(outer + (middle << 16), signed(64), f"ab3_{k}")
            r3 = reg(r3b, unsigned(5), f"r3_{k}")

            # 4. SaturatingRoundingDoublingHighMul's high half. gemmlowp adds 2**30 (ab >= 0) or
            # 1 - 2**30 (ab < 0) and divides by 2**31 truncating; for ab < 0 truncation is
            # floor((ab + 1 - 2**30 + 2**31 - 1) / 2**31), so both cases are the same
            # floor((ab + 2**30) / 2**31): one add and an arithmetic shift. Its only result
            # outside int32 is 2**31, from INT32_MIN * INT32_MIN, which saturates: it is the
            # only non-negative value with bit 31 set, so no compare follows the add.
            high = Signal(signed(34), name=f"high_{k}")
            m.d.comb += high.eq((ab + (1 << 30)) >> 31)
            x4 = reg(Mux(~high[33] & high[31], INT32_MAX, high), s32, f"x4_{k}")
            r4 = reg(r3, unsigned(5), f"r4_{k}")
            # the divide's mask and half-mask depend on the shift alone: ready a stage early
            # (a thermometer code: bit i set while i < r; half is the mask shifted down once)
            mask = reg(_thermometer(r3, 0), 32, f"mask4_{k}")
            half = reg(_thermometer(r3, 1), 32, f"half4_{k}")
            half1 = reg(_thermometer(r3, 1) + 1, 33, f"half4_plus1_{k}")

            # 5. RoundingDivideByPOT, in gemmlowp's own terms: half away from zero. The
            # remainder is compared with half the divisor (one more for a negative x), beside
            # the shift; the next stage adds the rounding bit.
            remainder = Signal(32, name=f"remainder_{k}")
            m.d.comb += remainder.eq(x4 & mask)
            up = Mux(x4 < 0, remainder > half1, remainder > half)
            shifted = reg(x4 >> r4, s32, f"x5_shifted_{k}")
            round_up = reg(up, 1, f"x5_round_{k}")
            x5 = reg(shifted + round_up, s32, f"x5_{k}")

            # 6. zero point, and the clamp's compares beside it (x + zp < lo is x < lo - zp);
            # then ReLU and clamp (lo <= hi, so at most one compare holds)
            y = reg(x5 + zp, signed(33), f"y_{k}")
            below = reg(x5 < lo_x, 1, f"below_{k}")
            above = reg(x5 > hi_x, 1, f"above_{k}")
            core.d.sync += self.o.payload.data[k].eq(
                Mux(below, lo, Mux(above, hi, y[:self.out_bits])))

        return m


def _thermometer(r, offset: int):
    """32 bits, bit i set while ``i + offset < r`` (``r`` a 5-bit value: at most 31)."""
    return Cat(*((r > i + offset) if i + offset < 31 else Const(0, 1) for i in range(32)))
