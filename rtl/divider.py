"""Unsigned integer division, floor, bit-exact: restoring division, one quotient bit per step.

For an unsigned ``dividend_bits``-bit dividend ``n`` and an unsigned ``divisor_bits``-bit
divisor ``d`` (``1 <= divisor_bits <= dividend_bits <= 64``) both dividers give exactly
Python's ``n // d`` (``dividend_bits`` bits wide) and ``n % d`` (``divisor_bits`` bits wide:
the remainder is below ``d``). They serve I-ViT's integer softmax, GELU and layernorm, e.g.
``(2**31 - 1) // s`` with (31, 31) bits and the layernorm's Newton square root ``v // k``
with (46, 32) bits.

The arithmetic, per quotient bit from the dividend's top bit down (``r`` starts at 0)::

    s = 2 * r + next dividend bit     # divisor_bits + 1 bits
    q = s >= d                        # the quotient bit: one subtractor, s - d, its sign
    r = (s - d if q else s) mod 2**divisor_bits

Division by zero is defined, and is what the restoring divider gives by itself: every
compare ``s >= 0`` holds, so the quotient is all ones (``2**dividend_bits - 1``) and the
remainder is the dividend's low ``divisor_bits`` bits (``n % 2**divisor_bits``).

:class:`PipelinedDivider`: ``lanes`` divisions per cycle, one stage (one subtractor) per
quotient bit, latency ``dividend_bits`` cycles of ``en``.
:class:`SequentialDivider`: one division at a time, one quotient bit per cycle, a result
``dividend_bits + 1`` cycles after ``start``; one subtractor in all, for a small area.
"""

from __future__ import annotations

from amaranth.hdl import Cat, EnableInserter, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import refuse

__all__ = ["PipelinedDivider", "SequentialDivider", "MAX_BITS"]

#: the widest dividend either divider accepts
MAX_BITS = 64


def _check_widths(block, dividend_bits, divisor_bits):
    if isinstance(dividend_bits, bool) or not isinstance(dividend_bits, int) \
            or not 1 <= dividend_bits <= MAX_BITS:
        raise refuse(block, f"dividend_bits must be an integer between 1 and {MAX_BITS}, "
                            f"not {dividend_bits!r}")
    if isinstance(divisor_bits, bool) or not isinstance(divisor_bits, int) \
            or not 1 <= divisor_bits <= dividend_bits:
        raise refuse(block, f"divisor_bits must be an integer between 1 and dividend_bits "
                            f"({dividend_bits}), not {divisor_bits!r}")


def _step(r, bit, d, divisor_bits, r_bits):
    """One restoring step: ``(quotient bit, next partial remainder)``, the remainder
    ``r_bits`` wide (``r``'s value always fits: it never exceeds the dividend bits seen)."""
    s = Cat(bit, r)  # 2 * r + bit
    # one subtractor; its sign is the compare (both operands zero-extended, one bit to spare)
    diff = Signal(signed(max(len(s), divisor_bits) + 1))
    q = ~diff[-1]
    return diff, s - d, q, Mux(q, diff[:r_bits], s[:r_bits])


def pipelined_divider_latency(dividend_bits: int) -> int:
    """:attr:`PipelinedDivider.latency`, without building one: a stage per quotient bit."""
    return dividend_bits


class PipelinedDivider(wiring.Component):
    """``lanes`` independent unsigned divisions per cycle, fully pipelined, fixed latency.

    Per lane ``k``, for the ``dividend[k]`` (``dividend_bits`` wide) and ``divisor[k]``
    (``divisor_bits`` wide) of an input taken in a cycle with ``i_valid`` and ``en`` high::

        quotient[k]  = dividend[k] // divisor[k]     # dividend_bits wide
        remainder[k] = dividend[k] %  divisor[k]     # divisor_bits wide

    with division by zero giving ``quotient[k] = 2**dividend_bits - 1`` and
    ``remainder[k] = dividend[k] % 2**divisor_bits`` (see the module docstring).

    ``en``: the whole pipeline (``o_valid`` included) advances in cycles with ``en`` high and
    holds otherwise; it is both the input's and the output's handshake: an input is taken in a
    cycle with ``i_valid`` and ``en`` high, and a result is delivered in a cycle with
    ``o_valid`` and ``en`` high (while ``en`` is low, ``o_valid`` and the results hold). To
    stream into a consumer with a ``ready``, drive ``en = ~o_valid | ready``.

    Stages, one register each: stage ``j`` (``0 <= j < dividend_bits``) takes quotient bit
    ``dividend_bits - 1 - j`` with one ``divisor_bits + 1``-bit subtractor (its sign bit is
    the compare); stage 0 works on the inputs directly (its partial remainder is the dividend's
    top bit alone) and the last stage's register is the output. The partial remainder
    registers are ``min(j + 1, divisor_bits)`` bits wide. So :attr:`latency` is
    ``dividend_bits``: a result is delivered in the ``latency``-th ``en`` cycle after the one
    that took its input (with ``en`` always high, ``latency`` cycles later; one result per
    cycle).
    Each stage's register holds, per lane, the divisor, the partial remainder and the
    dividend's untouched low bits beside the quotient's finished high bits.
    """

    def __init__(self, lanes: int, dividend_bits: int, divisor_bits: int):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise refuse(self, f"lanes must be a positive integer, not {lanes!r}")
        _check_widths(self, dividend_bits, divisor_bits)
        self.lanes = lanes
        self.dividend_bits = dividend_bits
        self.divisor_bits = divisor_bits
        super().__init__({
            "en": In(1),
            "i_valid": In(1),
            "dividend": In(data.ArrayLayout(unsigned(dividend_bits), lanes)),
            "divisor": In(data.ArrayLayout(unsigned(divisor_bits), lanes)),
            "o_valid": Out(1),
            "quotient": Out(data.ArrayLayout(unsigned(dividend_bits), lanes)),
            "remainder": Out(data.ArrayLayout(unsigned(divisor_bits), lanes)),
        })

    @property
    def latency(self) -> int:
        """``en`` cycles from an input being taken to its result on the output."""
        return pipelined_divider_latency(self.dividend_bits)

    def elaborate(self, platform):
        m = Module()
        core = Module()  # everything that holds still when en is low
        m.submodules.core = EnableInserter(self.en)(core)
        n_bits, d_bits = self.dividend_bits, self.divisor_bits

        valid = self.i_valid
        for j in range(n_bits - 1):
            v = Signal(name=f"valid{j + 1}")
            core.d.sync += v.eq(valid)
            valid = v
        core.d.sync += self.o_valid.eq(valid)

        for k in range(self.lanes):
            # nq: the dividend's low bits still to come (low end) below the quotient's bits
            # so far (high end); r: the partial remainder; d: the divisor
            nq, r, d = self.dividend[k], None, self.divisor[k]
            for j in range(n_bits):
                rest = n_bits - 1 - j  # dividend bits still to come after this stage's
                r_bits = min(j + 1, d_bits)
                bit = nq[rest]
                if r is None:  # stage 0: the partial remainder is 0
                    r = Cat()
                diff, diff_value, q, r_value = _step(r, bit, d, d_bits, r_bits)
                diff.name = f"diff{j}_{k}"
                m.d.comb += diff.eq(diff_value)
                if j == n_bits - 1:
                    core.d.sync += [self.quotient[k].eq(Cat(q, nq[rest + 1:])),
                                    self.remainder[k].eq(r_value)]
                    break
                nq_next = Signal(n_bits, name=f"nq{j + 1}_{k}")
                r_next = Signal(r_bits, name=f"r{j + 1}_{k}")
                d_next = Signal(d_bits, name=f"d{j + 1}_{k}")
                core.d.sync += [nq_next.eq(Cat(nq[:rest], q, nq[rest + 1:])),
                                r_next.eq(r_value), d_next.eq(d)]
                nq, r, d = nq_next, r_next, d_next
        return m


class SequentialDivider(wiring.Component):
    """One unsigned division at a time, one quotient bit per cycle: one subtractor in all.

    ``start``: in a cycle with ``start`` high and ``busy`` low, ``dividend``
    (``dividend_bits`` wide) and ``divisor`` (``divisor_bits`` wide) are latched and a
    division begins (``start`` while ``busy`` is ignored). ``busy`` is high from the cycle
    after ``start`` until the result is ready. ``done`` is high for the one cycle
    :attr:`cycles` after the ``start`` cycle, when ``busy`` falls and::

        quotient  = dividend // divisor     # dividend_bits wide
        remainder = dividend %  divisor     # divisor_bits wide

    (division by zero: ``quotient = 2**dividend_bits - 1``, ``remainder = dividend %
    2**divisor_bits``, see the module docstring). Both hold until the next ``start``; while
    ``busy`` they change every cycle. A new ``start`` may come in the ``done`` cycle itself,
    so back to back a division takes :attr:`cycles` cycles.

    Cycles: the ``start`` edge latches the operands, the next ``dividend_bits`` edges take a
    quotient bit each, so ``cycles = dividend_bits + 1``. Registers: the dividend shifting out
    at the top of one ``dividend_bits``-bit register as the quotient shifts in at the bottom,
    the divisor, the ``divisor_bits``-bit partial remainder and a step counter.
    """

    def __init__(self, dividend_bits: int, divisor_bits: int):
        _check_widths(self, dividend_bits, divisor_bits)
        self.dividend_bits = dividend_bits
        self.divisor_bits = divisor_bits
        super().__init__({
            "start": In(1),
            "dividend": In(unsigned(dividend_bits)),
            "divisor": In(unsigned(divisor_bits)),
            "busy": Out(1),
            "done": Out(1),
            "quotient": Out(unsigned(dividend_bits)),
            "remainder": Out(unsigned(divisor_bits)),
        })

    @property
    def cycles(self) -> int:
        """Cycles from the ``start`` cycle to the ``done`` cycle."""
        return self.dividend_bits + 1

    def elaborate(self, platform):
        m = Module()
        n_bits, d_bits = self.dividend_bits, self.divisor_bits
        nq = Signal(n_bits)  # the dividend's unused bits (top) above the quotient's (bottom)
        r = Signal(d_bits)
        d = Signal(d_bits)
        count = Signal(range(n_bits + 1))  # steps still to take
        m.d.comb += [self.quotient.eq(nq), self.remainder.eq(r)]

        diff, diff_value, q, r_value = _step(r, nq[-1], d, d_bits, d_bits)
        m.d.comb += diff.eq(diff_value)

        m.d.sync += self.done.eq(0)
        with m.If(self.busy):
            m.d.sync += [nq.eq(Cat(q, nq[:-1])), r.eq(r_value), count.eq(count - 1)]
            with m.If(count == 1):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.Elif(self.start):
            m.d.sync += [nq.eq(self.dividend), d.eq(self.divisor), r.eq(0),
                         count.eq(n_bits), self.busy.eq(1)]
        return m
