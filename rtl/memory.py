"""The engine's memory port, and a simulation memory that sits behind it.

The port is a request stream (reads and writes of up to ``mem_bytes_per_cycle`` bytes at any
byte address) and a read-data stream that returns beats in request order. A simulation memory, an
FPGA block RAM or a real memory controller can sit behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import (
    Cat,
    ClockSignal,
    Const,
    Instance,
    Module,
    Mux,
    Shape,
    Signal,
    Value,
    unsigned,
)
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .config import EngineConfig, refuse
from .dsp import targets_ecp5

__all__ = ["BlockMemory", "EngineMemory", "LFSR_TAPS", "SimMemory", "STALL_SEED",
           "engine_memories", "lfsr", "mem_signature", "request_layout", "stall_pattern"]

#: x^16 + x^14 + x^13 + x^11 + 1, a maximal-length Fibonacci LFSR
LFSR_TAPS = (15, 13, 12, 10)
#: the seed of :class:`SimMemory`'s stall LFSR
STALL_SEED = 0x2F1B


def lfsr(m: Module, seed: int, restart=None) -> Signal:
    """A 16-bit LFSR in ``m``'s sync domain (for random stalls in simulation), free-running
    from ``seed``; back to ``seed`` the cycle after ``restart`` (if given) is high."""
    reg = Signal(16, init=seed)
    feedback = reg[LFSR_TAPS[0]] ^ reg[LFSR_TAPS[1]] ^ reg[LFSR_TAPS[2]] ^ reg[LFSR_TAPS[3]]
    m.d.sync += reg.eq(Cat(feedback, reg[:-1]))
    if restart is not None:
        with m.If(restart):
            m.d.sync += reg.eq(seed)
    return reg


def _lfsr_states(seed: int) -> list[int]:
    """One period of :func:`lfsr`'s states from ``seed`` (65,535 of them)."""
    states = [seed]
    state = seed
    while True:
        feedback = 0
        for tap in LFSR_TAPS:
            feedback ^= (state >> tap) & 1
        state = ((state << 1) | feedback) & 0xFFFF
        if state == seed:
            return states
        states.append(state)


def stall_pattern(stall: int) -> list[bool]:
    """Whether :class:`SimMemory` with ``stall`` takes a request, for each cycle of one period
    from its ``restart`` on (the cycle after it first): ``lfsr[:8] >= stall``."""
    if isinstance(stall, bool) or not isinstance(stall, int) or not 0 <= stall <= 255:
        raise ValueError(f"stall is a chance out of 256, 0 to 255, not {stall!r}")
    return [(state & 0xFF) >= stall for state in _lfsr_states(STALL_SEED)]


@dataclass(frozen=True)
class EngineMemory:
    """One of the engine's on-chip memories: ``depth`` rows of ``shape``."""

    shape: data.ArrayLayout
    depth: int

    @property
    def bits(self) -> int:
        return self.shape.size * self.depth

    def read_signature(self) -> wiring.Signature:
        """A read port's signature (a unit's member is its flip, ``In(...)``)."""
        from amaranth.lib.memory import ReadPort

        return ReadPort.Signature(addr_width=ceil_log2(self.depth), shape=self.shape)

    def write_signature(self) -> wiring.Signature:
        """A write port's signature (one enable per row)."""
        from amaranth.lib.memory import WritePort

        return WritePort.Signature(addr_width=ceil_log2(self.depth), shape=self.shape)


def engine_memories(config: EngineConfig) -> dict[str, EngineMemory]:
    """The engine's memories by name: scratchpads ``a`` (rows of ``rows`` operands), ``b``
    (``cols`` operands), ``q`` (``cols`` int32 requantization values) and the accumulator
    ``acc`` (``cols`` accumulators). Sizes from :func:`rtl.isa.geometry`; the engine builds
    them and the units' ports read their signatures from here."""
    from amaranth.hdl import signed

    from .isa import Q_BITS, geometry

    g = geometry(config)
    operand = signed(config.in_bits)
    return {
        "a": EngineMemory(data.ArrayLayout(operand, config.rows), g.a_rows),
        "b": EngineMemory(data.ArrayLayout(operand, config.cols), g.b_rows),
        "q": EngineMemory(data.ArrayLayout(signed(Q_BITS), config.cols), g.q_rows),
        "acc": EngineMemory(data.ArrayLayout(signed(config.acc_bits), config.cols), g.acc_rows),
    }


def request_layout(config: EngineConfig) -> data.StructLayout:
    """A memory request: read or write ``length`` (1..W) bytes at byte address ``addr``."""
    w = config.mem_bytes_per_cycle
    return data.StructLayout({
        "write": 1,
        "addr": 32,
        "length": range(w + 1),
        "data": data.ArrayLayout(8, w),  # write data, byte 0 goes to addr
    })


def mem_signature(config: EngineConfig) -> wiring.Signature:
    """The engine's side of the memory port: requests out, read data in (``ready`` always high:
    the memory need not buffer responses)."""
    w = config.mem_bytes_per_cycle
    return wiring.Signature({
        "req": Out(stream.Signature(request_layout(config))),
        # The engine always takes read data (it has room for every beat it asked for) and says
        # so by holding `ready` high; a plain stream keeps the port a valid top-level interface.
        "rdata": In(stream.Signature(data.ArrayLayout(8, w))),
    })


class SimMemory(wiring.Component):
    """A memory of ``words`` words of W = ``mem_bytes_per_cycle`` bytes, for simulation.

    It accepts one request per cycle (W bytes of bandwidth, shared by reads and writes), at any
    byte alignment. A read accepted in cycle t returns its beat in cycle t + ``mem_latency``
    (bytes past ``length`` read as zero); a write takes effect at the end of cycle t. ``stall``
    (0..255) is the chance out of 256 that the memory refuses a request in a cycle, drawn
    from an LFSR that ``restart`` sets back to its seed (:func:`stall_pattern` is the same
    pattern, for the cycle model). Addresses wrap at the memory's size. The words are in
    ``storage`` for a testbench backdoor; ``init`` is an image of its first bytes (for a
    simulation without one, such as ``amaranth.sim``).
    """

    def __init__(self, config: EngineConfig, *, words: int, init: bytes = b""):
        if words < 2 or words & (words - 1):
            raise refuse(self, f"memory size must be a power of two of words, not {words}")
        w = config.mem_bytes_per_cycle
        if len(init) > words * w:
            raise refuse(self, f"an initial image of {len(init)} bytes does not fit a memory "
                               f"of {words} words of {w} bytes")
        self.config = config
        self.words = words
        self.init = init
        super().__init__({
            "port": In(mem_signature(config)),
            "stall": In(8),
            "restart": In(1),
            "reads": Out(32), "writes": Out(32),
        })

    @property
    def latency(self) -> int:
        """Cycles from a read request's acceptance to its data beat."""
        return self.config.read_latency

    def elaborate(self, platform):
        m = Module()
        w = self.config.mem_bytes_per_cycle
        index_bits = (self.words - 1).bit_length()
        padded = self.init + bytes(-len(self.init) % w)
        m.submodules.storage = storage = Memory(
            shape=data.ArrayLayout(8, w), depth=self.words,
            init=[list(padded[i:i + w]) for i in range(0, len(padded), w)])
        lo_rd = storage.read_port(domain="comb")
        hi_rd = storage.read_port(domain="comb")
        lo_wr = storage.write_port(granularity=1)  # per byte: one array element
        hi_wr = storage.write_port(granularity=1)

        req = self.port.req
        rnd = lfsr(m, STALL_SEED, self.restart)
        m.d.comb += req.ready.eq(rnd[:8] >= self.stall)
        fire = req.valid & req.ready

        # (a one-byte port has no offset: a zero-width signal would be a [-1:0] wire)
        offset = Signal(range(w)) if w > 1 else Const(0, 1)
        word = Signal(index_bits)
        if w > 1:
            m.d.comb += [offset.eq(req.payload.addr % w), word.eq(req.payload.addr // w)]
        else:
            m.d.comb += word.eq(req.payload.addr)
        m.d.comb += [lo_rd.addr.eq(word), hi_rd.addr.eq(word + 1)]

        # Reads: two neighbouring words, shifted so byte `offset` comes first, masked to length.
        both = Cat(lo_rd.data, hi_rd.data)
        shifted = Signal(8 * w)
        m.d.comb += shifted.eq(both.bit_select(offset * 8, 8 * w) if w > 1 else both[:8])
        keep = Signal(w)
        m.d.comb += keep.eq((Const(1, w + 1) << req.payload.length) - 1)
        beat = Signal(8 * w)
        m.d.comb += beat.eq(shifted & Cat(*(keep[i].replicate(8) for i in range(w))))

        # Writes: the same split, the other way: bytes and enables for both words.
        wide_data = Signal(16 * w)
        wide_en = Signal(2 * w)
        m.d.comb += [wide_data.eq(Value.cast(req.payload.data) << (offset * 8)),
                     wide_en.eq(keep << offset)]
        write = fire & req.payload.write
        m.d.comb += [
            lo_wr.addr.eq(word), hi_wr.addr.eq(word + 1),
            lo_wr.data.eq(wide_data[:8 * w]), hi_wr.data.eq(wide_data[8 * w:]),
            lo_wr.en.eq(Cat(*(wide_en[i] & write for i in range(w)))),
            hi_wr.en.eq(Cat(*(wide_en[w + i] & write for i in range(w)))),
        ]

        # The read pipeline: `latency` stages of (valid, beat).
        valid_prev, data_prev = fire & ~req.payload.write, beat
        for n in range(self.latency):
            v, d = Signal(name=f"rd_valid_{n}"), Signal(8 * w, name=f"rd_data_{n}")
            m.d.sync += [v.eq(valid_prev), d.eq(data_prev)]
            valid_prev, data_prev = v, d
        m.d.comb += [self.port.rdata.valid.eq(valid_prev), self.port.rdata.payload.eq(data_prev)]

        with m.If(fire & ~req.payload.write):
            m.d.sync += self.reads.eq(self.reads + 1)
        with m.If(write):
            m.d.sync += self.writes.eq(self.writes + 1)
        return m


#: (deepest rows, widest bits) of an ECP5 block RAM's (DP16KD's) modes, shallowest first
BLOCK_RAM_MODES = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))


def block_slice_bits(depth: int) -> int:
    """The widest column slice of a ``depth``-row memory that one block RAM holds whole."""
    return next((bits for rows, bits in BLOCK_RAM_MODES if depth <= rows), 1)


class BlockMemory(wiring.Component):
    """A memory of ``depth`` rows of ``shape``, held as column slices one block RAM deep.

    Synthesis builds a memory deeper than one block RAM holds at the row's full width from
    several block RAMs stacked in depth and a multiplexer behind their outputs, which on an
    FPGA sits right after the block RAM's slow output and before the register that must take
    it. Cut into slices of :func:`block_slice_bits` columns, each slice fits one block RAM in its
    deepest mode that holds ``depth`` rows: no multiplexer, about as many block RAMs.

    Like :class:`amaranth.lib.memory.Memory` (a component with no ports of its own), it hands
    out ports, which are ``amaranth.lib.memory`` port objects without transparency, so a unit
    declares ``In(ReadPort.Signature(...))`` / ``In(WritePort.Signature(...))`` members and
    ``wiring.connect`` joins them: ``read_port()`` gives ``addr``, ``en`` (high unless driven)
    and ``data`` (read synchronously, the old row when written in the same cycle);
    ``write_port()`` gives ``addr``, ``data`` and ``en``, one enable per ``granularity``
    columns if that is given (as ``Memory.write_port(granularity=...)``), else one.

    With a ``granularity`` of at most 9 columns, a slice in a 9-, 18- or 36-bit mode holds one
    granule per 9-bit lane of the block RAM (a byte per lane for bytes: 8, 16 or 32 columns),
    so each granule has the lane's own byte enable; a slice in a 1-, 2- or 4-bit mode lies
    inside one granule and is written with that granule's enable.

    A read port's ``data`` holds while ``en`` is low by reading the last address again: the
    block RAMs read every cycle. (Yosys otherwise keeps the old output in a register and puts
    a multiplexer behind each block RAM to choose it.) So ``data`` changes while ``en`` is low
    if that row is written meanwhile; nothing in the engine writes a row a port is holding.

    ``read_port(output_register=True)`` adds a register after the read, advancing with ``en``
    like the read itself: ``data`` is the row addressed two enabled cycles earlier. An ECP5
    block RAM's output leaves 5.8 ns after the clock (speed grade 6), and a fabric register
    behind it is often placed too far away for the rest of a 10 ns cycle; the DP16KD's own
    output register (``REGMODE = "OUTREG"``) takes the row inside the block. So on ECP5 (a
    platform whose ``family`` is ``"ecp5"``) such a port is a DP16KD instance per slice, written
    through the memory's one write port, with its read clock enable and output register
    enable driven by ``en`` (``sim/models/DP16KD.v`` is the subset Verilator checks it with);
    elsewhere it is an ordinary synchronous read and a register.
    """

    def __init__(self, *, shape, depth: int, slice_bits: int | None = None,
                 granularity: int | None = None):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
            raise refuse(self, f"depth must be an integer of at least 2, not {depth!r}")
        self.shape = shape
        self.depth = depth
        self.width = Shape.cast(shape).width
        self.slice_bits = slice_bits or block_slice_bits(depth)
        self.granularity = granularity
        self.slices = _slices(self.width, self.slice_bits, granularity)
        self._reads: list[ReadPort] = []
        self._output_registers: set[int] = set()   # id() of the read ports that have one
        self._writes: list[WritePort] = []
        super().__init__(wiring.Signature({}))

    @property
    def addr_width(self) -> int:
        return ceil_log2(self.depth)

    def read_signature(self) -> ReadPort.Signature:
        """The signature of this memory's read ports (a unit's member is its flip: ``In``)."""
        return ReadPort.Signature(addr_width=self.addr_width, shape=self.shape)

    def write_signature(self) -> WritePort.Signature:
        """The signature of this memory's write ports."""
        return WritePort.Signature(addr_width=self.addr_width, shape=self.shape,
                                   granularity=self.granularity)

    def read_port(self, *, output_register: bool = False) -> ReadPort:
        port = self.read_signature().create(path=(f"read{len(self._reads)}",))
        self._reads.append(port)
        if output_register:
            self._output_registers.add(id(port))
        return port

    def write_port(self) -> WritePort:
        port = self.write_signature().create(path=(f"write{len(self._writes)}",))
        self._writes.append(port)
        return port

    def _has_output_register(self, port: ReadPort) -> bool:
        return id(port) in self._output_registers

    def elaborate(self, platform):
        ecp5 = targets_ecp5(platform)
        registered = self._has_output_register
        primitive = [port for port in self._reads if registered(port) and ecp5]
        fabric = [port for port in self._reads if not (registered(port) and ecp5)]
        if primitive and len(self._writes) != 1:
            raise refuse(self, f"a block RAM read port with its output register on ECP5 needs "
                               f"exactly one write port, not {len(self._writes)}")
        m = Module()
        addresses = []
        outputs = []   # what each fabric port's slices drive: its data, or a register's input
        for n, port in enumerate(fabric):
            held = Signal.like(port.addr, name=f"held_addr{n}")
            with m.If(port.en):
                m.d.sync += held.eq(port.addr)
            addresses.append(Mux(port.en, port.addr, held))
            if registered(port):
                read = Signal.like(port.data, name=f"read{n}")
                with m.If(port.en):
                    m.d.sync += port.data.eq(read)
                outputs.append(Value.cast(read))
            else:
                outputs.append(Value.cast(port.data))
        for k, piece in enumerate(self.slices):
            lo, hi = piece.lo, piece.hi
            if fabric:
                m.submodules[f"slice{k}"] = mem = Memory(shape=unsigned(hi - lo),
                                                         depth=self.depth, init=[])
                for address, output in zip(addresses, outputs, strict=True):
                    rd = mem.read_port()
                    m.d.comb += [rd.addr.eq(address), output[lo:hi].eq(rd.data)]
                for port in self._writes:
                    lanes = len(piece.enables)
                    wr = mem.write_port(granularity=(hi - lo) // lanes if lanes > 1 else None)
                    m.d.comb += [wr.addr.eq(port.addr),
                                 wr.en.eq(Cat(*(port.en[e] for e in piece.enables))),
                                 wr.data.eq(Value.cast(port.data)[lo:hi])]
            for n, port in enumerate(primitive):
                m.submodules[f"slice{k}_bram{n}"] = _dp16kd(self._writes[0], port, piece,
                                                            self.slice_bits)
        return m


@dataclass(frozen=True)
class _Slice:
    """Columns ``lo .. hi-1`` of a :class:`BlockMemory` in one block RAM: column ``lo + i``
    on the block's data pin ``pins[i]``, written with the port's enables ``enables`` (one per
    9-bit lane of the block, or one for the whole slice)."""

    lo: int
    hi: int
    pins: tuple[int, ...]
    enables: tuple[int, ...]


def _slices(width: int, bits: int, granularity: int | None) -> list[_Slice]:
    """Cut ``width`` columns into slices of a ``bits``-wide block RAM mode (see BlockMemory)."""
    if granularity is None:
        return [_Slice(lo, min(lo + bits, width), tuple(range(min(bits, width - lo))), (0,))
                for lo in range(0, width, bits)]
    g = granularity
    if g < 1 or width % g:
        raise ValueError(f"write granularity must divide the row width {width}, not {g}")
    if bits >= 9 and g <= 9:
        # one granule per 9-bit lane, each lane with its own byte enable
        per = bits // 9 * g
        return [_Slice(lo, min(lo + per, width),
                       tuple(i // g * 9 + i % g for i in range(min(per, width - lo))),
                       tuple(range(lo // g, min(lo + per, width) // g)))
                for lo in range(0, width, per)]
    if bits < 9 and g % bits == 0:
        # the slice lies inside one granule
        return [_Slice(lo, lo + bits, tuple(range(bits)), (lo // g,))
                for lo in range(0, width, bits)]
    raise ValueError(f"a block memory with a write granularity of {g} columns cannot be cut "
                     f"into {bits}-bit block RAM slices")


def _dp16kd(write, read, piece: _Slice, bits: int) -> Module:
    """One ECP5 DP16KD holding the columns of ``piece``: written on port A, read on port B
    through its output register (both clock enables ``read.en``). In its 36-bit mode the block
    is pseudo dual port (data on both ports' pins, byte enables on ADA0..3), as Yosys's own
    mapping (``share/lattice/brams_map_16kd.v``) uses it; in the 18-bit mode the byte enables
    are ADA0..1. Each byte enable writes one 9-bit lane."""
    if bits not in (36, 18, 9, 4, 2, 1):
        raise ValueError(f"a DP16KD slice is 1, 2, 4, 9, 18 or 36 bits wide, not {bits}")
    shift = {36: 5, 18: 4, 9: 3, 4: 2, 2: 1, 1: 0}[bits]
    lanes = {36: 4, 18: 2}.get(bits, 0)   # byte enables on the low address pins
    wide = bits == 36
    data_in = Signal(36)
    data_out = Signal(36)
    w_addr = Signal(14)
    r_addr = Signal(14)
    we = Signal()
    ports = {}
    if lanes and len(piece.enables) > 1:
        enables = Cat(*(write.en[e] for e in piece.enables))
        byte_enables = Cat(enables, Const(0, lanes - len(enables)))   # (lanes the slice lacks)
    else:
        enables = write.en[piece.enables[0]]
        byte_enables = Const((1 << lanes) - 1, lanes) if lanes else None
    # the row address sits above the byte enables (the bits that select within 36 bits)
    a_pins = Cat(byte_enables, w_addr[lanes:]) if lanes else w_addr
    for i in range(14):
        ports[f"i_ADA{i}"] = a_pins[i]
        ports[f"i_ADB{i}"] = r_addr[i]
    for i in range(18):
        ports[f"i_DIA{i}"] = data_in[i]
        ports[f"i_DIB{i}"] = data_in[18 + i] if wide else Const(0)
        ports[f"o_DOA{i}"] = data_out[i]
        ports[f"o_DOB{i}"] = data_out[18 + i]
    instance = Instance(
        "DP16KD",
        p_DATA_WIDTH_A=bits, p_DATA_WIDTH_B=bits,
        p_REGMODE_A="OUTREG" if wide else "NOREG", p_REGMODE_B="OUTREG",
        p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
        p_CSDECODE_A="0b000", p_CSDECODE_B="0b000", p_WRITEMODE_A="READBEFOREWRITE",
        p_WRITEMODE_B="READBEFOREWRITE", p_GSR="AUTO",
        # (in the 36-bit mode Yosys holds WEA high and writes with CEA: so do both here)
        i_CLKA=ClockSignal(), i_CEA=we, i_WEA=we, i_OCEA=read.en, i_RSTA=0,
        i_CSA0=0, i_CSA1=0, i_CSA2=0,
        i_CLKB=ClockSignal(), i_CEB=read.en, i_WEB=0, i_OCEB=read.en, i_RSTB=0,
        i_CSB0=0, i_CSB1=0, i_CSB2=0,
        **ports)
    m = Module()
    m.submodules.bram = instance
    column = Value.cast(write.data)
    m.d.comb += [w_addr.eq(write.addr << shift), r_addr.eq(read.addr << shift),
                 we.eq(enables.any()),
                 Cat(*(data_in[p] for p in piece.pins)).eq(column[piece.lo:piece.hi])]
    # 36 bits: {DOB, DOA}; narrower: port B's pins (data sits at the low ones)
    out = data_out if wide else data_out[18:]
    m.d.comb += Value.cast(read.data)[piece.lo:piece.hi].eq(Cat(*(out[p] for p in piece.pins)))
    return m
