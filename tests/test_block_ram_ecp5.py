"""The ECP5 block RAM path of :class:`rtl.memory.BlockMemory` (DP16KD instances with their output
registers and byte enables) in Verilator, with the behavioural model ``sim/models/DP16KD.v``,
against the same cycle model the fabric path is checked with in ``tests/test_memory.py``: every
mode a slice can take (36, 18, 9 and 4 bits), with and without byte-wide write enables."""

from __future__ import annotations

import os
import random
import subprocess
from types import SimpleNamespace

import pytest
from amaranth.hdl import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from block_memory_model import registered_reads

from rtl.memory import BlockMemory
from sim.build import MODELS, WAIVERS, to_verilog, tool_env, verilator_bin

WIDTH = 40
#: (depth, byte enables): one block RAM deep at 36, 18, 9 and 4 bits
MEMORIES = ((512, True), (1024, True), (2048, True), (4096, True), (512, False), (1024, False))
ADDR_BITS = 12
STEPS = 400


class Memories(wiring.Component):
    """Several block memories on shared inputs (addresses taken modulo each one's depth)."""

    def __init__(self):
        ports = {"rd_addr": In(ADDR_BITS), "rd_en": In(1), "wr_addr": In(ADDR_BITS),
                 "wr_en": In(WIDTH // 8), "wr_data": In(WIDTH)}
        ports.update({f"q{n}": Out(WIDTH) for n in range(len(MEMORIES))})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        for n, (depth, granular) in enumerate(MEMORIES):
            mem = BlockMemory(shape=unsigned(WIDTH), depth=depth,
                              granularity=8 if granular else None)
            m.submodules[f"mem{n}"] = mem
            rd, wr = mem.read_port(output_register=True), mem.write_port()
            bits = depth.bit_length() - 1
            m.d.comb += [rd.addr.eq(self.rd_addr[:bits]), rd.en.eq(self.rd_en),
                         wr.addr.eq(self.wr_addr[:bits]), wr.data.eq(self.wr_data),
                         wr.en.eq(self.wr_en if granular else self.wr_en[0]),
                         getattr(self, f"q{n}").eq(rd.data)]
        return m


def stimulus(seed: int) -> list[tuple[int, int, int, int, int]]:
    """(rd_addr, rd_en, wr_addr, wr_en, wr_data) per cycle. No step writes the row the port
    reads (or holds, while disabled) in that cycle: a DP16KD's read of a row its other port
    writes is not defined, and a disabled port keeps its row in a DP16KD but re-reads it in
    fabric."""
    rng = random.Random(seed)
    hot = rng.sample(range(1 << ADDR_BITS), 24)
    held, steps = 0, []
    for _ in range(STEPS):
        addr, en = rng.choice(hot), rng.random() < 0.7
        w_addr = rng.choice(hot)
        while (w_addr - (addr if en else held)) % MEMORIES[0][0] == 0:
            w_addr = rng.choice(hot)
        steps.append((addr, en, w_addr, rng.getrandbits(WIDTH // 8) if rng.random() < 0.6
                      else 0, rng.getrandbits(WIDTH)))
        if en:
            held = addr
    return steps


def expected(steps, depth: int, granular: bool) -> list[int]:
    return registered_reads(steps, depth, width=WIDTH, granularity=8 if granular else None)


TESTBENCH = """\
module tb(input clk);
    reg [{s}-1:0] stim [0:{n}-1];
    reg [{o}-1:0] want [0:{n}-1];
    wire [{o}-1:0] got;
    integer i = 0, errors = 0;
    wire [{s}-1:0] now = stim[i < {n} ? i : 0];
    tessera_top dut(.clk(clk), .rst(1'b0), .rd_addr(now[{s}-1:{s}-{a}]),
                    .rd_en(now[{e}+{w}+{a}]), .wr_addr(now[{e}+{w}+{a}-1:{e}+{w}]),
                    .wr_en(now[{e}+{w}-1:{w}]), .wr_data(now[{w}-1:0]), {outs});
    initial begin
        $readmemh("stim.hex", stim);
        $readmemh("want.hex", want);
    end
    always @(posedge clk) i <= i + 1;
    always @(negedge clk) if (i > 0) begin   // after cycle i-1's clock edge
        if (got !== want[i - 1]) begin
            if (errors < 10) $display("cycle %0d: got %h want %h", i - 1, got, want[i - 1]);
            errors = errors + 1;
        end
        if (i == {n}) begin
            $display("checked %0d cycles, %0d wrong", i, errors);
            $finish;
        end
    end
endmodule
"""

MAIN = """\
#include "Vtb.h"
#include "verilated.h"
int main(int argc, char** argv) {
    VerilatedContext context;
    context.commandArgs(argc, argv);
    Vtb tb{&context};
    for (long cycle = 0; !context.gotFinish() && cycle < 100000; ++cycle) {
        tb.clk = 1; tb.eval();
        tb.clk = 0; tb.eval();
    }
    return 0;
}
"""


def _pack(steps) -> list[int]:
    words = []
    for addr, en, w_addr, w_en, w_data in steps:
        word = addr
        for value, bits in ((en, 1), (w_addr, ADDR_BITS), (w_en, WIDTH // 8), (w_data, WIDTH)):
            word = word << bits | value
        words.append(word)
    return words


def test_fabric_path_keeps_the_cycle_model():
    """The same stimulus and model on the fabric path (amaranth.sim), so both paths are held
    to one contract."""
    steps = stimulus(1)
    dut = Memories()
    seen = {n: [] for n in range(len(MEMORIES))}

    async def bench(ctx):
        for addr, en, w_addr, w_en, w_data in steps:
            for name, value in (("rd_addr", addr), ("rd_en", en), ("wr_addr", w_addr),
                                ("wr_en", w_en), ("wr_data", w_data)):
                ctx.set(getattr(dut, name), value)
            await ctx.tick()
            for n in seen:
                seen[n].append(ctx.get(getattr(dut, f"q{n}")))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for n, (depth, granular) in enumerate(MEMORIES):
        want = expected(steps, depth, granular)
        assert seen[n] == want, f"memory {n} ({depth} rows, byte enables {granular})"
        assert len(set(want)) > 50


@pytest.mark.parametrize("seed", [1, 2])
def test_ecp5_block_rams_keep_the_cycle_model(seed, tmp_path):
    steps = stimulus(seed)
    wants = [expected(steps, depth, granular) for depth, granular in MEMORIES]
    assert all(len(set(w)) > 50 for w in wants)   # the reads saw written rows, not zeros
    outs = ", ".join(f".q{n}(got[{(n + 1) * WIDTH - 1}:{n * WIDTH}])"
                     for n in range(len(MEMORIES)))
    (tmp_path / "top.v").write_text(to_verilog(Memories(),
                                               platform=SimpleNamespace(family="ecp5")))
    (tmp_path / "tb.v").write_text(TESTBENCH.format(
        a=ADDR_BITS, e=WIDTH // 8, w=WIDTH, s=2 * ADDR_BITS + 1 + WIDTH // 8 + WIDTH,
        o=WIDTH * len(MEMORIES), n=len(steps), outs=outs))
    (tmp_path / "main.cpp").write_text(MAIN)
    (tmp_path / "stim.hex").write_text("".join(f"{w:x}\n" for w in _pack(steps)))
    packed = [sum(w[i] << n * WIDTH for n, w in enumerate(wants)) for i in range(len(steps))]
    (tmp_path / "want.hex").write_text("".join(f"{w:x}\n" for w in packed))
    with tool_env():
        build = subprocess.run(
            [str(verilator_bin()), "--cc", "--exe", "--build", "-Wno-fatal", "--top-module", "tb",
             "-Mdir", "obj", str(WAIVERS), "top.v", "tb.v", str(MODELS / "DP16KD.v"),
             "main.cpp"],
            cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ))
        assert build.returncode == 0, build.stderr[-3000:]
        run = subprocess.run(["obj/Vtb"], cwd=tmp_path, capture_output=True, text=True)
    assert f"checked {len(steps)} cycles, 0 wrong" in run.stdout, run.stdout[-3000:]
