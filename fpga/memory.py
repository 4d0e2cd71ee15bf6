"""On-chip memory behind the engine's memory port, in block RAM (the FPGA's stand-in for DRAM).

:class:`rtl.memory.SimMemory` reads combinationally, which no block RAM does. This one keeps
the same contract (one request per cycle, any byte alignment, reads answered ``latency`` cycles
later in order) with synchronous reads: words are split into an even and an odd bank, so the two
neighbouring words an unaligned beat touches are always in different banks and each bank needs
one read and one write port at the same address, which block RAM has.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from rtl.config import EngineConfig, refuse
from rtl.memory import mem_signature

__all__ = ["BramMemory"]


class BramMemory(wiring.Component):
    """``words`` words of W = ``mem_bytes_per_cycle`` bytes in two banks of block RAM.

    A read accepted in cycle t returns its beat in cycle t + ``latency`` (at least 1: the block
    RAM's own register); bytes past ``length`` read as zero. Writes take effect at the end of
    cycle t, or of t + 1 with a latency of 3 or more (the request is registered; a read issued
    later still sees the write). Addresses wrap at the memory's size. Requests are always
    accepted.
    """

    def __init__(self, config: EngineConfig, *, words: int):
        if words < 4 or words & (words - 1):
            raise refuse(self, f"memory size must be a power of two of at least 4 words, "
                               f"not {words}")
        self.config = config
        self.words = words
        super().__init__({"port": In(mem_signature(config))})

    @property
    def latency(self) -> int:
        return max(1, self.config.mem_latency)

    @property
    def bits(self) -> int:
        return self.words * 8 * self.config.mem_bytes_per_cycle

    def elaborate(self, platform):
        m = Module()
        w = self.config.mem_bytes_per_cycle
        half = self.words // 2
        banks = []
        for b in range(2):
            mem = Memory(shape=data.ArrayLayout(8, w), depth=half, init=[])
            m.submodules[f"bank{b}"] = mem
            banks.append((mem.read_port(), mem.write_port(granularity=1)))

        # With a latency of 3 or more, requests are registered before they reach the banks
        # (reads and writes alike, so their order holds); with 2 or more, the words read are
        # registered before the byte shift. Block RAM is slow on both sides on ECP5.
        m.d.comb += self.port.req.ready.eq(1)
        spare = self.latency - 1
        if spare >= 2:
            fire = Signal()
            payload = Signal(self.port.req.payload.shape())
            m.d.sync += [fire.eq(self.port.req.valid), payload.eq(self.port.req.payload)]
            spare -= 1
        else:
            fire, payload = self.port.req.valid, self.port.req.payload

        index_bits = (self.words - 1).bit_length()
        word = Signal(index_bits)
        offset = Signal(range(w))
        if w > 1:
            m.d.comb += [offset.eq(payload.addr % w), word.eq(payload.addr // w)]
        else:
            m.d.comb += word.eq(payload.addr)
        hi = Signal(index_bits)
        m.d.comb += hi.eq(word + 1)
        odd = word[0]   # the low word is in bank 1: the high word is in bank 0
        # bank b holds words 2i + b at index i
        addr = [Signal(index_bits - 1, name=f"addr{b}") for b in range(2)]
        m.d.comb += [
            addr[0].eq(Cat(_pick(odd, hi, word)[1:])),
            addr[1].eq(Cat(_pick(odd, word, hi)[1:])),
        ]
        keep = Signal(w)
        m.d.comb += keep.eq((Const(1, w + 1) << payload.length) - 1)

        # writes: bytes and enables for the low and high word, then to their banks
        wide_data = Signal(16 * w)
        wide_en = Signal(2 * w)
        m.d.comb += [wide_data.eq(Value.cast(payload.data) << (offset * 8)),
                     wide_en.eq(keep << offset)]
        write = fire & payload.write
        lo_data, hi_data = wide_data[:8 * w], wide_data[8 * w:]
        lo_en = Cat(*(wide_en[i] & write for i in range(w)))
        hi_en = Cat(*(wide_en[w + i] & write for i in range(w)))
        for b, (rd, wr) in enumerate(banks):
            lo_here = odd if b == 1 else ~odd
            m.d.comb += [
                rd.addr.eq(addr[b]), rd.en.eq(1),
                wr.addr.eq(addr[b]),
                wr.data.eq(_pick(lo_here, lo_data, hi_data)),
                wr.en.eq(_pick(lo_here, lo_en, hi_en)),
            ]

        # reads: the banks answer next cycle; shift the two words so byte `offset` comes first
        r_valid, r_offset, r_keep, r_odd = Signal(), Signal(range(w)), Signal(w), Signal()
        m.d.sync += [r_valid.eq(fire & ~payload.write), r_offset.eq(offset),
                     r_keep.eq(keep), r_odd.eq(odd)]
        lo_word = _pick(r_odd, banks[1][0].data, banks[0][0].data)
        hi_word = _pick(r_odd, banks[0][0].data, banks[1][0].data)
        both = Signal(16 * w)
        valid_prev = r_valid
        delays = spare
        if delays:
            q_valid, q_offset, q_keep = Signal(), Signal(range(w)), Signal(w)
            m.d.sync += [both.eq(Cat(lo_word, hi_word)), q_valid.eq(r_valid),
                         q_offset.eq(r_offset), q_keep.eq(r_keep)]
            valid_prev, r_offset, r_keep = q_valid, q_offset, q_keep
            delays -= 1
        else:
            m.d.comb += both.eq(Cat(lo_word, hi_word))
        shifted = Signal(8 * w)
        m.d.comb += shifted.eq(both.bit_select(r_offset * 8, 8 * w) if w > 1 else both[:8])
        beat = Signal(8 * w)
        m.d.comb += beat.eq(shifted & Cat(*(r_keep[i].replicate(8) for i in range(w))))

        data_prev = beat
        for n in range(delays):
            v, d = Signal(name=f"rd_valid_{n}"), Signal(8 * w, name=f"rd_data_{n}")
            m.d.sync += [v.eq(valid_prev), d.eq(data_prev)]
            valid_prev, data_prev = v, d
        m.d.comb += [self.port.rdata.valid.eq(valid_prev), self.port.rdata.payload.eq(data_prev)]
        return m


def _pick(sel, a, b) -> Value:
    """``Mux`` on the raw bits of memory words (which are array views)."""
    return Mux(sel, Value.cast(a), Value.cast(b))
