"""I-ViT's integer exponential ``shift_exp``, bit-exact, as a fixed-latency multi-lane pipeline.

It computes exactly :func:`golden.nonlinear.shift_exp` (``x0`` negative, ``1 <= n <= 30``,
``|x0| * 2**n < 2**31``) for every lane of every element::

    x'  = x + (x >> 1) - (x >> 4)         # arithmetic shifts (floor)
    x'  = max(x', n x0)
    q   = floor(x' / x0);  r = x' - q x0  # r in (x0, 0]
    val = r - 2 x0                        # in [|x0| + 1, 2 |x0|]
    e   = n - 1 - q
    exp = min(val << e if e >= 0 else val >> 1, 2**31 - 1)

Widths: ``x`` is ``x_bits`` signed (2..24), ``x0`` 18 bits signed, the result 31 bits unsigned.
``x'`` needs ``x_bits + 1`` bits; ``|x'|`` (the dividend) ``x_bits``; ``val`` 19; the shifted
value 49 before its saturation to 31.

Latency: ``6 + K`` cycles with ``en`` high, ``K = max(n, 30 - n).bit_length()`` quotient bits
(10 for ``n = 15``, 11 for ``n = 23`` and ``n = 4``); see :attr:`ShiftExp.latency`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, EnableInserter, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import refuse
from .isa import X0_BITS

__all__ = ["ShiftExp", "quotient_bits"]

INT31_MAX = (1 << 31) - 1
#: ``val = r - 2 x0 <= 2 |x0| <= 2**18``
VAL_BITS = X0_BITS + 1


def quotient_bits(n: int) -> int:
    """The division's quotient bits ``K`` for ``n``: ``2**K - 1 >= max(n, 30 - n)``, enough for
    ``Q <= n`` (``x' <= 0``) and to tell ``Q >= 30 - n`` (``x' > 0``, saturated)."""
    return max(n, 30 - n).bit_length()


#: stages around the division: input, half, log2e before it; residue, shift, output after
FIXED_STAGES = 6


def shift_exp_latency(n: int) -> int:
    """:attr:`ShiftExp.latency` for ``n``, without building one."""
    return FIXED_STAGES + quotient_bits(n)


class ShiftExp(wiring.Component):
    """``shift_exp`` on ``lanes`` elements per cycle; fully pipelined, fixed latency.

    Ports:

    * ``x0``: In(signed(X0_BITS)) (CONFIG's field), the static setting ``x0 < 0``, with ``|x0| *
      2**n < 2**31`` (else results are unspecified; they saturate rather than wrap). Held
      constant while elements are in flight; setting it in the same cycle as the first element
      enters is enough (each value derived from it passes through no more registers than the
      elements do before they use it, and those registers advance every cycle, ``en`` or not).
    * ``en``: In(1); the whole pipeline (data and valid) advances only in cycles with ``en``
      high, and holds otherwise.
    * ``i_valid``: In(1), ``i``: In(ArrayLayout(signed(x_bits), lanes)): one element per lane,
      taken in cycles with ``en`` high.
    * ``o_valid``: Out(1), ``o``: Out(ArrayLayout(unsigned(31), lanes)): the results, in order.

    An element on ``i`` in a cycle with ``en`` high is on ``o`` (with ``o_valid``) after
    :attr:`latency` more cycles with ``en`` high.

    The division ``q = floor(x' / x0)`` is an unsigned restoring division by ``d = |x0|``, one
    quotient bit per stage, of the dividend ``D``: ``-x'`` when ``x' <= 0`` (then ``q = Q``,
    ``r = -rem``), else ``x' - 1`` (then ``q = -(Q + 1)``, ``r = rem + 1 - d``). Both come from
    ``y = x' - 1`` without a further carry: ``D = y`` or ``~y``. ``K`` quotient bits are computed
    with ``2**K - 1 >= max(n, 30 - n)``, and beside the first step an overflow flag ``D >= d
    2**K``. Then:

    * ``x' <= 0`` and ``-x' > n d`` (overflow, ``Q > n``, or ``Q = n`` with ``rem > 0``): the clamp
      at ``n x0`` is active, and the result is ``(2 d) >> 1 = d``; so no ``n x0`` is needed;
    * ``x' <= 0`` otherwise: ``val = 2d - rem``, ``e = n - 1 - Q``, in ``[-1, n - 1]``; never
      saturates, as ``2d 2**(n-1) = d 2**n < 2**31``;
    * ``x' > 0``: ``e = n + Q`` and ``val = d + 1 + rem >= 2``, so ``Q >= 30 - n`` (or overflow)
      means ``val << e >= 2**31``: saturated; otherwise ``e <= 29``, ``val = d + 1 + rem``.

    Both cases shift as ``exp = (val << s) >> 1`` with ``s = e + 1`` in ``[0, 30]``, saturated
    where bits 32 and up of ``val << s`` are not all zero.

    Stages, one register each (:attr:`stages`, the ``K`` division steps named ``divide<i>``):
    the input; ``x + (x >> 1)``; ``y = x' - 1 = (x + (x >> 1)) + ~(x >> 4)`` and the fold to
    ``D`` with the sign; the ``K`` division steps (a subtract and a multiplexer each, plus the
    overflow compare beside the first); the residue (``val`` as one add of multiplexed
    operands, the shift amount, the saturation and clamp flags); the barrel shift (49 bits);
    the output (saturation, clamp, ``>> 1``). No stage holds more than one carry chain in
    series. ``|x0|``, ``|x0| + 1`` and ``2 |x0| + 1`` are registered settings.
    """

    def __init__(self, lanes: int, x_bits: int, n: int):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise refuse(self, f"lanes must be a positive integer, not {lanes!r}")
        if isinstance(x_bits, bool) or not isinstance(x_bits, int) or not 2 <= x_bits <= 24:
            raise refuse(self, f"x_bits must be an integer between 2 and 24, not {x_bits!r}")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 30:
            raise refuse(self, f"n must be an integer between 1 and 30, not {n!r}")
        self.lanes = lanes
        self.x_bits = x_bits
        self.n = n
        #: the division's quotient bits (:func:`quotient_bits`)
        self.quotient_bits = quotient_bits(n)
        super().__init__({
            "x0": In(signed(X0_BITS)),
            "en": In(1),
            "i_valid": In(1),
            "i": In(data.ArrayLayout(signed(x_bits), lanes)),
            "o_valid": Out(1),
            "o": Out(data.ArrayLayout(unsigned(31), lanes)),
        })

    @property
    def stages(self) -> tuple[str, ...]:
        """The pipeline's stages, in order; each ends in a register."""
        divide = tuple(f"divide{b}" for b in reversed(range(self.quotient_bits)))
        return ("input", "half", "log2e") + divide + ("residue", "shift", "output")

    @property
    def latency(self) -> int:
        """Cycles with ``en`` high from an element on ``i`` to its result on ``o``."""
        assert len(self.stages) == shift_exp_latency(self.n)
        return len(self.stages)

    def elaborate(self, platform):
        m = Module()
        core = Module()  # everything that holds still while en is low
        m.submodules.core = EnableInserter(self.en)(core)

        def reg(value, shape, name):
            r = Signal(shape, name=name)
            core.d.sync += r.eq(value)
            return r

        n, b, k_bits = self.n, self.x_bits, self.quotient_bits

        valid = self.i_valid
        for index, stage in enumerate(self.stages[:-1]):
            valid = reg(valid, 1, f"valid{index + 1}_{stage}")
        core.d.sync += self.o_valid.eq(valid)

        # settings, registered every cycle (not gated by en): d by the first division step
        # (stage 4), d + 1 and 2 d + 1 by the residue stage, d again by the output
        d = Signal(X0_BITS, name="d")
        d_plus1 = Signal(VAL_BITS, name="d_plus1")
        d2_plus1 = Signal(VAL_BITS, name="d2_plus1")
        m.d.sync += [d.eq(-self.x0), d_plus1.eq(d + 1), d2_plus1.eq((d << 1) + 1)]

        all_ones = (1 << VAL_BITS) - 1
        for lane in range(self.lanes):
            # 0. the input
            x = reg(self.i[lane], signed(b), f"x0_{lane}")

            # 1. x + (x >> 1), with x beside it
            half = reg(x + (x >> 1), signed(b + 1), f"x1_half_{lane}")
            x1 = reg(x, signed(b), f"x1_{lane}")

            # 2. y = x' - 1 = x + (x >> 1) + ~(x >> 4) (~v = -v - 1); positive iff x' > 0; the
            # dividend is y then, else ~y = -x' (an XOR beside the add, no second carry)
            y = Signal(signed(b + 1), name=f"y_{lane}")
            m.d.comb += y.eq(half + ~(x1 >> 4))
            pos = reg(~y[-1], 1, f"pos2_{lane}")
            rem = reg(Mux(y[-1], ~y, y)[:b], unsigned(b), f"dividend2_{lane}")

            # 3. restoring division by d, quotient bit k_bits - 1 first; beside the first step,
            # the overflow compare D >= d 2**K (the quotient does not fit in K bits)
            quotient = []  # most significant first
            ovf = None
            for step in reversed(range(k_bits)):
                diff = Signal(signed(max(b, X0_BITS + step) + 1), name=f"diff{step}_{lane}")
                m.d.comb += diff.eq(rem - (d << step))
                bit = ~diff[-1]
                if ovf is None:
                    ovf = reg(rem >= (d << k_bits), 1, f"ovf_d{step}_{lane}")
                else:
                    ovf = reg(ovf, 1, f"ovf_d{step}_{lane}")
                pos = reg(pos, 1, f"pos_d{step}_{lane}")
                quotient = [reg(qb, 1, f"q{k_bits - 1 - j}_d{step}_{lane}")
                            for j, qb in enumerate(quotient)]
                quotient.append(reg(bit, 1, f"q{step}_d{step}_{lane}"))
                rem = reg(Mux(bit, diff[:b], rem), unsigned(b), f"rem_d{step}_{lane}")
            q = Signal(k_bits, name=f"q_{lane}")
            m.d.comb += q.eq(Cat(*reversed(quotient)))

            # 4. the residue: val = d + 1 + rem (x' > 0) or 2 d - rem = (2 d + 1) + ~rem
            # (x' <= 0), one add of multiplexed operands; the shift amount s = e + 1;
            # saturation (x' > 0) and the clamp at n x0 (x' <= 0)
            rem_v = Signal(VAL_BITS, name=f"rem_v_{lane}")
            m.d.comb += rem_v.eq(rem)  # rem < d <= 2**17 unless overflowed (then unused)
            val = reg((Mux(pos, d_plus1, d2_plus1) + (rem_v ^ Mux(pos, 0, all_ones)))[:VAL_BITS],
                      unsigned(VAL_BITS), f"val_{lane}")
            s = reg(Mux(pos, n + 1 + q, n - q)[:5], unsigned(5), f"s_{lane}")
            # (a compare the quotient's width already decides is left out: Verilator's lint
            # calls a constant comparison a warning)
            top = (1 << k_bits) - 1
            beyond_n = (q > n) if n < top else Const(0, 1)
            at_least = (q >= 30 - n) if 30 - n > 0 else Const(1, 1)
            sat = reg(pos & (ovf | at_least), 1, f"sat_{lane}")
            clamp = reg(~pos & (ovf | beyond_n | ((q == n) & rem.any())), 1, f"clamp_{lane}")

            # 5. the barrel shift, s <= 30 (unless saturated or clamped)
            wide = reg(val << s, unsigned(VAL_BITS + 30), f"wide_{lane}")
            sat5 = reg(sat, 1, f"sat5_{lane}")
            clamp5 = reg(clamp, 1, f"clamp5_{lane}")

            # 6. the output: clamped (val = 2 d, s = 0: d; val and s themselves are meaningless
            # then, the shifted value may overflow), saturated, or (val << s) >> 1
            core.d.sync += self.o[lane].eq(
                Mux(clamp5, d, Mux(sat5 | wide[32:].any(), INT31_MAX, wide[1:32])))

        return m
