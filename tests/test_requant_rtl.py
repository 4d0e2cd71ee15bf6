"""The requantizer in amaranth.sim, element for element against ``golden.requantize``."""

import math
import random

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator
from streams import get, put

from golden import quantize_multiplier, requantize
from rtl.config import ConfigError
from rtl.requant import Requantizer

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def _simulate(dut, *testbenches, max_cycles=10_000):
    """Run until the non-background testbenches finish; fail, not hang, if beats go missing."""

    async def watchdog(ctx):
        for _ in range(max_cycles):
            await ctx.tick()
        raise AssertionError(f"testbenches still running after {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb, background in testbenches:
        sim.add_testbench(tb, background=background)
    sim.add_testbench(watchdog, background=True)
    sim.run()


def _settings(ctx, dut, zp, qmin, qmax, relu):
    ctx.set(dut.zero_point, zp)
    ctx.set(dut.qmin, qmin)
    ctx.set(dut.qmax, qmax)
    ctx.set(dut.relu, relu)


def _run(dut, elements, settings, *, in_stall=0.0, out_stall=0.0, seed=0):
    """Stream ``elements`` ((acc, bias, multiplier, shift) each) through ``dut``.

    Elements are packed into beats in order, ``dut.lanes`` per beat (the last beat padded with
    zeros); about one beat in four has ``last`` set, at random. ``settings`` is (zero_point,
    qmin, qmax, relu). Returns (one int64 result per element, lasts sent, lasts received).
    """
    n = dut.lanes
    padded = list(elements) + [(0, 0, 0, 0)] * (-len(elements) % n)
    rng = random.Random(seed)
    layout = dut.i.payload.shape()
    beats, lasts = [], []
    for b in range(len(padded) // n):
        chunk = padded[b * n:(b + 1) * n]
        lasts.append(int(rng.random() < 0.25))
        beats.append(layout.const({
            "acc": [e[0] for e in chunk], "bias": [e[1] for e in chunk],
            "multiplier": [e[2] for e in chunk], "shift": [e[3] for e in chunk],
            "last": lasts[-1],
        }))
    out = []

    async def source(ctx):
        _settings(ctx, dut, *settings)
        await put(ctx, dut.i, beats, stall=in_stall, rng=random.Random(seed + 1))

    async def sink(ctx):
        out.extend(await get(ctx, dut.o, len(beats), stall=out_stall, rng=random.Random(seed + 2)))

    _simulate(dut, (source, True), (sink, False))
    got = np.array([[int(x) for x in beat.data] for beat in out], dtype=np.int64)
    return got.reshape(-1)[:len(elements)], lasts, [int(beat.last) for beat in out]


def _golden(elements, settings):
    zp, qmin, qmax, relu = settings
    acc, bias, mult, shift = (torch.tensor([e[i] for e in elements], dtype=torch.int64)
                              for i in range(4))
    return requantize(acc[None], mult, shift, bias=bias, zero_point=zp, qmin=qmin, qmax=qmax,
                      relu=relu)[0].numpy()


def _random_elements(rng: random.Random, count: int, acc_bits: int,
                     settings=(0, -128, 127, False)):
    """Random (acc, bias, multiplier, shift) elements: accumulators over the whole range, small
    ones, extremes, and ones aimed at results inside the clamp ``settings`` give."""
    zp, qmin, qmax, relu = settings
    floor = max(qmin, zp) if relu else qmin
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    elements = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.5:  # log-uniform: every shift quantize_multiplier gives in [1e-6, 4)
            mult, shift = quantize_multiplier(math.exp(rng.uniform(math.log(1e-6), math.log(4.0))))
        elif kind < 0.7:
            mult, shift = quantize_multiplier(rng.uniform(1e-6, 4.0))
        elif kind < 0.9:  # a normalized multiplier with any shift in the supported range
            mult, shift = rng.randint(1 << 30, INT32_MAX), rng.randint(-31, 31)
        elif kind < 0.97:  # any int32 multiplier, negative and INT32_MIN included
            mult, shift = rng.choice([rng.randint(INT32_MIN, INT32_MAX), INT32_MIN]), \
                rng.randint(-31, 31)
        else:
            mult, shift = quantize_multiplier(1e-12)  # (0, 0): flushed to zero
        kind = rng.random()
        bias = 0 if kind < 0.4 else rng.randint(-5000, 5000) if kind < 0.75 else \
            rng.randint(INT32_MIN, INT32_MAX)
        kind = rng.random()
        real = mult * 2.0 ** (shift - 31)
        if kind < 0.45 and real != 0:  # aimed inside the output range
            target = round(rng.uniform(floor - zp - 2, qmax - zp + 2) / real) - bias
            if acc_bits == 32:  # acc + bias wraps, so any target is reachable
                target = (target - INT32_MIN) % (1 << 32) + INT32_MIN
            acc = max(lo, min(hi, target))
        elif kind < 0.7:
            acc = rng.randint(lo, hi)
        elif kind < 0.9:
            acc = rng.randint(-(1 << 12), 1 << 12)
        else:
            acc = rng.choice([lo, hi, 0, -1, 1, lo + 1, hi - 1])
        elements.append((acc, bias, mult, shift))
    return elements


def _check(got, want):
    np.testing.assert_array_equal(got, want, strict=True)


def test_parameters_are_checked():
    with pytest.raises(ConfigError, match=r"^lanes must be a positive integer, not 0$"):
        Requantizer(lanes=0)
    with pytest.raises(ConfigError, match=r"^acc_bits must be an integer between 17 and 32 "
                                          r"\(the arithmetic is int32's\), not 16$"):
        Requantizer(lanes=1, acc_bits=16)
    with pytest.raises(ConfigError, match=r"acc_bits .* not 33$"):
        Requantizer(lanes=1, acc_bits=33)
    with pytest.raises(ConfigError, match=r"^out_bits must be an integer between 2 and 16, "
                                          r"not 1$"):
        Requantizer(lanes=1, out_bits=1)
    with pytest.raises(ConfigError, match=r"out_bits .* not 17$"):
        Requantizer(lanes=1, out_bits=17)
    with pytest.raises(ConfigError, match=r"lanes .* not True$"):
        Requantizer(lanes=True)


@pytest.mark.parametrize("lanes, acc_bits, out_bits, clamp, relu, stall, count", [
    (1, 32, 8, (-128, 127), False, 0.0, 300),
    (3, 32, 8, (-5, 100), True, 0.4, 240),
    (3, 32, 8, (-128, 127), False, 0.0, 240),
    (16, 32, 8, (-128, 127), True, 0.3, 480),
    (3, 20, 8, (-128, 127), True, 0.3, 180),
    (2, 32, 16, (-(1 << 15), (1 << 15) - 1), False, 0.2, 160),
    (4, 24, 4, (-8, 7), False, 0.0, 160),
])
def test_random_beats_are_exact(lanes, acc_bits, out_bits, clamp, relu, stall, count):
    seed = lanes * 1000 + acc_bits * 10 + out_bits
    rng = random.Random(seed)
    qmin, qmax = clamp
    settings = (rng.randint(qmin, (qmin + qmax) // 2), qmin, qmax, relu)
    elements = _random_elements(rng, count, acc_bits, settings)
    dut = Requantizer(lanes=lanes, acc_bits=acc_bits, out_bits=out_bits)
    got, lasts_in, lasts_out = _run(dut, elements, settings, in_stall=stall, out_stall=stall,
                                    seed=seed)
    want = _golden(elements, settings)
    _check(got, want)
    assert lasts_out == lasts_in
    # The vectors must exercise more than the clamp: plenty of results land inside it.
    floor = max(qmin, settings[0]) if relu else qmin
    assert np.count_nonzero((want > floor) & (want < qmax)) > count // 4


# Hand-worked vectors (acc, bias, multiplier, shift) -> result with zero point 0 and the widest
# 16-bit clamp, so each rounding and saturation decision shows in the output.
HALF = 1 << 30  # the multiplier 0.5: SRDHM(x, HALF) = x / 2, a tie whenever x is odd
CORNERS = [
    # SaturatingRoundingDoublingHighMul ties round up (toward +inf)
    ((1, 0, HALF, 0), 1), ((-1, 0, HALF, 0), 0), ((3, 0, HALF, 0), 2), ((-3, 0, HALF, 0), -1),
    # RoundingDivideByPOT ties round away from zero; near-ties round to nearest
    ((10, 0, HALF, -1), 3), ((-10, 0, HALF, -1), -3), ((14, 0, HALF, -1), 4),
    ((-14, 0, HALF, -1), -4), ((48, 0, HALF, -4), 2), ((-48, 0, HALF, -4), -2),
    ((46, 0, HALF, -4), 1), ((-46, 0, HALF, -4), -1), ((50, 0, HALF, -4), 2),
    ((-50, 0, HALF, -4), -2), ((16, 0, HALF, -4), 1), ((-16, 0, HALF, -4), -1),
    # the largest right shift, ties at +-0.5
    ((INT32_MIN, 0, HALF, -31), -1), ((INT32_MAX, 0, HALF, -31), 1),
    ((INT32_MIN + 2, 0, HALF, -31), 0), ((INT32_MAX - 2, 0, HALF, -31), 0),
    # extreme accumulators with the largest multiplier
    ((INT32_MAX, 0, INT32_MAX, -20), 2048), ((INT32_MIN, 0, INT32_MAX, -20), -2048),
    ((INT32_MAX, 0, INT32_MAX, -31), 1), ((INT32_MIN, 0, INT32_MAX, -31), -1),
    # INT32_MIN * INT32_MIN: the one SRDHM overflow saturates to INT32_MAX (wrapping gives -)
    ((INT32_MIN, 0, INT32_MIN, -20), 2048), ((INT32_MIN, 0, INT32_MIN, -31), 1),
    # ... also reached through a left shift that saturates to INT32_MIN
    ((-5, 0, INT32_MIN, 30), (1 << 15) - 1),
    # the left shift saturates (wrapping would flip the sign); 31 fits only for 0 and -1
    ((3, 0, 1 << 12, 30), 4096), ((-3, 0, 1 << 12, 30), -4096), ((1, 0, 1 << 12, 31), 4096),
    ((-1, 0, 1 << 12, 31), -4096), ((0, 0, 1 << 12, 31), 0), ((1, 0, 1 << 12, 25), 64),
    # the bias wraps in int32 (saturation would keep the sign)
    ((INT32_MAX, 1, 1 << 12, 0), -4096), ((INT32_MIN, -1, 1 << 12, 0), 4096),
    ((INT32_MAX, INT32_MAX, HALF, 0), -1), ((100, -300, HALF, -2), -25),
    # multiplier 0 (quantize_multiplier's flush to zero) and a negative multiplier
    ((INT32_MAX, 0, 0, 0), 0), ((INT32_MIN, 12345, 0, 5), 0), ((1000, 0, -HALF, -2), -125),
]


def test_corner_vectors_worked_by_hand():
    elements = [e for e, _ in CORNERS]
    settings = (0, -(1 << 15), (1 << 15) - 1, False)
    want = np.array([w for _, w in CORNERS], dtype=np.int64)
    _check(_golden(elements, settings), want)  # the hand arithmetic agrees with the golden model
    got, _, _ = _run(Requantizer(lanes=3, out_bits=16), elements, settings)
    _check(got, want)


@pytest.mark.parametrize("settings", [(-3, -128, 127, True), (7, -5, 100, False),
                                      (7, -5, 100, True), (-128, -128, 127, True)])
def test_corner_vectors_with_zero_point_relu_and_clamp(settings):
    elements = [e for e, _ in CORNERS]
    got, _, _ = _run(Requantizer(lanes=16), elements, settings)
    _check(got, _golden(elements, settings))
    zp, qmin, qmax, relu = settings
    zero = list(got[[i for i, (e, _) in enumerate(CORNERS) if e[2] == 0]])
    assert zero == [max(qmin, zp)] * len(zero)  # multiplier 0 gives the zero point


def test_narrow_accumulator_is_sign_extended():
    lo, hi = -(1 << 19), (1 << 19) - 1
    elements = [(lo, 0, HALF, -10), (hi, 0, HALF, -10), (-1, 0, HALF, 0), (lo, -1, HALF, -10),
                (hi, 1 << 20, HALF, -10), (lo, INT32_MIN, HALF, -21)]
    settings = (0, -(1 << 15), (1 << 15) - 1, False)
    want = np.array([-256, 256, 0, -256, 768, 512], dtype=np.int64)
    _check(_golden(elements, settings), want)
    got, _, _ = _run(Requantizer(lanes=1, acc_bits=20, out_bits=16), elements, settings)
    _check(got, want)


def test_latency_is_measured_and_throughput_is_one_beat_per_cycle():
    dut = Requantizer(lanes=2)
    rng = random.Random(5)
    elements = _random_elements(rng, 2 * 8, 32)
    layout = dut.i.payload.shape()
    beats = [layout.const({"acc": [e[0] for e in pair], "bias": [e[1] for e in pair],
                           "multiplier": [e[2] for e in pair], "shift": [e[3] for e in pair],
                           "last": n == 7})
             for n, pair in enumerate(zip(elements[::2], elements[1::2], strict=True))]
    gap = 10  # one beat alone, then the rest back to back
    accepted, delivered, out = [], [], []

    async def driver(ctx):
        _settings(ctx, dut, 0, -128, 127, False)
        ctx.set(dut.o.ready, 1)
        for n, beat in enumerate(beats):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, beat)
            await ctx.tick()
            if n == 0:
                ctx.set(dut.i.valid, 0)
                await ctx.tick().repeat(gap)
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(3 * dut.latency)

    async def monitor(ctx):
        cycle = 0
        # sample() gives the values just before each edge: the handshakes that edge completes
        async for _, _, i_v, i_r, o_v, o_r, o_p in ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload):
            cycle += 1
            if i_v and i_r:
                accepted.append(cycle)
            if o_v and o_r:
                delivered.append(cycle)
                out.append(o_p)

    _simulate(dut, (driver, False), (monitor, True))
    assert dut.latency == len(Requantizer.STAGES) == 13
    assert len(accepted) == len(delivered) == len(beats)
    assert [d - a for a, d in zip(accepted, delivered, strict=True)] == [dut.latency] * len(beats)
    assert accepted[0] + gap < accepted[1]
    assert accepted[1:] == list(range(accepted[1], accepted[1] + len(beats) - 1))
    got = np.array([[int(x) for x in beat.data] for beat in out], dtype=np.int64).reshape(-1)
    _check(got, _golden(elements, (0, -128, 127, False)))
    assert [int(beat.last) for beat in out] == [0] * 7 + [1]


def test_pipeline_holds_while_output_is_not_ready():
    dut = Requantizer(lanes=1)
    # more beats than the pipeline has registers; results -38, -31, ..., 56: distinct
    elements = [(100 * n - 600, 0, HALF, -3) for n in range(dut.latency + 3)]
    layout = dut.i.payload.shape()
    beats = [layout.const({"acc": [e[0]], "bias": [0], "multiplier": [HALF], "shift": [-3],
                           "last": 0}) for e in elements]
    hold = 4 * dut.latency
    accepted = []
    out = []

    async def source(ctx):
        _settings(ctx, dut, 0, -(1 << 7), (1 << 7) - 1, False)
        ctx.set(dut.i.valid, 1)
        for beat in beats:
            ctx.set(dut.i.payload, beat)
            await ctx.tick().until(dut.i.ready)
            accepted.append(beat)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        await ctx.tick().repeat(hold)  # o.ready stays low: the pipeline fills and stops
        assert ctx.get(dut.o.valid) and not ctx.get(dut.i.ready)
        assert len(accepted) == dut.latency  # one beat per register, none lost or overwritten
        held = ctx.get(dut.o.payload)
        await ctx.tick().repeat(3)
        assert ctx.get(dut.o.payload) == held and len(accepted) == dut.latency
        out.extend(await get(ctx, dut.o, len(beats)))

    _simulate(dut, (source, True), (sink, False))
    got = np.array([int(beat.data[0]) for beat in out], dtype=np.int64)
    _check(got, _golden(elements, (0, -128, 127, False)))
