"""Two FIFOs with the ports of :mod:`amaranth.lib.fifo`, built for an FPGA's timing.

Both keep the head where a decision can start from a register: :class:`RegisterFIFO` holds
a few entries in registers, :class:`HeadRegisterFIFO` many in LUT RAM behind a head register.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import refuse

__all__ = ["HeadRegisterFIFO", "RegisterFIFO"]


class _FIFO(wiring.Component):
    """The ports of :class:`amaranth.lib.fifo.SyncFIFO`, ``depth`` at least ``least``."""

    least = 1

    def __init__(self, *, width: int, depth: int):
        if depth < self.least:
            raise refuse(self, f"depth must be at least {self.least}, not {depth}")
        self.width, self.depth = width, depth
        super().__init__({"w_data": In(width), "w_en": In(1), "w_rdy": Out(1),
                          "r_data": Out(width), "r_en": In(1), "r_rdy": Out(1),
                          "level": Out(range(depth + 1))})


def _advance(m: Module, pointer: Signal, n: int, step) -> None:
    """``pointer`` moves on by one, wrapping at ``n``, in the cycles ``step`` holds."""
    with m.If(step):
        m.d.sync += pointer.eq(Mux(pointer == n - 1, 0, pointer + 1))


class RegisterFIFO(_FIFO):
    """A first-word-fall-through FIFO held in registers: the ports and timing of
    :class:`amaranth.lib.fifo.SyncFIFO`, but its head comes from a multiplexer of registers,
    not from LUT RAM (whose read goes through two levels of logic on an FPGA). For a few
    entries."""

    def elaborate(self, platform):
        m = Module()
        slots = Array(Signal(self.width, name=f"slot{i}") for i in range(self.depth))
        produce = Signal(range(self.depth))
        consume = Signal(range(self.depth))
        m.d.comb += [self.w_rdy.eq(self.level != self.depth), self.r_rdy.eq(self.level != 0),
                     self.r_data.eq(slots[consume])]
        write = self.w_en & self.w_rdy
        read = self.r_en & self.r_rdy
        with m.If(write):
            m.d.sync += slots[produce].eq(self.w_data)
        _advance(m, produce, self.depth, write)
        _advance(m, consume, self.depth, read)
        m.d.sync += self.level.eq(self.level + write - read)
        return m


class HeadRegisterFIFO(_FIFO):
    """The ports and timing of :class:`amaranth.lib.fifo.SyncFIFOBuffered` (``depth`` entries,
    the head in a register, readable two cycles after its write), its storage in LUT RAM on an
    FPGA: Amaranth's own reads its storage synchronously, and Yosys folds a read that goes
    straight into a register into a synchronous one too; either way it maps the storage to
    block RAM, whose output comes late. Here the storage is marked for LUT RAM
    (``ram_style``), read combinationally into the head register."""

    least = 2

    def elaborate(self, platform):
        m = Module()
        n = self.depth - 1   # entries behind the head register
        m.submodules.storage = storage = Memory(
            shape=self.width, depth=n, init=[], attrs={"ram_style": "distributed"})
        wr = storage.write_port()
        rd = storage.read_port(domain="comb")
        produce, consume = Signal(range(n)), Signal(range(n))
        stored = Signal(range(n + 1))
        # stored == n and stored != 0, kept in registers beside the count: a writer's
        # decision and the storage's write enable start from a register, not a compare
        full = Signal()
        some = Signal()
        head_valid = Signal()
        refill = ~head_valid | self.r_en
        write = self.w_en & self.w_rdy
        take = refill & some
        m.d.comb += [self.w_rdy.eq(~full), self.r_rdy.eq(head_valid),
                     self.level.eq(stored + head_valid),
                     wr.addr.eq(produce), wr.data.eq(self.w_data), wr.en.eq(write),
                     rd.addr.eq(consume)]
        _advance(m, produce, n, write)
        _advance(m, consume, n, take)
        m.d.sync += stored.eq(stored + write - take)
        with m.If(write & ~take):
            m.d.sync += [full.eq(stored == n - 1), some.eq(1)]
        with m.Elif(take & ~write):
            m.d.sync += [full.eq(0), some.eq(stored != 1)]
        with m.If(refill):
            m.d.sync += [self.r_data.eq(rd.data), head_valid.eq(some)]
        return m
