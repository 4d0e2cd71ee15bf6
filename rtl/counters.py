"""Activity counters, readable after a run: what the engine did with its cycles."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PerfCounters", "counter_layout"]

#: activity counters, each 32 bits (they wrap), readable after a run
counter_layout = data.StructLayout({
    "busy": 32,        # cycles the engine had work (not idle)
    "compute": 32,     # cycles the array accepted an operand beat
    "load_wait": 32,   # cycles the compute unit waited for a load token
    "store_wait": 32,  # cycles the compute unit waited for a free accumulator (store token)
    "mem_reads": 32,   # read beats accepted by memory
    "mem_writes": 32,  # write beats accepted by memory
    "insns": 32,       # instructions dispatched
})


class PerfCounters(wiring.Component):
    """One counter per event of :data:`counter_layout`: each input high for a cycle counts
    one, seen on ``counters`` the next cycle."""

    events = tuple(name for name, _ in counter_layout)

    def __init__(self):
        super().__init__({**{name: In(1) for name in self.events},
                          "counters": Out(counter_layout)})

    def elaborate(self, platform):
        m = Module()
        for name in self.events:
            counter = getattr(self.counters, name)
            with m.If(getattr(self, name)):
                m.d.sync += counter.eq(counter + 1)
        return m
