"""The simulation memory behind the engine's port, in amaranth.sim."""

import random

import pytest
from amaranth.sim import Simulator

from fpga.memory import BramMemory
from rtl.config import ConfigError, EngineConfig
from rtl.memory import SimMemory


@pytest.mark.parametrize("memory", ["sim", "bram"])
@pytest.mark.parametrize("width, latency", [(8, 3), (4, 1), (16, 5), (1, 2)])
def test_unaligned_reads_and_writes_with_latency_and_stalls(width, latency, memory):
    # the FPGA's block-RAM memory keeps the simulation memory's contract (it never stalls)
    cfg = EngineConfig(rows=2, cols=2, mem_bytes_per_cycle=width, mem_latency=latency)
    dut = SimMemory(cfg, words=64) if memory == "sim" else BramMemory(cfg, words=64)
    rng = random.Random(width)
    reference = bytearray(64 * width)
    ops = []
    for _ in range(60):
        addr = rng.randrange(0, 62 * width)
        length = rng.randint(1, width)
        if rng.random() < 0.5:
            data = [rng.randrange(256) for _ in range(width)]
            ops.append(("w", addr, length, data))
        else:
            ops.append(("r", addr, length, None))
    expected_reads = []
    accepted_at = []
    returned_at = []

    async def driver(ctx):
        if memory == "sim":
            ctx.set(dut.stall, 90)
        cycle = 0
        for kind, addr, length, data in ops:
            ctx.set(dut.port.req.valid, 1)
            ctx.set(dut.port.req.payload.write, kind == "w")
            ctx.set(dut.port.req.payload.addr, addr)
            ctx.set(dut.port.req.payload.length, length)
            for i in range(width):
                ctx.set(dut.port.req.payload.data[i], data[i] if data else 0)
            while True:
                _, _, ready = await ctx.tick().sample(dut.port.req.ready)
                cycle += 1
                if ready:
                    break
            if kind == "w":
                reference[addr:addr + length] = bytes(data[:length])
            else:
                expected_reads.append(bytes(reference[addr:addr + length])
                                      + bytes(width - length))
                accepted_at.append(cycle)
        ctx.set(dut.port.req.valid, 0)

    async def monitor(ctx):
        got = []
        cycle = 0
        async for _, _, valid, payload in ctx.tick().sample(dut.port.rdata.valid,
                                                            dut.port.rdata.payload):
            cycle += 1
            if valid:
                got.append(bytes(payload))
                returned_at.append(cycle)
            if cycle > 2000:
                break
        assert got == expected_reads
        # every read returns exactly `latency` cycles after it was accepted
        assert [b - a for a, b in zip(accepted_at, returned_at, strict=True)] == \
            [latency] * len(got)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver, background=True)
    sim.add_testbench(monitor)
    sim.run()


def test_memory_size_is_checked():
    with pytest.raises(ConfigError, match="power of two"):
        SimMemory(EngineConfig(), words=1000)
