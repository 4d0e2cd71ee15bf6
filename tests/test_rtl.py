"""Unit tests of the PE, the array and the tile engine in amaranth.sim (no compiler needed)."""

import random

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator
from streams import get, put

from golden import gemm_int
from mapping.timing import tile_stream_cycles
from rtl.config import ConfigError, EngineConfig
from rtl.pe import PE
from rtl.skew import Skew
from rtl.tile import TileEngine, TileTiming, a_layout, b_layout


def _simulate(dut, *testbenches):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb, background in testbenches:
        sim.add_testbench(tb, background=background)
    sim.run()


def test_pe_parameters_are_checked():
    with pytest.raises(ConfigError, match="dataflow must be one of os, ws, not 'xs'"):
        PE(dataflow="xs")
    with pytest.raises(ConfigError, match=r"acc_bits \(10\) is too narrow"):
        PE(in_bits=8, acc_bits=10)


@pytest.mark.parametrize("acc_bits", [16, 32])
def test_os_pe_accumulates_wraps_and_drains(acc_bits):
    pe = PE(dataflow="os", in_bits=8, acc_bits=acc_bits)
    rng = random.Random(acc_bits)
    pairs = [(-128, -128)] * 3 + [(rng.randint(-128, 127), rng.randint(-128, 127))
                                  for _ in range(5)]
    total = sum(a * b for a, b in pairs)
    wrapped = (total + (1 << (acc_bits - 1))) % (1 << acc_bits) - (1 << (acc_bits - 1))

    async def tb(ctx):
        ctx.set(pe.c_in, 77)
        for n, (a, b) in enumerate(pairs):
            ctx.set(pe.a_in, a)
            ctx.set(pe.b_in, b)
            ctx.set(pe.a_last_in, n == len(pairs) - 1)
            await ctx.tick()
            assert ctx.get(pe.a_out) == a and ctx.get(pe.b_out) == b
        ctx.set(pe.a_last_in, 0)
        ctx.set(pe.a_in, 0)
        ctx.set(pe.b_in, 0)
        for _ in range(PE.latency - 1):
            await ctx.tick()
            assert ctx.get(pe.c_out) == 77  # the last product is still in the product registers
        await ctx.tick()
        assert ctx.get(pe.c_out) == wrapped  # one link register after the capture
        await ctx.tick()
        assert ctx.get(pe.c_out) == 77  # then the chain carries what came from above

    _simulate(pe, (tb, False))


def test_ws_pe_swaps_weights_with_the_wavefront():
    pe = PE(dataflow="ws", in_bits=8, acc_bits=32)

    async def tb(ctx):
        ctx.set(pe.w_in, -7)
        ctx.set(pe.w_shift, 1)
        await ctx.tick()
        ctx.set(pe.w_shift, 0)
        assert ctx.get(pe.w_out) == -7
        ctx.set(pe.a_in, 5)
        ctx.set(pe.psum_in, 1000)
        ctx.set(pe.a_swap_in, 1)  # the new weight applies to this product already
        await ctx.tick()
        # the product registers hold 5 * -7; the partial sum it meets comes latency-1 cycles
        # after the operands
        ctx.set(pe.a_swap_in, 0)
        ctx.set(pe.w_in, 9)
        ctx.set(pe.w_shift, 1)  # loading the next weight does not disturb the active one
        ctx.set(pe.a_in, -128)
        await ctx.tick()
        assert ctx.get(pe.w_out) == 9
        ctx.set(pe.w_shift, 0)
        ctx.set(pe.a_in, 0)
        for _ in range(PE.latency - 3):
            await ctx.tick()
        ctx.set(pe.psum_in, 1000)
        await ctx.tick()
        assert ctx.get(pe.psum_out) == 1000 - 35
        ctx.set(pe.psum_in, -1)
        await ctx.tick()
        assert ctx.get(pe.psum_out) == -1 + 896

    _simulate(pe, (tb, False))


def test_skew_delays_each_lane():
    skew = Skew(8, [0, 1, 3])
    assert skew.latency == 3

    async def tb(ctx):
        seen = []
        for t in range(6):
            for k in range(3):
                ctx.set(skew.i[k], 10 * t + k)
            seen.append([ctx.get(skew.o[k]) for k in range(3)])
            await ctx.tick()
        assert [s[0] for s in seen] == [0, 10, 20, 30, 40, 50]
        assert [s[1] for s in seen[1:]] == [1, 11, 21, 31, 41]
        assert [s[2] for s in seen[3:]] == [2, 12, 22]

    _simulate(skew, (tb, False))
    with pytest.raises(ConfigError, match="non-negative"):
        Skew(8, [0, -1])


def _tiles(cfg, rng, count, max_extent):
    tiles = []
    for _ in range(count):
        e = int(rng.integers(1, max_extent + 1))
        a_shape, b_shape = ((cfg.rows, e), (e, cfg.cols)) if cfg.dataflow == "os" else \
            ((e, cfg.rows), (cfg.rows, cfg.cols))
        tiles.append((rng.integers(-128, 128, a_shape), rng.integers(-128, 128, b_shape)))
    return tiles


def _run_engine(cfg, tiles, stall):
    dut = TileEngine(cfg)
    al, bl = a_layout(cfg), b_layout(cfg)
    a_beats, b_beats, n_out = [], [], 0
    for a, b in tiles:
        if cfg.dataflow == "os":
            k = a.shape[1]
            a_beats += [al.const({"data": a[:, i].tolist(), "last": i == k - 1}) for i in range(k)]
            b_beats += [bl.const(b[i].tolist()) for i in range(k)]
            n_out += cfg.rows
        else:
            b_beats += [bl.const(b[i].tolist()) for i in range(cfg.rows)]
            m = a.shape[0]
            a_beats += [al.const({"data": a[i].tolist(), "last": i == m - 1}) for i in range(m)]
            n_out += m
    out, stamps = [], {}

    async def source_a(ctx):
        await put(ctx, dut.a, a_beats, stall=stall, rng=random.Random(2))

    async def source_b(ctx):
        await put(ctx, dut.b, b_beats, stall=stall, rng=random.Random(3))

    async def sink(ctx):
        out.extend(await get(ctx, dut.c, n_out, stall=stall, rng=random.Random(4)))

    async def clock(ctx):
        n = 0
        # sample() gives the values just before each edge: the handshakes that edge completes
        async for _, _, a_v, a_r, b_v, b_r, c_v, c_r in ctx.tick().sample(
                dut.a.valid, dut.a.ready, dut.b.valid, dut.b.ready, dut.c.valid, dut.c.ready):
            n += 1
            if c_v and c_r:
                stamps["last_out"] = n
            if ((a_v and a_r) or (b_v and b_r)) and "first_in" not in stamps:
                stamps["first_in"] = n

    _simulate(dut, (source_a, True), (source_b, True), (clock, True), (sink, False))
    return out, stamps


@pytest.mark.parametrize("dataflow", ["os", "ws"])
@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 3), (3, 5), (4, 4)])
@pytest.mark.parametrize("stall", [0.0, 0.35])
def test_tile_engine_is_exact(dataflow, rows, cols, stall):
    cfg = EngineConfig(rows=rows, cols=cols, dataflow=dataflow, acc_bits=20)
    rng = np.random.default_rng(rows * 100 + cols + int(stall * 10))
    tiles = _tiles(cfg, rng, 5, 2 * rows + 2)
    out, stamps = _run_engine(cfg, tiles, stall)
    got = np.array([[int(x) for x in beat.data] for beat in out], dtype=np.int64)
    lasts = [int(beat.last) for beat in out]
    want, want_last = [], []
    for a, b in tiles:
        block = gemm_int(torch.from_numpy(a), torch.from_numpy(b), acc_bits=20).numpy()
        want.append(block[::-1] if dataflow == "os" else block)
        want_last += [0] * (block.shape[0] - 1) + [1]
    np.testing.assert_array_equal(got, np.concatenate(want), strict=True)
    assert lasts == want_last
    if stall == 0:
        # With streams that never stall, the cycle model is exact.
        extents = [a.shape[1] if dataflow == "os" else a.shape[0] for a, _ in tiles]
        measured = stamps["last_out"] - stamps["first_in"] + 1
        assert measured == tile_stream_cycles(cfg, extents).cycles


def test_latencies_are_stated():
    os_ = TileTiming(EngineConfig(rows=3, cols=5, dataflow="os"))
    ws = TileTiming(EngineConfig(rows=3, cols=5, dataflow="ws"))
    # R+C-2 hops, the last PE's two product registers and its sum register, the input register
    # and deskew together one more (+ the drain link)
    assert PE.latency == 3
    assert os_.latency == 3 + 5 + 3
    assert ws.latency == 3 + 5 + 2
    assert os_.min_tile_cycles == 3 and ws.min_tile_cycles == 1
    assert ws.weight_swap_cycles == 3 + 5 - 1
