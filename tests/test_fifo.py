"""The FPGA-minded FIFOs of rtl/fifo.py, cycle for cycle against Amaranth's own."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.sim import Simulator

from rtl.config import ConfigError
from rtl.fifo import HeadRegisterFIFO, RegisterFIFO


@pytest.mark.parametrize("ours, theirs, depth", [
    (HeadRegisterFIFO, SyncFIFOBuffered, 2), (HeadRegisterFIFO, SyncFIFOBuffered, 3),
    (HeadRegisterFIFO, SyncFIFOBuffered, 8), (HeadRegisterFIFO, SyncFIFOBuffered, 64),
    (RegisterFIFO, SyncFIFO, 1), (RegisterFIFO, SyncFIFO, 2), (RegisterFIFO, SyncFIFO, 5),
])
@pytest.mark.parametrize("pressure", [0.2, 0.5, 0.8])   # chance a cycle reads
def test_fifo_matches_amaranth_cycle_for_cycle(ours, theirs, depth, pressure):
    """Same w_rdy, r_rdy, level and head data every cycle, under random writes and reads
    (with fewer reads than writes the FIFOs fill up, with more they run empty)."""
    m = Module()
    m.submodules.ours = a = ours(width=16, depth=depth)
    m.submodules.theirs = b = theirs(width=16, depth=depth)
    rng = random.Random(depth * 1000 + int(pressure * 10))
    seen = {"full": 0, "empty": 0}
    mismatches = []

    async def bench(ctx):
        for cycle in range(1500):
            w_en, r_en, value = rng.random() < 0.5, rng.random() < pressure, rng.getrandbits(16)
            for fifo in (a, b):
                ctx.set(fifo.w_en, w_en)
                ctx.set(fifo.w_data, value)
                ctx.set(fifo.r_en, r_en)
            state = [tuple(ctx.get(s) for s in (f.w_rdy, f.r_rdy, f.level)) for f in (a, b)]
            heads = [ctx.get(f.r_data) if ctx.get(f.r_rdy) else None for f in (a, b)]
            if state[0] != state[1] or heads[0] != heads[1]:
                mismatches.append((cycle, state, heads))
            seen["full"] += not state[1][0]
            seen["empty"] += not state[1][1]
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert mismatches == []
    assert seen["empty"]
    assert seen["full"] or pressure >= 0.5   # fewer reads than writes: it fills


@pytest.mark.parametrize("fifo, least", [(HeadRegisterFIFO, 2), (RegisterFIFO, 1)])
def test_fifo_depth_is_checked(fifo, least):
    with pytest.raises(ConfigError, match=f"depth must be at least {least}, not {least - 1}"):
        fifo(width=8, depth=least - 1)
