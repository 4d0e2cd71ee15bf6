"""What goes on the FPGA: the engine, its memory in block RAM, a program in ROM.

:class:`BuildTop` is the engine with :class:`~fpga.memory.BramMemory` standing in for external
memory and a GEMM program in an instruction ROM, started by reset. It shows ``done`` and
``error`` on two LEDs and a running XOR of every word the engine writes to memory on the rest,
so synthesis cannot trim the datapath away. It is what ``tessera fpga build`` places and routes
to report resources and Fmax. (The UART host link that loads programs and data from a PC is
not written yet.)
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from rtl import isa
from rtl.config import EngineConfig
from rtl.engine import Engine, EngineTiming
from rtl.isa import INSN_BITS

from .memory import BramMemory

__all__ = ["BuildTop", "default_program"]

#: LEDs the top drives on a board that has them (done, error, 6 bits of write checksum)
LEDS = 8


def default_program(config: EngineConfig) -> tuple[list[int], int]:
    """A GEMM of two array tiles in each dimension, requantized: its instruction words and the
    memory it needs, in words of ``mem_bytes_per_cycle`` bytes (a power of two)."""
    from mapping.gemm import plan_gemm

    plan = plan_gemm(config, 2 * config.rows, 2 * config.rows, 2 * config.cols, requant=True)
    words = isa.assemble(plan.program, config)
    need = -(-plan.layout.size // config.mem_bytes_per_cycle)
    return words, max(4, 1 << (need - 1).bit_length())


class BuildTop(wiring.Component):
    """Engine + block-RAM memory + program ROM; outputs ``done``, ``error``, ``checksum``."""

    def __init__(self, config: EngineConfig, *, program: list[int] | None = None,
                 mem_words: int | None = None):
        self.config = config
        if program is None:
            program, need = default_program(config)
            mem_words = mem_words or need
        self.program = program
        self.mem_words = mem_words or 1024
        self.imem_depth = max(2, 1 << (len(program) - 1).bit_length())
        super().__init__({"done": Out(1), "error": Out(1), "checksum": Out(LEDS - 2)})

    @property
    def memory_bits(self) -> dict[str, int]:
        """Bits of each memory the top holds, for a fit check before synthesis."""
        g = isa.geometry(self.config)
        return {
            "scratchpad A": g.a_rows * g.a_row_bytes * 8,
            "scratchpad B": g.b_rows * g.b_row_bytes * 8,
            "scratchpad Q": g.q_rows * g.q_row_bytes * 8,
            "accumulator": g.acc_rows * g.acc_row_bytes * 8,
            "memory": self.mem_words * self.config.mem_bytes_per_cycle * 8,
            "instruction queues": 3 * INSN_BITS * EngineTiming.queue_depth,
        }

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = Engine(self.config)
        m.submodules.mem = mem = BramMemory(self.config, words=self.mem_words)
        # the ROM holds raw instruction words; the engine reads them as its layout
        m.submodules.imem = imem = Memory(shape=unsigned(INSN_BITS), depth=self.imem_depth,
                                          init=self.program)
        wiring.connect(m, engine.mem, mem.port)

        rd = imem.read_port(domain="comb")
        pc = Signal(range(self.imem_depth + 1))
        n = len(self.program)
        m.d.comb += [rd.addr.eq(pc), engine.insn.valid.eq(pc < n),
                     engine.insn.payload.eq(rd.data)]
        with m.If(engine.insn.valid & engine.insn.ready):
            m.d.sync += pc.eq(pc + 1)
        m.d.comb += [self.done.eq((pc == n) & engine.idle), self.error.eq(engine.error)]

        # every word written to memory folds into a checksum, so the datapath is observable
        req = engine.mem.req
        fold = Signal(len(self.checksum))
        bits = req.payload.data.as_value()
        with m.If(req.valid & req.ready & req.payload.write):
            acc = fold
            for i in range(0, len(bits), len(fold)):
                acc = acc ^ bits[i:i + len(fold)]
            m.d.sync += fold.eq(acc)
        m.d.comb += self.checksum.eq(fold)

        if platform is not None:
            from amaranth.build import ResourceError

            shown = [self.done, self.error, *self.checksum]
            from amaranth.lib import io

            leds = []
            for i in range(LEDS):
                try:
                    pin = platform.request("led", i, dir="-")
                except ResourceError:
                    break
                m.submodules[f"led{i}"] = buf = io.Buffer("o", pin)
                leds.append(buf.o)
            if not leds:
                raise ResourceError(f"{type(platform).__name__} has no LED to show done on")
            # a board with fewer LEDs shows the checksum folded onto the ones it has
            drive = [[] for _ in leds]
            for i, sig in enumerate(shown):
                if i < len(leds):
                    drive[i].append(sig)
                elif len(leds) > 2:
                    drive[2 + (i - 2) % (len(leds) - 2)].append(sig)
                else:
                    drive[-1].append(sig)
            for led, sigs in zip(leds, drive, strict=True):
                value = sigs[0]
                for sig in sigs[1:]:
                    value = value ^ sig
                m.d.comb += led.eq(value)
        return m
