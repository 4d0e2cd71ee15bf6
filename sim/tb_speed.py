"""cocotb module for ``benchmarks/sim_speed.py``: how fast the simulator runs, and at what cost.

``free_running``: the clock alone for a fixed span, no Python woken per cycle: the simulator's
own speed on this build. ``gemm_stream``: a long back-to-back stream of full tiles, loaded
through the backdoor, run to ``done`` and read back and checked; wall time includes all of that.
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer

from sim.tb_tile import CONFIG, DEPTH, OS, Checker, Driver, Monitor, golden, random_tile

CYCLES = int(os.environ.get("TESSERA_BENCH_CYCLES", "200000"))


def _record(row: dict) -> None:
    with open(os.environ["TESSERA_STATS"], "a") as f:
        f.write(json.dumps(row) + "\n")


@cocotb.test()
async def free_running(dut):
    Clock(dut.clk, 10, unit="ns").start()
    await ClockCycles(dut.clk, 2)
    t0 = time.perf_counter()
    await Timer(10 * CYCLES, "ns")
    _record({"test": "free_running", "cycles": CYCLES, "seconds": time.perf_counter() - t0})


@cocotb.test()
async def gemm_stream(dut):
    """One long tile (os: K = CYCLES; ws: M = CYCLES rows), replayed from memory."""
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    r, c = CONFIG.rows, CONFIG.cols
    chunk = min(DEPTH // 2, 1024)
    passes = max(1, CYCLES // chunk)
    tile = random_tile(np.random.default_rng(7), chunk)
    t0 = time.perf_counter()
    n_a, n_b = Driver(dut).load([tile])
    n_c = r if OS else chunk * passes
    dut.n_a.value, dut.n_b.value, dut.n_c.value = n_a, n_b, n_c
    dut.passes.value = passes
    dut.stall.value = 0
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    await RisingEdge(dut.done)
    cycles = int(dut.cycles.value)
    if OS:
        Checker("gemm_stream").check(Monitor(dut).read(n_c), golden([tile], passes), cycles)
    else:
        # The result memory wraps: it holds the last DEPTH rows, the tile's rows replayed.
        kept = min(DEPTH, n_c)
        rows, lasts = Monitor(dut).read(DEPTH)
        order = [(n_c - kept + i) % DEPTH for i in range(kept)]
        want_rows, _ = golden([tile])
        want = np.concatenate([want_rows] * (DEPTH // chunk + 2))[-kept:]
        np.testing.assert_array_equal(rows[order], want, strict=True)
        assert lasts[order][-1] == 1 and lasts[order][:-1].sum() == 0
    seconds = time.perf_counter() - t0
    macs = chunk * passes * r * c
    _record({"test": "gemm_stream", "cycles": cycles, "seconds": seconds, "macs": macs})
