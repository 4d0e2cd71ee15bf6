"""cocotb regression for the tile engine, run by ``sim.regress`` under Verilator.

Layered like cocotb's matrix_multiplier example: a driver writes tiles into the harness's
stimulus memories, the design runs with no Python in the per-cycle loop, a monitor reads the
result memory back, the golden model (``golden.gemm_int``) says what every element must be, and
the checker compares all of them and the cycle count the mapper predicted.

The configuration arrives as JSON in ``TESSERA_CONFIG``; per-test figures (elements compared,
simulated cycles) are appended to the JSON-lines file named by ``TESSERA_STATS``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import cocotb
import numpy as np
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from golden import gemm_int
from mapping.timing import tile_stream_cycles
from rtl.config import EngineConfig
from rtl.tile import TileTiming
from sim.pack import pack, unpack

CONFIG = EngineConfig.from_dict(json.loads(os.environ["TESSERA_CONFIG"]))
DEPTH = int(os.environ.get("TESSERA_DEPTH", "2048"))
SEED = int(os.environ.get("TESSERA_SEED", "1"))
R, C = CONFIG.rows, CONFIG.cols
OS = CONFIG.dataflow == "os"
LO, HI = -(1 << (CONFIG.in_bits - 1)), (1 << (CONFIG.in_bits - 1)) - 1


@dataclass
class Tile:
    """One tile: ``os``: a (R, K), b (K, C); ``ws``: a (M, R), b (R, C) weights."""

    a: np.ndarray
    b: np.ndarray

    @property
    def extent(self) -> int:
        return self.a.shape[1] if OS else self.a.shape[0]

    @property
    def out_rows(self) -> int:
        return R if OS else self.a.shape[0]


def random_tile(rng: np.random.Generator, extent: int, lo: int = LO, hi: int = HI) -> Tile:
    shape_a, shape_b = ((R, extent), (extent, C)) if OS else ((extent, R), (R, C))
    return Tile(rng.integers(lo, hi + 1, shape_a), rng.integers(lo, hi + 1, shape_b))


def constant_tile(extent: int, a: int, b: int) -> Tile:
    shape_a, shape_b = ((R, extent), (extent, C)) if OS else ((extent, R), (R, C))
    return Tile(np.full(shape_a, a, dtype=np.int64), np.full(shape_b, b, dtype=np.int64))


class Driver:
    """Writes tiles into ``a_mem``/``b_mem`` in the order the engine consumes them."""

    def __init__(self, dut):
        self.dut = dut

    def load(self, tiles: list[Tile]) -> tuple[int, int]:
        a_words, b_words = [], []
        for t in tiles:
            if OS:
                k = t.extent
                a_words += [pack(t.a[:, i], CONFIG.in_bits, flag=i == k - 1) for i in range(k)]
                b_words += [pack(t.b[i, :], CONFIG.in_bits) for i in range(k)]
            else:
                b_words += [pack(t.b[i, :], CONFIG.in_bits) for i in range(R)]
                m = t.extent
                a_words += [pack(t.a[i, :], CONFIG.in_bits, flag=i == m - 1) for i in range(m)]
        if max(len(a_words), len(b_words)) > DEPTH:
            raise ValueError(f"stimulus of {max(len(a_words), len(b_words))} beats exceeds the "
                             f"harness memory depth {DEPTH}")
        for i, w in enumerate(a_words):
            self.dut.a_mem[i].value = w
        for i, w in enumerate(b_words):
            self.dut.b_mem[i].value = w
        return len(a_words), len(b_words)


class Monitor:
    """Reads ``n`` result beats back from ``c_mem``."""

    def __init__(self, dut):
        self.dut = dut

    def read(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rows, lasts = [], []
        for i in range(n):
            values, last = unpack(int(self.dut.c_mem[i].value), CONFIG.acc_bits, C)
            rows.append(values)
            lasts.append(last)
        return np.array(rows, dtype=np.int64).reshape(n, C), np.array(lasts, dtype=np.int64)


def golden(tiles: list[Tile], passes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Expected result beats, in the engine's output order, and their ``last`` flags."""
    rows, lasts = [], []
    for t in tiles:
        a, b = torch.from_numpy(t.a), torch.from_numpy(t.b)
        if passes > 1:  # the stimulus replayed `passes` times is one long tile
            a = a.repeat(1, passes) if OS else a.repeat(passes, 1)
            b = b.repeat(passes, 1) if OS else b
        block = gemm_int(a, b, in_bits=CONFIG.in_bits, acc_bits=CONFIG.acc_bits).numpy()
        if OS:
            block = block[::-1]  # the drain chain delivers the bottom row first
        rows.append(block)
        lasts += [0] * (block.shape[0] - 1) + [1]
    return np.concatenate(rows).astype(np.int64), np.array(lasts, dtype=np.int64)


class Checker:
    """Compares every element and flag; records the figures for the regression table."""

    def __init__(self, name: str):
        self.name = name

    def check(self, got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray],
              cycles: int) -> None:
        np.testing.assert_array_equal(got[0], want[0], strict=True,
                                      err_msg=f"{self.name}: result elements differ")
        np.testing.assert_array_equal(got[1], want[1], strict=True,
                                      err_msg=f"{self.name}: last flags differ")
        path = os.environ.get("TESSERA_STATS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"test": self.name, "elements": int(want[0].size),
                                    "cycles": cycles}) + "\n")


async def run(dut, name: str, tiles: list[Tile], *, stall: int = 0, passes: int = 1,
              check_cycles: bool | None = None) -> int:
    """Load, start, wait for done, check everything; returns the measured cycles."""
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.start.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    n_a, n_b = Driver(dut).load(tiles)
    n_c = sum(t.out_rows for t in tiles)
    if n_c > DEPTH:
        raise ValueError(f"{n_c} result beats exceed the harness memory depth {DEPTH}")
    dut.n_a.value, dut.n_b.value, dut.n_c.value = n_a, n_b, n_c
    dut.passes.value = passes
    dut.stall.value = stall
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    extents = [t.extent * passes for t in tiles]
    predicted = tile_stream_cycles(CONFIG, extents)
    budget = (predicted.cycles * (8 if stall else 2) + 1000) * 10
    await with_timeout(RisingEdge(dut.done), budget, "ns")
    cycles = int(dut.cycles.value)
    # Let anything the engine wrongly still has in flight come out, then count every beat.
    engine = TileTiming(CONFIG)
    await ClockCycles(dut.clk, engine.latency + R + 4)
    moved = {p: int(getattr(dut, f"{p}_beats").value) for p in "abc"}
    assert int(dut.c_pending.value) == 0, f"{name}: engine offers results beyond the {n_c} expected"
    assert moved == {"a": n_a * passes, "b": n_b * passes, "c": n_c}, \
        f"{name}: beats moved {moved}, expected a={n_a * passes} b={n_b * passes} c={n_c}"
    Checker(name).check(Monitor(dut).read(n_c), golden(tiles, passes), cycles)
    if check_cycles if check_cycles is not None else stall == 0:
        assert cycles == predicted.cycles, \
            f"{name}: measured {cycles} cycles, the cycle model predicts {predicted.cycles}"
    return cycles


def _rng(tag: str) -> np.random.Generator:
    return np.random.default_rng([SEED, sum(map(ord, tag))])


@cocotb.test()
async def random_tiles(dut):
    """Back-to-back random tiles of random extent; cycles must equal the model's."""
    rng = _rng("random")
    tiles = [random_tile(rng, int(rng.integers(1, 3 * R + 3))) for _ in range(24)]
    await run(dut, "random_tiles", tiles)


@cocotb.test()
async def random_tiles_with_stalls(dut):
    """Sources withhold and the sink refuses beats at random: results stay exact."""
    for stall in (64, 160):
        rng = _rng(f"stall{stall}")
        tiles = [random_tile(rng, int(rng.integers(1, 3 * R + 3))) for _ in range(6)]
        await run(dut, f"random_tiles_with_stalls[{stall}/256]", tiles, stall=stall)


@cocotb.test()
async def corner_values(dut):
    """-128 x -128, +127 x +127, -128 x +127 and zeros, one tile each, back to back."""
    k = 2 * R + 1
    tiles = [constant_tile(k, LO, LO), constant_tile(k, HI, HI), constant_tile(k, LO, HI),
             constant_tile(k, 0, 0), random_tile(_rng("mixed"), k, LO, LO + 1)]
    await run(dut, "corner_values", tiles)


@cocotb.test()
async def unit_extent(dut):
    """K = 1 (os) or M = 1 (ws) tiles back to back: drain spacing and weight reloads."""
    rng = _rng("unit")
    await run(dut, "unit_extent", [random_tile(rng, 1) for _ in range(10)])


@cocotb.test()
async def accumulator_range(dut):
    """Sums up to the accumulator's limits, and one past them (which wraps).

    Output-stationary: one tile with K long enough that (-128)*(-128)*K is the largest such sum
    below 2^(acc_bits-1), and one that goes past it, by replaying the stimulus (``passes``).
    Weight-stationary sums ``rows`` products per tile; it is driven with extreme values and a
    long stream of rows instead.
    """
    if OS:
        step = LO * LO
        k_max = ((1 << (CONFIG.acc_bits - 1)) - 1) // step
        chunk = min(64, k_max)
        for label, k_target in (("below", k_max), ("past", k_max + chunk)):
            passes = max(1, k_target // chunk)
            tile = constant_tile(chunk, LO, LO)
            tile.a[0, :] = HI  # row 0 approaches the negative limit instead
            tile.b[:, 0] = HI
            await run(dut, f"accumulator_range[{label}, K={chunk * passes}]", [tile],
                      passes=passes)
    else:
        rng = _rng("longstream")
        tiles = [random_tile(rng, min(DEPTH // 2, 1000), LO, LO + 1), constant_tile(64, LO, LO)]
        await run(dut, "accumulator_range[long stream]", tiles)


@cocotb.test()
async def long_run_throughput(dut):
    """Many full tiles back to back: the array must accept a beat on every cycle."""
    rng = _rng("throughput")
    extent = 4 * R
    count = max(2, min(16, (DEPTH - R * 16) // max(extent, R)))
    tiles = [random_tile(rng, extent) for _ in range(count)]
    cycles = await run(dut, "long_run_throughput", tiles)
    timing = tile_stream_cycles(CONFIG, [t.extent for t in tiles])
    assert timing.bubbles == 0 or not OS, "full tiles should never wait"
    assert cycles == timing.cycles
