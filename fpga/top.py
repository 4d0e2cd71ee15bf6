"""What goes on the FPGA: the engine, its memory in block RAM, a program memory, the host link.

:class:`BoardTop` is the engine with :class:`~fpga.memory.BramMemory` standing in for external
memory, a program memory the host fills, and :class:`~fpga.link.HostLink` on the board's UART.
The host writes operands and a program, starts the engine, polls its status and reads the
results and counters back (:mod:`fpga.host`). Three LEDs show done, error and running.

START resets the engine (its queues, tokens, error and counters; the memories keep their
contents) and feeds it instructions ``0 .. count-1``; RESET stops a run that does not end.
While the engine runs it owns the memory port, and the link refuses memory and program
requests (``BUSY``); otherwise the link has it.
"""

from __future__ import annotations

from amaranth.hdl import (
    ClockDomain,
    ClockSignal,
    DomainRenamer,
    Module,
    ResetSignal,
    Signal,
    unsigned,
)
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl import isa
from rtl.config import EngineConfig, refuse
from rtl.engine import Engine, EngineTiming
from rtl.isa import INSN_BITS
from rtl.memory import engine_memories
from rtl.store import StoreTiming

from .clocks import Ecp5Pll
from .link import HostLink
from .memory import BramMemory
from .protocol import MAX_PAYLOAD, config_tag

__all__ = ["BoardTop"]

#: default words of program memory (one block RAM deep on ECP5, 17 wide)
IMEM_DEPTH = 512
#: cycles the host link is held in reset after configuration
LINK_RESET_CYCLES = 7
#: instruction words prefetched from program memory ahead of the engine
FEED_DEPTH = 8
#: the host link's frame buffer
FRAME_BYTES = MAX_PAYLOAD


class BoardTop(wiring.Component):
    """Engine + block-RAM memory of ``mem_words`` words + program memory + UART host link.

    ``divisor``: clock cycles per UART bit (``clock_hz / baud``); ``clock_hz``: the clock the
    design runs at, reported to the host. ``pll``: on a board, clock the design from this PLL
    (which makes ``clock_hz`` from the board's oscillator) instead of the oscillator itself.
    """

    def __init__(self, config: EngineConfig, *, mem_words: int, divisor: int, clock_hz: int,
                 imem_depth: int = IMEM_DEPTH, pll: Ecp5Pll | None = None):
        if imem_depth < 2 or imem_depth & (imem_depth - 1) or imem_depth > 1 << 15:
            raise refuse(self, f"program memory depth must be a power of two from 2 to 32768, "
                               f"not {imem_depth}")
        self.config = config
        self.mem_words = mem_words
        self.imem_depth = imem_depth
        self.divisor = divisor
        self.clock_hz = clock_hz
        self.pll = pll
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1),
                          "done": Out(1), "error": Out(1), "running": Out(1)})

    @property
    def mem_bytes(self) -> int:
        return self.mem_words * self.config.mem_bytes_per_cycle

    @property
    def lut_ram_bits(self) -> int:
        """Bits the top keeps in LUT RAM: the load, compute and store instruction queues."""
        return len(isa.Queue) * INSN_BITS * EngineTiming(self.config).queue_depth

    @property
    def memory_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Each block-RAM memory the top holds as (width in bits, depth, copies), for a fit check
        before synthesis: the engine's (:func:`rtl.memory.engine_memories`), the board memory,
        the program memory and the link's frame buffer. A block RAM has one read port beside its
        write port, so a memory read from two places is held twice (as Yosys maps it): the
        accumulator is read to accumulate into and read to store."""
        names = {"a": "scratchpad A", "b": "scratchpad B", "q": "scratchpad Q",
                 "acc": "accumulator"}
        copies = {"acc": 2}
        shapes = {names[name]: (mem.shape.size, mem.depth, copies.get(name, 1))
                  for name, mem in engine_memories(self.config).items()}
        w = self.config.mem_bytes_per_cycle
        # the store unit's row FIFO: as deep as its post-op chain is long (the softmax stage
        # made it deep enough for Yosys to put it in block RAM)
        fifo = StoreTiming(self.config).fifo_depth
        return {**shapes,
                "store row FIFO": (8 * 4 * self.config.cols, fifo, 1),
                "memory": (w * 8, self.mem_words, 1),
                "program memory": (INSN_BITS, self.imem_depth, 1),
                "frame buffer": (8, FRAME_BYTES, 1)}

    def elaborate(self, platform):
        m = Module()
        # The engine runs in its own domain: the same clock, and a reset that START and RESET
        # also drive (so DSP blocks inside it, which take the domain's reset, are cleared too).
        # That reset comes from a register (it reaches every register of the engine), a
        # cycle after START or RESET; the engine's outputs are not heeded in that cycle.
        engine_reset = Signal()
        resetting = Signal()
        m.d.sync += resetting.eq(engine_reset)
        m.domains.engine = ClockDomain("engine", local=True)
        m.d.comb += [ClockSignal("engine").eq(ClockSignal("sync")),
                     ResetSignal("engine").eq(ResetSignal("sync", allow_reset_less=True)
                                              | resetting)]
        engine = Engine(self.config)
        m.submodules.engine = DomainRenamer("engine")(engine)
        m.submodules.mem = mem = BramMemory(self.config, words=self.mem_words)
        m.submodules.imem = imem = Memory(shape=unsigned(INSN_BITS), depth=self.imem_depth,
                                          init=[])
        # The host link too runs in its own domain, reset for a few cycles after configuration
        # (and with the platform's reset, if there is one): its state machines then need no
        # initial value, which lets synthesis encode them one-hot (see fpga.build).
        starting = Signal(range(LINK_RESET_CYCLES + 1), init=LINK_RESET_CYCLES)
        link_reset = Signal(init=1)
        with m.If(starting != 0):
            m.d.sync += starting.eq(starting - 1)
        m.d.sync += link_reset.eq(starting != 0)
        m.domains.link = ClockDomain("link", local=True)
        m.d.comb += [ClockSignal("link").eq(ClockSignal("sync")),
                     ResetSignal("link").eq(ResetSignal("sync", allow_reset_less=True)
                                            | link_reset)]
        link = HostLink(
            self.config, mem_bytes=self.mem_bytes, imem_depth=self.imem_depth,
            divisor=self.divisor, clock_hz=self.clock_hz, tag=config_tag(self.config))
        m.submodules.link = DomainRenamer("link")(link)
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]

        # -- program memory: written by the link, read by the instruction feed ---------------
        wr = imem.write_port()
        m.d.comb += [wr.addr.eq(link.prog_addr), wr.data.eq(link.prog_data),
                     wr.en.eq(link.prog_en)]
        # The feed prefetches into a small FIFO so no path runs from the engine's decode back
        # to the program memory's address (block RAM output is slow on ECP5): fetch addresses
        # come from a register, words land in the FIFO two cycles later, the engine takes them.
        rd = imem.read_port()
        feed = SyncFIFOBuffered(width=INSN_BITS, depth=FEED_DEPTH)
        m.submodules.feed = DomainRenamer("engine")(feed)
        go = Signal()          # a run is on: feeding instructions or waiting for the engine
        finished = Signal()    # the last run ended with every instruction done
        fetch = Signal(16)     # next word to fetch
        in_flight = Signal()   # a fetched word arrives next cycle
        pc = Signal(16)        # words the engine has taken
        count = Signal(16)
        # (and a register behind the block RAM: its output goes nowhere else)
        word = Signal(INSN_BITS)
        arriving = Signal()    # ... and it is in `word`
        issue = go & (fetch < count) & (feed.level + in_flight + arriving < FEED_DEPTH - 1)
        m.d.comb += [rd.addr.eq(fetch), feed.w_en.eq(arriving), feed.w_data.eq(word)]
        m.d.sync += [in_flight.eq(issue & ~engine_reset), word.eq(rd.data),
                     arriving.eq(in_flight & ~engine_reset)]
        with m.If(issue):
            m.d.sync += fetch.eq(fetch + 1)
        m.d.comb += [engine.insn.valid.eq(go & ~resetting & feed.r_rdy),
                     engine.insn.payload.eq(feed.r_data),
                     feed.r_en.eq(go & ~resetting & engine.insn.ready)]
        accept = engine.insn.valid & engine.insn.ready
        with m.If(accept):
            m.d.sync += pc.eq(pc + 1)
        ended = go & ~resetting & (pc == count) & engine.idle
        # a run's cycles count from the first instruction offered to the engine to its end
        cycles = Signal(32)
        counting = Signal()
        with m.If(go & (counting | engine.insn.valid)):
            m.d.sync += [cycles.eq(cycles + 1), counting.eq(1)]
        with m.If(link.start):
            m.d.comb += engine_reset.eq(1)
            m.d.sync += [go.eq(1), finished.eq(0), pc.eq(0), fetch.eq(0), count.eq(link.count),
                         cycles.eq(0), counting.eq(0)]
        with m.Elif(link.abort):
            m.d.comb += engine_reset.eq(1)
            m.d.sync += [go.eq(0), finished.eq(0)]
        with m.Elif(ended | (engine.error & ~resetting)):
            m.d.sync += [go.eq(0), finished.eq(ended & ~engine.error)]

        # -- memory port: the engine's while it runs, the link's otherwise ---------------------
        port = mem.port
        m.d.comb += [port.rdata.ready.eq(1),
                     engine.mem.rdata.payload.eq(port.rdata.payload),
                     link.mem.rdata.payload.eq(port.rdata.payload)]
        with m.If(go):
            m.d.comb += [port.req.valid.eq(engine.mem.req.valid & ~resetting),
                         port.req.payload.eq(engine.mem.req.payload),
                         engine.mem.req.ready.eq(port.req.ready),
                         engine.mem.rdata.valid.eq(port.rdata.valid)]
        with m.Else():
            m.d.comb += [port.req.valid.eq(link.mem.req.valid),
                         port.req.payload.eq(link.mem.req.payload),
                         link.mem.req.ready.eq(port.req.ready),
                         link.mem.rdata.valid.eq(port.rdata.valid)]

        m.d.comb += [link.running.eq(go), link.done.eq(finished), link.error.eq(engine.error),
                     link.error_code.eq(engine.error_code),
                     link.pc.eq(engine.counters.insns[:16]), link.cycles.eq(cycles),
                     link.counters.eq(engine.counters)]
        m.d.comb += [self.done.eq(finished), self.error.eq(engine.error), self.running.eq(go)]

        if hasattr(platform, "request"):   # a board (simulation may pass a bare family)
            self._connect_board(m, platform)
        return m

    def _connect_board(self, m, platform):
        """The clock, the UART pins and up to three LEDs (done, error, running) of the board."""
        from amaranth.build import ResourceError
        from amaranth.lib import io

        if self.pll is not None:
            clk = platform.request(platform.default_clk, dir="-")
            m.submodules.clk_in = clk_in = io.Buffer("i", clk)
            self.pll.elaborate_into(m, clk_in.i)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [self.rx.eq(rx.i), tx.o.eq(self.tx)]
        shown = [self.done, self.error, self.running]
        pins = []
        for i in range(len(shown)):
            try:
                pins.append(platform.request("led", i, dir="-"))
            except ResourceError:
                break
        if not pins:
            try:
                rgb = platform.request("rgb_led", 0, dir="-")
                pins = [rgb.g, rgb.r, rgb.b]   # green done, red error, blue running
            except ResourceError:
                pins = []
        for i, (pin, sig) in enumerate(zip(pins, shown, strict=False)):
            m.submodules[f"led{i}"] = buf = io.Buffer("o", pin)
            m.d.comb += buf.o.eq(sig)
