"""The simulation top for programs: the engine, an instruction memory and a simulated memory.

Python writes the program into ``imem`` and operands into the memory's ``storage`` through the
simulator's backdoor, pulses ``start`` and waits for ``done``: the engine runs the whole program
at full simulator speed with no Python in the loop.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.config import EngineConfig, refuse
from rtl.engine import Engine, ErrorCode, counter_layout
from rtl.isa import insn_layout
from rtl.memory import SimMemory

__all__ = ["EngineHarness"]


class EngineHarness(wiring.Component):
    """Engine + instruction memory (``imem``, ``n_insns`` entries used) + :class:`SimMemory`.

    ``program`` and ``image``, if given, are the instruction memory's and the memory's initial
    contents (a testbench that has no backdoor, such as ``amaranth.sim``'s, runs from them).

    After ``start``: the program is fed in order; ``done`` rises when every instruction has
    been dispatched and the engine is idle, or when the engine flags an illegal instruction
    (``error``/``error_code``). ``cycles`` counts from start to done; ``stall`` makes the memory
    refuse requests at random (chance out of 256), in a pattern that ``start`` restarts, so
    the cycle model knows it (:func:`rtl.memory.stall_pattern`).
    """

    def __init__(self, config: EngineConfig, *, imem_depth: int = 4096, mem_words: int = 1 << 16,
                 program: list[int] = (), image: bytes = b""):
        if imem_depth < 2 or imem_depth & (imem_depth - 1):
            raise refuse(self, f"instruction memory depth must be a power of two, "
                               f"not {imem_depth}")
        if len(program) > imem_depth:
            raise refuse(self, f"a program of {len(program)} instructions does not fit an "
                               f"instruction memory of {imem_depth}")
        self.config = config
        self.imem_depth = imem_depth
        self.mem_words = mem_words
        self.program = list(program)
        self.image = image
        self.engine = Engine(config)
        super().__init__({
            "start": In(1), "n_insns": In(32), "stall": In(8),
            "done": Out(1), "cycles": Out(32), "error": Out(1), "error_code": Out(ErrorCode),
            "counters": Out(counter_layout), "mem_reads": Out(32), "mem_writes": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self.engine
        m.submodules.mem = mem = SimMemory(self.config, words=self.mem_words, init=self.image)
        m.submodules.imem = imem = Memory(
            shape=insn_layout, depth=self.imem_depth,
            init=[insn_layout.from_bits(word) for word in self.program])
        wiring.connect(m, engine.mem, mem.port)
        rd = imem.read_port(domain="comb")
        pc = Signal(32)
        running = Signal()
        m.d.comb += [
            rd.addr.eq(pc),
            engine.insn.valid.eq(running & (pc < self.n_insns)),
            engine.insn.payload.eq(rd.data),
            mem.stall.eq(self.stall), mem.restart.eq(self.start),
            self.error.eq(engine.error), self.error_code.eq(engine.error_code),
            self.counters.eq(engine.counters),
            self.mem_reads.eq(mem.reads), self.mem_writes.eq(mem.writes),
        ]
        with m.If(engine.insn.valid & engine.insn.ready):
            m.d.sync += pc.eq(pc + 1)
        finished = running & (((pc == self.n_insns) & engine.idle) | engine.error)
        with m.If(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(finished):
            m.d.sync += [running.eq(0), self.done.eq(1)]
        with m.If(self.start):
            m.d.sync += [running.eq(1), self.done.eq(0), pc.eq(0), self.cycles.eq(0)]
        return m
