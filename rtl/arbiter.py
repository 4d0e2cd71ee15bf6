"""The memory arbiter: the load and store units share the engine's one memory port."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .memory import request_layout

__all__ = ["MemoryArbiter"]


class MemoryArbiter(wiring.Component):
    """Round robin between ``load`` (reads) and ``store`` (writes) requests onto ``o``.

    No latency: a request is on ``o`` the cycle it is offered, one beat per cycle in all. When
    both units ask, the one not granted last goes first, so their beats alternate; one asking
    alone gets every cycle; after reset loads go first. ``read``/``write``: a read (write)
    beat was granted this cycle.
    """

    #: cycles from a unit's request to it being on ``o``
    latency = 0

    def __init__(self, config: EngineConfig):
        self.config = config
        req = stream.Signature(request_layout(config))
        super().__init__({"load": In(req), "store": In(req), "o": Out(req),
                          "read": Out(1), "write": Out(1)})

    def elaborate(self, platform):
        m = Module()
        turn = Signal()   # the store unit goes first when both ask
        pick_store = self.store.valid & (~self.load.valid | turn)
        with m.If(pick_store):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(self.store.payload),
                         self.store.ready.eq(self.o.ready)]
        with m.Else():
            m.d.comb += [self.o.valid.eq(self.load.valid), self.o.payload.eq(self.load.payload),
                         self.load.ready.eq(self.o.ready)]
        granted = self.o.valid & self.o.ready
        with m.If(granted):
            m.d.sync += turn.eq(~pick_store)
        m.d.comb += [self.read.eq(granted & ~self.o.payload.write),
                     self.write.eq(granted & self.o.payload.write)]
        return m
