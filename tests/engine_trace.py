"""The whole engine in amaranth.sim, watched instruction by instruction (for the tests).

:func:`trace` runs a program on :class:`~sim.engine_harness.EngineHarness` (no Verilator, no
backdoor: the program and memory image are the memories' initial contents) and records the
cycle each unit took each of its instructions, counted like the cycle model's (cycle 0 is the
first cycle the engine sees the program).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.sim import Simulator

from rtl import isa
from rtl.config import EngineConfig
from sim.engine_harness import EngineHarness


@dataclass
class Trace:
    cycles: int
    error: bool
    #: per instruction, in program order: the cycle its unit took it
    starts: list[int]


def trace(cfg: EngineConfig, program: list[isa.Insn], image: bytes, *, stall: int = 0,
          mem_words: int = 1 << 14, max_cycles: int = 200_000) -> Trace:
    words = isa.assemble(program, cfg)
    depth = max(8, 1 << (len(words) - 1).bit_length())
    h = EngineHarness(cfg, imem_depth=depth, mem_words=mem_words, program=words, image=image)
    e = h.engine
    heads = {isa.Queue.LOAD: e.dispatch.load, isa.Queue.COMPUTE: e.dispatch.compute,
             isa.Queue.STORE: e.dispatch.store}
    takes = {q: [] for q in heads}
    result = {}

    async def tb(ctx):
        ctx.set(h.n_insns, len(words))
        ctx.set(h.stall, stall)
        ctx.set(h.start, 1)
        await ctx.tick()
        ctx.set(h.start, 0)
        cycle = 0
        while not ctx.get(h.done):
            for q, head in heads.items():
                if ctx.get(head.valid) and ctx.get(head.ready):
                    takes[q].append(cycle)
            await ctx.tick()
            cycle += 1
            assert cycle < max_cycles, "the engine did not finish"
        result["cycles"] = ctx.get(h.cycles)
        result["error"] = bool(ctx.get(h.error))

    sim = Simulator(h)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    order = {q: iter(t) for q, t in takes.items()}
    starts = [next(order[insn.queue]) for insn in program]
    return Trace(result["cycles"], result["error"], starts)
