"""On-chip memory behind the engine's memory port, in block RAM (the FPGA's stand-in for DRAM).

:class:`rtl.memory.SimMemory` reads combinationally, which no block RAM does. This one keeps
the same contract (one request per cycle, any byte alignment, reads answered ``latency`` cycles
later in order) with synchronous reads: words are split into an even and an odd bank, so the two
neighbouring words an unaligned beat touches are always in different banks and each bank needs
one read and one write port at the same address, which block RAM has.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from rtl.config import EngineConfig, refuse
from rtl.memory import BlockMemory, mem_signature

__all__ = ["BramMemory"]


class BramMemory(wiring.Component):
    """``words`` words of W = ``mem_bytes_per_cycle`` bytes in two banks of block RAM.

    A read accepted in cycle t returns its beat in cycle t + ``latency`` (at least 1: the block
    RAM's own register); bytes past ``length`` read as zero. A write reaches the banks through
    the same request registers as a read (none, one with a latency of 3, two from 4), so a
    read accepted after a write always sees it. Addresses wrap at the memory's size. Requests
    are always accepted.
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
        return self.config.read_latency

    @property
    def bits(self) -> int:
        return self.words * 8 * self.config.mem_bytes_per_cycle

    def elaborate(self, platform):
        m = Module()
        w = self.config.mem_bytes_per_cycle
        half = self.words // 2
        m.d.comb += self.port.req.ready.eq(1)

        # The latency beyond the block RAM's own register buys pipeline registers, most useful
        # first: the two words as they leave the banks, in the block RAMs' own output registers
        # (an ECP5 block RAM's output is slow: even a fabric register right behind it is often
        # placed too far away; see BlockMemory), the decoded request (bank addresses, write
        # bytes and enables), the beat read, the request as it arrives, and the two words again
        # in the fabric before the byte shift (the route from a block RAM's output register to
        # the fabric took 4.6 to 5.8 ns on the 8x8 board top: no logic may follow it). Reads
        # and writes take the same registers, so their order holds.
        spare = self.latency - 1
        words_reg = spare >= 1
        banks = []
        for b in range(2):
            mem = BlockMemory(shape=unsigned(8 * w), depth=half, granularity=8)
            m.submodules[f"bank{b}"] = mem
            banks.append((mem.read_port(output_register=words_reg), mem.write_port()))
        decoded_reg = spare >= 2
        beat_reg = spare >= 3
        request_reg = spare >= 4
        fabric_reg = spare >= 5
        delays = spare - decoded_reg - words_reg - request_reg - beat_reg - fabric_reg

        fire, payload = self.port.req.valid, self.port.req.payload
        if request_reg:
            fire, payload = _register(m, fire, "req_fire"), _register(m, payload, "req")

        # -- decode: which word of which bank, the bytes and enables a write puts in each ----
        index_bits = (self.words - 1).bit_length()
        word = Signal(index_bits)
        # (a one-byte port has no offset: a zero-width signal would be a [-1:0] wire)
        offset = Signal(range(w)) if w > 1 else Const(0, 1)
        if w > 1:
            m.d.comb += [offset.eq(payload.addr % w), word.eq(payload.addr // w)]
        else:
            m.d.comb += word.eq(payload.addr)
        hi = Signal(index_bits)
        m.d.comb += hi.eq(word + 1)
        odd = word[0]   # the low word is in bank 1: the high word is in bank 0
        keep = Signal(w)
        m.d.comb += keep.eq((Const(1, w + 1) << payload.length) - 1)
        wide_data = Signal(16 * w)
        wide_en = Signal(2 * w)
        m.d.comb += [wide_data.eq(Value.cast(payload.data) << (offset * 8)),
                     wide_en.eq(keep << offset)]
        write = fire & payload.write
        lo_data, hi_data = wide_data[:8 * w], wide_data[8 * w:]
        lo_en = Cat(*(wide_en[i] & write for i in range(w)))
        hi_en = Cat(*(wide_en[w + i] & write for i in range(w)))
        # bank b holds words 2i + b at index i
        decoded = []
        for b in range(2):
            lo_here = odd if b == 1 else ~odd
            decoded.append((Cat(_pick(odd, word, hi) if b else _pick(odd, hi, word))[1:],
                            _pick(lo_here, lo_data, hi_data), _pick(lo_here, lo_en, hi_en)))
        reading = fire & ~payload.write
        if decoded_reg:
            decoded = [tuple(_register(m, v, f"{n}{b}")
                             for v, n in zip(d, ("addr", "wdata", "wen"), strict=True))
                       for b, d in enumerate(decoded)]
            reading, offset, keep, odd = (_register(m, v, n) for v, n in (
                (reading, "dec_read"), (offset, "dec_offset"), (keep, "dec_keep"),
                (odd, "dec_odd")))
        for (rd, wr), (addr, wdata, wen) in zip(banks, decoded, strict=True):
            m.d.comb += [rd.addr.eq(addr), wr.addr.eq(addr), wr.data.eq(wdata), wr.en.eq(wen)]

        # -- reads: the banks answer next cycle (a cycle later through their output registers);
        # shift the two words so byte `offset` is first
        r_valid, r_offset, r_keep, r_odd = (_register(m, v, n) for v, n in (
            (reading, "r_valid"), (offset, "r_offset"), (keep, "r_keep"), (odd, "r_odd")))
        out = Cat(*(rd.data for rd, _ in banks))
        if words_reg:
            r_valid, r_offset, r_keep, r_odd = (_register(m, v, n) for v, n in (
                (r_valid, "w_valid"), (r_offset, "w_offset"), (r_keep, "w_keep"),
                (r_odd, "w_odd")))
        if fabric_reg:
            out = _register(m, out, "words")
            r_valid, r_offset, r_keep, r_odd = (_register(m, v, n) for v, n in (
                (r_valid, "f_valid"), (r_offset, "f_offset"), (r_keep, "f_keep"),
                (r_odd, "f_odd")))
        word0, word1 = out[:8 * w], out[8 * w:]
        both = Cat(_pick(r_odd, word1, word0), _pick(r_odd, word0, word1))
        shifted = both.bit_select(r_offset * 8, 8 * w) if w > 1 else both[:8]
        beat = shifted & Cat(*(r_keep[i].replicate(8) for i in range(w)))
        valid = r_valid
        if beat_reg:
            valid, beat = _register(m, valid, "beat_valid"), _register(m, beat, "beat")
        for n in range(delays):
            valid = _register(m, valid, f"rd_valid_{n}")
            beat = _register(m, beat, f"rd_data_{n}")
        m.d.comb += [self.port.rdata.valid.eq(valid), self.port.rdata.payload.eq(beat)]
        return m


def _register(m: Module, value, name: str):
    """``value`` one cycle later (a register named ``name`` of the same shape)."""
    reg = Signal(value.shape(), name=name)
    m.d.sync += reg.eq(value)
    return reg


def _pick(sel, a, b) -> Value:
    """``Mux`` on the raw bits of memory words (which are array views)."""
    return Mux(sel, Value.cast(a), Value.cast(b))
