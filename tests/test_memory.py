"""The simulation memory behind the engine's port, and the block memories inside the engine,
in amaranth.sim."""

import random
from types import SimpleNamespace

import pytest
from amaranth.back import verilog
from amaranth.hdl import unsigned
from amaranth.sim import Simulator
from block_memory_model import registered_reads

from fpga.memory import BramMemory
from rtl.config import ConfigError, EngineConfig
from rtl.memory import BlockMemory, SimMemory, _slices, block_slice_bits


@pytest.mark.parametrize("memory", ["sim", "bram"])
@pytest.mark.parametrize("width, latency", [(8, 3), (4, 1), (16, 5), (1, 2), (8, 6), (4, 16)])
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


@pytest.mark.parametrize("depth", [40, 600])   # one block RAM deep at 36 and at 18 bits
def test_block_memory_output_register_advances_with_enable(depth):
    """A registered read port: ``data`` is the row read two enabled cycles earlier, and holds
    while ``en`` is low; checked against a model over random reads, writes and enables."""
    dut = BlockMemory(shape=unsigned(40), depth=depth)
    rd = dut.read_port(output_register=True)
    wr = dut.write_port()
    rng = random.Random(depth)
    hot = rng.sample(range(depth), 24)   # rows read and written often, across the depth
    steps = [(rng.choice(hot), rng.random() < 0.7, rng.choice(hot),
              rng.random() < 0.5, rng.getrandbits(40)) for _ in range(300)]
    seen = []

    async def bench(ctx):
        for addr, en, w_addr, w_en, w_data in steps:
            ctx.set(rd.addr, addr)
            ctx.set(rd.en, en)
            ctx.set(wr.addr, w_addr)
            ctx.set(wr.en, w_en)
            ctx.set(wr.data, w_data)
            await ctx.tick()
            seen.append(ctx.get(rd.data))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    expected = registered_reads(steps, depth, width=40)
    assert seen == expected
    assert len(set(seen)) > 50   # the reads saw written rows, not only zeros


def test_block_memory_output_register_is_the_ecp5_block_ram_own():
    """On ECP5 a registered read port is a DP16KD per slice with REGMODE_B = OUTREG, in the
    mode one block RAM deep; the fabric path would keep a register outside it."""
    for depth, bits, slices in ((512, 36, 2), (1024, 18, 3), (2048, 9, 5)):
        top = BlockMemory(shape=unsigned(40), depth=depth)
        rd = top.read_port(output_register=True)
        wr = top.write_port()
        text = verilog.convert(top, platform=SimpleNamespace(family="ecp5"),
                               ports=[rd.addr, rd.en, rd.data, wr.addr, wr.en, wr.data])
        assert text.count("DP16KD #(") == slices
        assert text.count(f".DATA_WIDTH_B(32'd{bits})") == slices
        assert text.count('.REGMODE_B("OUTREG")') == slices
    two = BlockMemory(shape=unsigned(8), depth=16)
    ports = [two.read_port(output_register=True), two.write_port(), two.write_port()]
    with pytest.raises(ConfigError, match="exactly one write port, not 2"):
        verilog.convert(two, platform=SimpleNamespace(family="ecp5"),
                        ports=[ports[0].data, ports[1].en, ports[2].en])


def test_block_memory_byte_enables_take_a_lane_each():
    """With a write granularity, a 9/18/36-bit slice holds one granule per 9-bit lane (so 8, 16,
    32 columns of bytes) and a 1/2/4-bit slice lies inside one granule; other cuts are refused."""
    for depth, per_slice in ((512, 32), (1024, 16), (2048, 8), (4096, 4), (16384, 1)):
        slices = _slices(64, block_slice_bits(depth), 8)
        assert [s.hi - s.lo for s in slices] == [per_slice] * (64 // per_slice)
        for s in slices:
            assert s.enables == tuple(range(s.lo // 8, (s.hi - 1) // 8 + 1))
    assert _slices(64, 36, 8)[0].pins == \
        tuple(range(8)) + tuple(range(9, 17)) + tuple(range(18, 26)) + tuple(range(27, 35))
    assert [s.pins for s in _slices(40, 36, None)] == [tuple(range(36)), (0, 1, 2, 3)]
    with pytest.raises(ValueError, match="cannot be cut into 4-bit"):
        _slices(60, 4, 6)
    with pytest.raises(ValueError, match="must divide the row width 64"):
        _slices(64, 36, 12)


@pytest.mark.parametrize("latency, outreg", [(1, 0), (2, 1), (16, 1)])
def test_board_memory_reads_through_the_block_ram_output_register_on_ecp5(latency, outreg):
    """With a cycle of latency to spare, the board memory's banks are read through the DP16KDs'
    own output registers (4096 rows of 8 bytes: 16 slices of 4 bits per bank)."""
    cfg = EngineConfig(rows=2, cols=2, mem_bytes_per_cycle=8, mem_latency=latency)
    text = verilog.convert(BramMemory(cfg, words=8192), platform=SimpleNamespace(family="ecp5"))
    assert text.count('.REGMODE_B("OUTREG")') == 32 * outreg
