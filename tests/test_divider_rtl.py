"""The dividers in amaranth.sim, every quotient and remainder against Python's ``//`` and ``%``."""

import itertools
import random

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from rtl.divider import PipelinedDivider, SequentialDivider

INT31_MAX = (1 << 31) - 1


def _expected(n, d, dividend_bits, divisor_bits):
    """Python's floor division, and the documented result for a zero divisor."""
    if d == 0:
        return (1 << dividend_bits) - 1, n % (1 << divisor_bits)
    return n // d, n % d


def _simulate(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def _extremes(dividend_bits, divisor_bits):
    """Pairs at the edges of both ranges (the zero divisor included)."""
    n_max, d_max = (1 << dividend_bits) - 1, (1 << divisor_bits) - 1
    dividends = sorted({0, 1, 2, n_max, n_max - 1, 1 << (dividend_bits - 1), d_max, d_max + 1})
    divisors = sorted({0, 1, 2, 3, d_max, d_max - 1, 1 << (divisor_bits - 1)})
    return [(n, d) for n in dividends for d in divisors if n <= n_max and 0 <= d <= d_max]


def _random_pairs(rng, count, dividend_bits, divisor_bits):
    """Random pairs: uniform, log-uniform (quotients of every size) and divisors above the
    dividend."""
    pairs = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.3:
            n, d = rng.getrandbits(dividend_bits), rng.getrandbits(divisor_bits)
        elif kind < 0.8:
            n = rng.getrandbits(rng.randint(1, dividend_bits))
            d = rng.getrandbits(rng.randint(1, divisor_bits))
        else:
            d = rng.getrandbits(divisor_bits)
            n = rng.randint(0, d)
        pairs.append((n, d))
    return pairs


def _run_pipelined(dut, pairs, *, p_en=0.7, p_valid=0.7, seed=0, max_cycles=50_000):
    """Send ``pairs`` through ``dut`` (``dut.lanes`` per input, the last padded), with ``en``
    and ``i_valid`` low at random. Returns (results, per input the ``en`` cycles it took)."""
    n = dut.lanes
    padded = list(pairs) + [(0, 1)] * (-len(pairs) % n)
    beats = [padded[i:i + n] for i in range(0, len(padded), n)]
    rng = random.Random(seed)
    taken, delivered, results = [], [], []

    async def tb(ctx):
        pending = list(beats)
        en_cycle = 0
        for _ in range(max_cycles):
            if len(delivered) == len(beats):
                break
            en = rng.random() < p_en
            valid = bool(pending) and rng.random() < p_valid
            ctx.set(dut.en, en)
            ctx.set(dut.i_valid, valid)
            if pending:  # the data is driven even when not valid, to be ignored
                ctx.set(dut.dividend, [p[0] for p in pending[0]])
                ctx.set(dut.divisor, [p[1] for p in pending[0]])
            if en and valid:
                taken.append(en_cycle)
                pending.pop(0)
            if en and ctx.get(dut.o_valid):
                delivered.append(en_cycle)
                results.extend(zip(ctx.get(dut.quotient), ctx.get(dut.remainder), strict=True))
            en_cycle += en
            await ctx.tick()
        else:
            raise AssertionError(f"results still missing after {max_cycles} cycles")
        # nothing more comes out
        ctx.set(dut.en, 1)
        ctx.set(dut.i_valid, 0)
        for _ in range(dut.latency + 2):
            assert not ctx.get(dut.o_valid)
            await ctx.tick()

    _simulate(dut, tb)
    assert len(taken) == len(delivered) == len(beats)
    latencies = [b - a for a, b in zip(taken, delivered, strict=True)]
    return [(int(q), int(r)) for q, r in results[:len(pairs)]], latencies


def _check_pipelined(lanes, dividend_bits, divisor_bits, pairs, seed):
    dut = PipelinedDivider(lanes, dividend_bits, divisor_bits)
    got, latencies = _run_pipelined(dut, pairs, seed=seed)
    want = [_expected(n, d, dividend_bits, divisor_bits) for n, d in pairs]
    bad = [(p, g, w) for p, g, w in zip(pairs, got, want, strict=True) if g != w]
    assert not bad, f"{len(bad)} wrong, e.g. (n, d), got, want: {bad[:5]}"
    assert latencies == [dut.latency] * len(latencies) and dut.latency == dividend_bits


def test_parameters_are_checked():
    for args, pattern in [
        ((0, 8, 8), r"^lanes must be a positive integer, not 0$"),
        ((True, 8, 8), r"^lanes .* not True$"),
        ((1, 0, 1), r"^dividend_bits must be an integer between 1 and 64, not 0$"),
        ((1, 65, 8), r"^dividend_bits .* not 65$"),
        ((1, 8.0, 8), r"^dividend_bits .* not 8\.0$"),
        ((1, 8, 0), r"^divisor_bits must be an integer between 1 and dividend_bits \(8\), "
                    r"not 0$"),
        ((1, 8, 9), r"^divisor_bits .* not 9$"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            PipelinedDivider(*args)
        if type(args[0]) is int and args[0] == 1:  # lanes aside, the same widths
            with pytest.raises(ValueError, match=pattern):
                SequentialDivider(*args[1:])
    # the edges of the ranges are accepted (and elaborate)
    for dut, steps in [(PipelinedDivider(1, 64, 64), 64),
                       (PipelinedDivider(lanes=2, dividend_bits=1, divisor_bits=1), 1)]:
        assert dut.latency == steps
        Fragment.get(dut, None)
    dut = SequentialDivider(64, 1)
    assert dut.cycles == 65
    Fragment.get(dut, None)


@pytest.mark.parametrize("lanes, dividend_bits, divisor_bits", [
    (1, 6, 4), (3, 6, 6), (3, 6, 1), (1, 3, 3), (2, 1, 1), (1, 2, 1), (3, 8, 5), (2, 7, 7),
])
def test_pipelined_every_pair_of_small_widths(lanes, dividend_bits, divisor_bits):
    pairs = list(itertools.product(range(1 << dividend_bits), range(1 << divisor_bits)))
    random.Random(lanes + 10 * dividend_bits).shuffle(pairs)
    _check_pipelined(lanes, dividend_bits, divisor_bits, pairs, seed=dividend_bits + divisor_bits)


@pytest.mark.parametrize("lanes", [1, 3])
@pytest.mark.parametrize("dividend_bits, divisor_bits, count", [(31, 31, 600), (46, 32, 400),
                                                                (32, 16, 200)])
def test_pipelined_random_and_extremes(lanes, dividend_bits, divisor_bits, count):
    rng = random.Random(lanes * 100 + dividend_bits)
    pairs = _extremes(dividend_bits, divisor_bits)
    if (dividend_bits, divisor_bits) == (31, 31):  # softmax's (2**31 - 1) // s
        pairs += [(INT31_MAX, d) for d in (1, 2, 3, 1 << 30, INT31_MAX, INT31_MAX - 1)]
    pairs += _random_pairs(rng, count, dividend_bits, divisor_bits)
    rng.shuffle(pairs)
    _check_pipelined(lanes, dividend_bits, divisor_bits, pairs, seed=lanes + dividend_bits)


def test_pipelined_division_by_zero():
    n46, n31 = (1 << 46) - 1, INT31_MAX
    for bits, pairs, want in [
        ((46, 32), [(n46, 0), (0x2F00_1234_5678, 0), (5, 0)],
         [(n46, (1 << 32) - 1), (n46, 0x1234_5678), (n46, 5)]),
        ((31, 31), [(n31, 0), (0, 0)], [(n31, n31), (n31, 0)]),
        ((6, 4), [(0b110101, 0)], [(63, 0b0101)]),
    ]:
        dut = PipelinedDivider(2, *bits)
        got, _ = _run_pipelined(dut, pairs, seed=1)
        assert got == want


def test_pipelined_latency_back_to_back():
    """With ``en`` high throughout: a result exactly ``latency`` cycles after its input, one
    per cycle back to back, and one alone after a gap."""
    dut = PipelinedDivider(1, 8, 8)
    inputs = [(200, 7)] + [(n, 3 + n % 5) for n in range(30, 50)]
    gap = 12
    taken, delivered, results = [], [], []

    async def tb(ctx):
        ctx.set(dut.en, 1)
        pending = list(inputs)
        for cycle in range(200):
            valid = bool(pending) and not 1 <= cycle <= gap
            ctx.set(dut.i_valid, valid)
            if valid:
                ctx.set(dut.dividend, [pending[0][0]])
                ctx.set(dut.divisor, [pending[0][1]])
                taken.append(cycle)
                pending.pop(0)
            if ctx.get(dut.o_valid):
                delivered.append(cycle)
                results.append((ctx.get(dut.quotient[0]), ctx.get(dut.remainder[0])))
            await ctx.tick()

    _simulate(dut, tb)
    assert dut.latency == 8
    assert delivered == [c + dut.latency for c in taken]
    assert taken == [0] + list(range(gap + 1, gap + len(inputs)))
    assert results == [(n // d, n % d) for n, d in inputs]


def test_pipelined_holds_while_en_is_low():
    dut = PipelinedDivider(1, 8, 4)
    held = []

    async def tb(ctx):
        ctx.set(dut.en, 1)
        ctx.set(dut.i_valid, 1)
        ctx.set(dut.dividend, [100])
        ctx.set(dut.divisor, [7])
        await ctx.tick()
        ctx.set(dut.i_valid, 0)
        await ctx.tick().repeat(dut.latency - 2)
        ctx.set(dut.en, 0)  # one en cycle short of the output
        for _ in range(20):
            await ctx.tick()
            assert not ctx.get(dut.o_valid)
        await ctx.tick()
        ctx.set(dut.en, 1)
        await ctx.tick()
        ctx.set(dut.en, 0)
        for _ in range(5):  # out, and holding
            held.append((ctx.get(dut.o_valid), ctx.get(dut.quotient[0]),
                         ctx.get(dut.remainder[0])))
            await ctx.tick()
        ctx.set(dut.en, 1)
        await ctx.tick()
        assert not ctx.get(dut.o_valid)

    _simulate(dut, tb)
    assert held == [(1, 14, 2)] * 5


def _run_sequential(dut, pairs, *, seed=0, p_idle=0.3):
    """Divide ``pairs`` one by one: ``start`` after a random idle time (sometimes in the
    ``done`` cycle itself), and at random while ``busy`` (to be ignored). Returns the
    results and, per division, the cycles from ``start`` to ``done``."""
    rng = random.Random(seed)
    results, cycles = [], []

    async def tb(ctx):
        for n, d in pairs:
            while rng.random() < p_idle:  # idle; the last result holds
                if results:
                    assert (ctx.get(dut.quotient), ctx.get(dut.remainder)) == results[-1]
                assert not ctx.get(dut.busy)
                await ctx.tick()
                assert not ctx.get(dut.done)
            ctx.set(dut.start, 1)
            ctx.set(dut.dividend, n)
            ctx.set(dut.divisor, d)
            await ctx.tick()
            count = 1
            while True:
                # start and other operands while busy are ignored
                junk = rng.random() < 0.3
                ctx.set(dut.start, junk)
                ctx.set(dut.dividend, rng.getrandbits(dut.dividend_bits) if junk else n)
                ctx.set(dut.divisor, rng.getrandbits(dut.divisor_bits) if junk else d)
                if ctx.get(dut.done):
                    break
                assert ctx.get(dut.busy)
                await ctx.tick()
                count += 1
                assert count <= dut.cycles + 1, "no done"
            assert not ctx.get(dut.busy)
            ctx.set(dut.start, 0)
            cycles.append(count)
            results.append((ctx.get(dut.quotient), ctx.get(dut.remainder)))
        # done was a one-cycle pulse; the last result holds
        for _ in range(3):
            await ctx.tick()
            assert not ctx.get(dut.done) and not ctx.get(dut.busy)
            assert (ctx.get(dut.quotient), ctx.get(dut.remainder)) == results[-1]

    _simulate(dut, tb)
    return results, cycles


@pytest.mark.parametrize("dividend_bits, divisor_bits, pairs", [
    (6, 4, list(itertools.product(range(64), range(16)))),
    (5, 5, list(itertools.product(range(32), range(32)))),
    (1, 1, [(0, 0), (0, 1), (1, 0), (1, 1)]),
    (31, 31, _extremes(31, 31) + [(INT31_MAX, d) for d in (1, 2, 3, 1 << 30, INT31_MAX)]
     + _random_pairs(random.Random(31), 400, 31, 31)),
    (46, 32, _extremes(46, 32) + _random_pairs(random.Random(46), 400, 46, 32)),
])
def test_sequential(dividend_bits, divisor_bits, pairs):
    dut = SequentialDivider(dividend_bits, divisor_bits)
    got, cycles = _run_sequential(dut, pairs, seed=dividend_bits)
    want = [_expected(n, d, dividend_bits, divisor_bits) for n, d in pairs]
    bad = [(p, g, w) for p, g, w in zip(pairs, got, want, strict=True) if g != w]
    assert not bad, f"{len(bad)} wrong, e.g. (n, d), got, want: {bad[:5]}"
    assert dut.cycles == dividend_bits + 1
    assert cycles == [dut.cycles] * len(pairs)


def test_sequential_division_by_zero():
    dut = SequentialDivider(46, 32)
    pairs = [((1 << 46) - 1, 0), (0x2F00_1234_5678, 0), (0, 0)]
    got, _ = _run_sequential(dut, pairs, p_idle=0.0)
    n46 = (1 << 46) - 1
    assert got == [(n46, (1 << 32) - 1), (n46, 0x1234_5678), (n46, 0)]
