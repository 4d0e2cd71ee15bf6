"""``ShiftExp`` in amaranth.sim, element for element against ``golden.nonlinear.shift_exp``.

Also the division scheme the pipeline uses (``rtl/shiftexp.py``), as plain integer arithmetic,
against the golden model for every ``n`` and the extreme ``x0`` of each.
"""

import random
from collections import deque

import pytest
import torch
from amaranth.sim import Simulator

from golden.nonlinear import shift_exp
from rtl.config import ConfigError
from rtl.shiftexp import ShiftExp, quotient_bits

INT31_MAX = (1 << 31) - 1


def _x0_min(n: int) -> int:
    """The most negative x0 allowed for ``n``: 18 bits and ``|x0| * 2**n < 2**31``."""
    return -min(1 << 17, (1 << (31 - n)) - 1)


def _golden(xs, x0, n):
    return [int(v) for v in shift_exp(torch.tensor(xs, dtype=torch.int64), x0, n)]


def _run(dut: ShiftExp, x0: int, xs, *, en_prob=0.7, valid_prob=0.7, seed=0, max_cycles=20_000):
    """Stream ``xs`` through ``dut`` (``dut.lanes`` per element, the last padded with zeros) with
    ``en`` and ``i_valid`` low at random. ``x0`` is set in the cycle the first element may enter.

    Returns (one result per x, the measured latency of every element: ``en``-high cycles from
    its cycle on ``i`` to its first cycle on ``o``).
    """
    lanes = dut.lanes
    padded = list(xs) + [0] * (-len(xs) % lanes)
    beats = [padded[j:j + lanes] for j in range(0, len(padded), lanes)]
    layout = dut.i.shape()
    rng = random.Random(seed)
    lo, hi = -(1 << (dut.x_bits - 1)), (1 << (dut.x_bits - 1)) - 1
    results, latencies = [], []

    async def testbench(ctx):
        ctx.set(dut.x0, x0)
        en_edges = 0  # edges with en high so far
        pending = deque()  # (en_edges when on i, beat)
        sent = 0
        held = None
        for _ in range(max_cycles):
            if len(results) == len(beats):
                break
            en = rng.random() < en_prob
            valid = sent < len(beats) and rng.random() < valid_prob
            ctx.set(dut.en, en)
            ctx.set(dut.i_valid, valid)
            # an invalid element carries garbage, which must not show anywhere
            ctx.set(dut.i, layout.const(beats[sent] if valid else
                                        [rng.randint(lo, hi) for _ in range(lanes)]))
            if en and valid:
                pending.append((en_edges, sent))
                sent += 1
            await ctx.tick()
            if not en:  # the pipeline holds: no new result, the old one unchanged
                assert held is None or (ctx.get(dut.o_valid), list(ctx.get(dut.o))) == held
                continue
            en_edges += 1
            held = (ctx.get(dut.o_valid), list(ctx.get(dut.o)))
            if held[0]:
                assert pending, "a result without an element"
                entered, index = pending.popleft()
                assert index == len(results)
                latencies.append(en_edges - entered)
                results.append(held[1])
        else:
            raise AssertionError(f"results missing after {max_cycles} cycles")
        ctx.set(dut.en, 1)
        ctx.set(dut.i_valid, 0)
        for _ in range(dut.latency + 2):  # nothing else comes out
            await ctx.tick()
            assert not ctx.get(dut.o_valid)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    flat = [int(v) for beat in results for v in beat]
    return flat[:len(xs)], latencies


def _check(dut, x0, xs, **kwargs):
    got, latencies = _run(dut, x0, xs, **kwargs)
    want = _golden(xs, x0, dut.n)
    mismatches = [(x, g, w) for x, g, w in zip(xs, got, want, strict=True) if g != w]
    assert not mismatches, f"n={dut.n} x0={x0}: (x, got, want) {mismatches[:10]}"
    assert latencies == [dut.latency] * len(latencies)
    return want


def test_parameters_are_checked():
    for kwargs, pattern in [
        (dict(lanes=0, x_bits=8, n=15), r"^lanes must be a positive integer, not 0$"),
        (dict(lanes=True, x_bits=8, n=15), r"^lanes .* not True$"),
        (dict(lanes=1.0, x_bits=8, n=15), r"^lanes .* not 1.0$"),
        (dict(lanes=1, x_bits=1, n=15), r"^x_bits must be an integer between 2 and 24, not 1$"),
        (dict(lanes=1, x_bits=25, n=15), r"^x_bits .* not 25$"),
        (dict(lanes=1, x_bits=8, n=0), r"^n must be an integer between 1 and 30, not 0$"),
        (dict(lanes=1, x_bits=8, n=31), r"^n .* not 31$"),
        (dict(lanes=1, x_bits=8, n=False), r"^n .* not False$"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            ShiftExp(**kwargs)
    with pytest.raises(ConfigError):  # the house's ValueError subclass
        ShiftExp(0, 8, 15)


@pytest.mark.parametrize("n, latency", [(15, 10), (23, 11), (4, 11), (1, 11), (30, 11),
                                        (16, 11), (14, 11), (7, 11)])
def test_latency_follows_the_quotient_bits(n, latency):
    dut = ShiftExp(2, 8, n)
    dut._MustUse__silence = True  # never elaborated: no warning for it
    assert dut.latency == latency == len(dut.stages) == 6 + dut.quotient_bits
    assert (1 << dut.quotient_bits) - 1 >= max(n, 30 - n)


def _scheme(x: torch.Tensor, x0: int, n: int, k_bits: int) -> torch.Tensor:
    """The pipeline's arithmetic, in int64: no clamp at n x0, a K-bit restoring division."""
    d = -x0
    xp = x + (x >> 1) - (x >> 4)
    y = xp - 1
    pos = y >= 0
    rem = torch.where(pos, y, ~y)
    ovf = rem >= d << k_bits
    q = torch.zeros_like(x)
    for step in reversed(range(k_bits)):
        diff = rem - (d << step)
        bit = diff >= 0
        rem = torch.where(bit, diff, rem)
        q |= bit.long() << step
    sat = pos & (ovf | (q >= 30 - n))
    clamp = ~pos & (ovf | (q > n) | ((q == n) & (rem != 0)))
    val = torch.where(pos, d + 1 + rem, 2 * d - rem)
    s = torch.where(pos, n + 1 + q, n - q)
    ok = ~(sat | clamp)
    assert bool(((val[ok] >= 2) & (val[ok] < 1 << 19)).all())
    assert bool(((s[ok] >= 0) & (s[ok] <= 30)).all())
    wide = torch.where(ok, val, 0) << torch.where(ok, s, 0)
    return torch.where(sat | (wide >= 1 << 32), INT31_MAX, torch.where(clamp, d, wide >> 1))


def test_division_scheme_matches_golden_for_every_n():
    rng = random.Random(7)
    x = torch.cat([
        torch.arange(-6000, 6000),
        torch.tensor([rng.randint(-(1 << 23), (1 << 23) - 1) for _ in range(20000)]),
        torch.tensor([-(1 << 23), (1 << 23) - 1, -(1 << 22), 1 << 22]),
    ]).long()
    for n in range(1, 31):
        k_bits = quotient_bits(n)
        lo = _x0_min(n)
        for x0 in sorted({-1, -2, -3, -12, -20, lo, lo + 1, lo // 2, rng.randint(lo, -1)}):
            if not lo <= x0 < 0:
                continue
            want = shift_exp(x, x0, n)
            # around the clamp n x0, the saturation edge and the quotient boundaries
            edges = torch.tensor([n * x0 + j for j in range(-40, 40)]
                                 + [x0 * j + t for j in range(-35, 35) for t in (-1, 0, 1)])
            edges = edges[(edges >= -(1 << 23)) & (edges < 1 << 23)]
            got = _scheme(x, x0, n, k_bits)
            assert torch.equal(got, want), (n, x0)
            assert torch.equal(_scheme(edges, x0, n, k_bits), shift_exp(edges, x0, n)), (n, x0)


@pytest.mark.parametrize("n, x0", [(15, -1), (15, -12), (15, _x0_min(15)), (4, -2),
                                   (4, _x0_min(4)), (23, -20), (23, _x0_min(23))])
def test_every_10_bit_input(n, x0):
    """Every x in [-512, 511], four lanes, en and i_valid low at random."""
    dut = ShiftExp(4, 10, n)
    want = _check(dut, x0, list(range(-512, 512)), seed=n * 1000 - x0)
    assert INT31_MAX in want or x0 < -1000  # positive x saturates, unless |x0| is large


@pytest.mark.parametrize("lanes, x_bits, n, x0s", [
    (1, 8, 15, (-1, -2, -12, -20, _x0_min(15))),
    (4, 16, 23, (-1, -2, -12, -20, _x0_min(23))),
    (1, 24, 4, (-1, -12, -20, _x0_min(4))),
    (4, 24, 15, (-2, -20, -4000, _x0_min(15))),
    (1, 12, 1, (-1, -20, _x0_min(1))),
    (1, 12, 30, (-1,)),
])
def test_random_inputs(lanes, x_bits, n, x0s):
    rng = random.Random(lanes * 100 + x_bits * 10 + n)
    lo, hi = -(1 << (x_bits - 1)), (1 << (x_bits - 1)) - 1
    for x0 in x0s:
        # anywhere; within 40 |x0| of 0 (every quotient); near the clamp at n x0 (when in range)
        ranges = [(lo, hi), (40 * x0, -40 * x0), (n * x0 - 8, n * x0 + 8)]
        ranges = [(max(lo, a), min(hi, b)) for a, b in ranges if max(lo, a) <= min(hi, b)]
        xs = [rng.randint(*rng.choice(ranges)) for _ in range(60 * lanes)] + [lo, hi, 0, -1, 1]
        _check(ShiftExp(lanes, x_bits, n), x0, xs, en_prob=0.6, valid_prob=0.8,
               seed=rng.randrange(1 << 30))


def test_back_to_back_with_en_always_high():
    dut = ShiftExp(2, 8, 23)
    _check(dut, -20, list(range(-128, 128)), en_prob=1.0, valid_prob=1.0)


@pytest.mark.parametrize("lanes, x_bits, n, x0", [
    (1, 2, 1, -1), (1, 2, 30, -1), (3, 2, 15, -2),
    (4, 12, 30, -1), (4, 12, 1, _x0_min(1)), (4, 12, 13, _x0_min(13)), (4, 12, 14, _x0_min(14)),
])
def test_every_input_at_the_extremes(lanes, x_bits, n, x0):
    """The narrowest input, the smallest and largest n, the largest |x0| (2**17 up to n = 13)."""
    xs = list(range(-(1 << (x_bits - 1)), 1 << (x_bits - 1)))
    _check(ShiftExp(lanes, x_bits, n), x0, xs, seed=x_bits * 100 + n)
