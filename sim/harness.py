"""The simulation top: the tile engine between stimulus and result memories.

Python loads the memories through the simulator's backdoor, pulses ``start`` and waits for
``done``; between the two the design runs at full simulator speed with no Python in the loop.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.config import EngineConfig, refuse
from rtl.memory import lfsr
from rtl.tile import TileEngine, a_layout, b_layout, c_layout

__all__ = ["TileHarness"]

class TileHarness(wiring.Component):
    """:class:`~rtl.tile.TileEngine` fed from ``a_mem``/``b_mem``, draining into ``c_mem``.

    Registers (set before ``start``): ``n_a``/``n_b`` beats to send from each memory, ``n_c``
    result beats to collect, ``passes`` over the stimulus (``last`` only on the final
    pass, so one tile can run for ``passes * n_a`` beats), ``stall`` the chance out of 256 that
    a source withholds a beat or the sink refuses one on any cycle. After ``done``: ``cycles``
    from start to the last result, the beats each port moved, and ``c_pending`` (a result the
    engine offers beyond ``n_c``: there must be none).
    """

    def __init__(self, config: EngineConfig, *, depth: int = 4096):
        if depth < 2 or depth & (depth - 1):
            raise refuse(self, f"harness memory depth must be a power of two, not {depth}")
        self.config = config
        self.depth = depth
        super().__init__({
            "start": In(1), "n_a": In(32), "n_b": In(32), "n_c": In(32), "passes": In(32),
            "stall": In(8),
            "done": Out(1), "busy": Out(1), "cycles": Out(32),
            "a_beats": Out(32), "b_beats": Out(32), "c_beats": Out(32), "c_pending": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.engine = engine = TileEngine(cfg)
        m.submodules.a_mem = a_mem = Memory(shape=a_layout(cfg), depth=self.depth, init=[])
        m.submodules.b_mem = b_mem = Memory(shape=b_layout(cfg), depth=self.depth, init=[])
        m.submodules.c_mem = c_mem = Memory(shape=c_layout(cfg), depth=self.depth, init=[])
        a_rd = a_mem.read_port(domain="comb")
        b_rd = b_mem.read_port(domain="comb")
        c_wr = c_mem.write_port()

        busy = Signal()
        a_ptr, b_ptr, c_ptr = Signal(32), Signal(32), Signal(32)
        a_rep, b_rep = Signal(32), Signal(32)
        m.d.comb += [self.busy.eq(busy), a_rd.addr.eq(a_ptr), b_rd.addr.eq(b_ptr),
                     self.c_pending.eq(engine.c.valid & ~busy)]
        lfsr_a, lfsr_b, lfsr_c = lfsr(m, 0xACE1), lfsr(m, 0x1D2C), lfsr(m, 0x5A5A)
        stall = self.stall

        def source(port, rd, ptr, rep, count, rnd, final_flag):
            more = busy & (ptr < count)
            m.d.comb += port.valid.eq(more & (rnd[:8] >= stall))
            m.d.comb += port.payload.eq(rd.data)
            if final_flag:
                # `last` only on the final pass over the stimulus
                m.d.comb += port.payload.last.eq(rd.data.last & (rep + 1 >= self.passes))
            with m.If(port.valid & port.ready):
                with m.If((ptr + 1 == count) & (rep + 1 < self.passes)):
                    m.d.sync += [ptr.eq(0), rep.eq(rep + 1)]
                with m.Else():
                    m.d.sync += ptr.eq(ptr + 1)

        source(engine.a, a_rd, a_ptr, a_rep, self.n_a, lfsr_a, True)
        source(engine.b, b_rd, b_ptr, b_rep, self.n_b, lfsr_b, False)

        m.d.comb += [
            engine.c.ready.eq(busy & (lfsr_c[8:] >= stall)),
            c_wr.addr.eq(c_ptr),  # wraps: a run longer than the memory keeps its last results
            c_wr.data.eq(engine.c.payload),
            c_wr.en.eq(engine.c.valid & engine.c.ready),
        ]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(engine.a.valid & engine.a.ready):
            m.d.sync += self.a_beats.eq(self.a_beats + 1)
        with m.If(engine.b.valid & engine.b.ready):
            m.d.sync += self.b_beats.eq(self.b_beats + 1)
        with m.If(c_wr.en):
            m.d.sync += [c_ptr.eq(c_ptr + 1), self.c_beats.eq(self.c_beats + 1)]
            with m.If(c_ptr + 1 == self.n_c):
                m.d.sync += [busy.eq(0), self.done.eq(1)]
        with m.If(self.start):
            m.d.sync += [busy.eq(self.n_c != 0), self.done.eq(self.n_c == 0),
                         a_ptr.eq(0), b_ptr.eq(0), c_ptr.eq(0), a_rep.eq(0), b_rep.eq(0),
                         self.cycles.eq(0), self.a_beats.eq(0), self.b_beats.eq(0),
                         self.c_beats.eq(0)]
        return m
