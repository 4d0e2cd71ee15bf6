"""The instruction set: one ``amaranth.lib.data`` layout, read by the RTL decoder and the assembler.

A program is a list of instructions in four kinds, dispatched to three queues (:data:`QUEUE_OF`)
that run decoupled, as in VTA:

- ``LOAD``   (load queue): rows from memory into scratchpad A, B or Q (requantization params);
- ``COMPUTE`` (compute queue): one tile on the array, from scratchpads A/B into the accumulator;
- ``STORE``  (store queue): rows of the accumulator to memory, raw int32 or requantized to int8;
- ``CONFIG`` (store queue): the requantizer's zero point, clamp and ReLU for the stores after it.

Dependency tokens order the queues without a global barrier. Each instruction may pop (wait for
and take) and push (give) a token to the queue before (``prev``) or after (``next``) its own in
the chain load -> compute -> store: a LOAD pushes ``next`` when its rows are in the scratchpad and
pops ``next`` to wait until compute has freed the buffer it overwrites; a COMPUTE pops ``prev``
for its operands and ``next`` for a free accumulator buffer, and pushes ``prev`` (operands free)
and ``next`` (results ready) once its results are in the accumulator; a STORE pops ``prev`` for
results and pushes ``prev`` when the accumulator rows are free again.

Memory is byte-addressed. Scratchpad rows: A holds ``rows`` int8 (os: a column of A; ws: a row
of A), B holds ``cols`` int8 (a row of B), Q holds ``cols`` int32 (:data:`Q_BLOCK`: one row each
of bias, multiplier and shift per block of ``cols`` output channels). Accumulator rows hold
``cols`` accumulators.

Everything here is written once and read by the RTL (decoder, units), the assembler, the tiler,
the operand builder and the cycle model: the layout, the opcode -> queue map, the token each
dependency flag moves, the Q block's rows, and :class:`ErrorCode`, what the hardware raises for
each kind of instruction the assembler refuses (:attr:`AsmError.code` names the same).

Adding an instruction: its opcode in :class:`Op`, its layout in the ``args`` union, its queue in
:data:`QUEUE_OF`, its flags in :data:`POPS`/:data:`PUSHES`, its checks in :func:`check` (with
the :class:`ErrorCode` the hardware raises) and in ``rtl/dispatch.py``'s decoder (``_stage1``,
``_overrun``), then the unit that runs it (its timing property) and its line in
``mapping/program.py``'s model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from amaranth.hdl import Shape, signed
from amaranth.lib import data, enum

from .config import ConfigError, EngineConfig

__all__ = [
    "ADDR_BITS", "AsmError", "ErrorCode", "Insn", "Op", "POPS", "PUSHES", "QUEUE_OF",
    "Q_BLOCK", "Q_BLOCK_ROWS", "Queue", "SEG_BITS", "Spad", "TOKENS", "X0_BITS", "X0_MIN",
    "assemble", "check", "compute", "config", "config_softmax", "decode", "disassemble",
    "encode", "geometry", "insn_layout", "load", "parse", "parse_numbered", "q_block_row",
    "store", "store_elem_bytes", "store_row_bytes", "store_seg_bytes", "store_segs",
]

ADDR_BITS = 32
ROW_BITS = 16
LEN_BITS = 12
#: bits of a STORE's extra segment count (rows up to 2**SEG_BITS accumulator rows long)
SEG_BITS = 10
#: bits of CONFIG's Shiftmax x0
X0_BITS = 18


class Op(enum.Enum, shape=3):
    CONFIG = 0
    LOAD = 1
    COMPUTE = 2
    STORE = 3


class Spad(enum.Enum, shape=2):
    A = 0
    B = 1
    Q = 2


class Queue(enum.Enum, shape=2):
    """The engine's three instruction queues, one per unit, in the order data flows."""

    LOAD = 0
    COMPUTE = 1
    STORE = 2


#: The queue each operation goes to. CONFIG sets the store path's post-op stages, so it runs in
#: order with the stores around it.
QUEUE_OF = {Op.LOAD: Queue.LOAD, Op.COMPUTE: Queue.COMPUTE, Op.STORE: Queue.STORE,
            Op.CONFIG: Queue.STORE}

#: The dependency-token channels between neighbouring queues: load -> compute (operands are in
#: the scratchpads), compute -> load (a scratchpad buffer is free again), compute -> store
#: (results are in the accumulator), store -> compute (an accumulator buffer is free again).
TOKENS = ("l2c", "c2l", "c2s", "s2c")
#: The channel each dependency flag pops (waits for and takes), per operation
POPS = {Op.LOAD: {"pop_next": "c2l"},
        Op.COMPUTE: {"pop_prev": "l2c", "pop_next": "s2c"},
        Op.STORE: {"pop_prev": "c2s"},
        Op.CONFIG: {}}
#: The channel each dependency flag pushes (gives a token on), per operation
PUSHES = {Op.LOAD: {"push_next": "l2c"},
          Op.COMPUTE: {"push_prev": "c2l", "push_next": "c2s"},
          Op.STORE: {"push_prev": "s2c"},
          Op.CONFIG: {}}


class ErrorCode(enum.Enum, shape=4):
    """Why the engine refused an instruction (it stops and raises ``error``). Each is the
    hardware's side of an assembler check (:attr:`AsmError.code`)."""

    NONE = 0
    OPCODE = 1     # not one of the operations
    SPAD = 2       # LOAD into a scratchpad that does not exist
    OVERRUN = 3    # rows beyond a scratchpad or the accumulator
    EXTENT = 4     # zero rows, zero extent, a row longer than the scratchpad's, cols > array
    DEPS = 5       # a dependency flag that makes no sense on the instruction's queue
    RANGE = 6      # a CONFIG value outside the operand range, or qmin above qmax
    ALIGN = 7      # an int32 transfer (Q load, raw store) not on a 4-byte boundary
    STRIDE = 8     # a store whose rows would overwrite each other (stride < row bytes)
    ADDRESS = 9    # a transfer that runs past the 32-bit address space (found as it runs)
    MODE = 10      # a softmax STORE without requant or of more rows than the array has; causal
                   # without softmax


deps_layout = data.StructLayout({
    "pop_prev": 1, "pop_next": 1, "push_prev": 1, "push_next": 1,
})

load_layout = data.StructLayout({
    "spad": Spad,
    "row": ROW_BITS,        # first scratchpad row
    "rows": ROW_BITS,       # rows to load
    "length": LEN_BITS,     # bytes per row (the rest of the row is zero-filled)
    "addr": ADDR_BITS,      # memory byte address of the first row
    "stride": ADDR_BITS,    # bytes between rows in memory
})

compute_layout = data.StructLayout({
    "a_row": ROW_BITS,      # first row of scratchpad A
    "b_row": ROW_BITS,      # first row of scratchpad B
    "acc_row": ROW_BITS,    # first accumulator row written
    "extent": ROW_BITS,     # os: K (rows of A and B); ws: M (rows of A; B gives `rows` weights)
    "accumulate": 1,        # add into the accumulator (else overwrite)
})

store_layout = data.StructLayout({
    "acc_row": ROW_BITS,    # first accumulator row
    "rows": ROW_BITS,       # rows to store
    "cols": LEN_BITS,       # elements per row (<= cols)
    "addr": ADDR_BITS,      # memory byte address of the first row
    "stride": ADDR_BITS,    # bytes between rows in memory
    "requant": 1,           # 1: through the requantizer to int8; 0: raw little-endian int32
    "q_row": ROW_BITS,      # scratchpad Q row of the channel block (Q_BLOCK: bias, mult, shift)
    "extra_segs": SEG_BITS,  # segments after the first: each row is 1 + extra_segs accumulator
                            # rows (seg_stride apart) written side by side in memory
    "seg_stride": ROW_BITS,  # accumulator rows between a row's segments
    "softmax": 1,           # Shiftmax over each whole row (rtl/softmax.py; requant must be set)
    "causal": 1,            # softmax: element j of row r takes part only if j <= mask_row + r
    "mask_row": ROW_BITS,   # causal: the query index of the store's first row
})

config_layout = data.StructLayout({
    "zero_point": signed(16),
    "qmin": signed(16),
    "qmax": signed(16),
    "relu": 1,
    "softmax": 1,           # 0: sets zero_point, qmin, qmax, relu; 1: sets x0 alone
    "x0": signed(X0_BITS),  # Shiftmax's floor(-1 / scale) of the logits, in [-(2**16 - 1), -1]
})

#: The instruction word. Written once: the RTL decodes it as a View, the assembler as a Const.
insn_layout = data.StructLayout({
    "op": Op,
    "deps": deps_layout,
    "args": data.UnionLayout({
        "load": load_layout, "compute": compute_layout, "store": store_layout,
        "config": config_layout,
    }),
})

INSN_BITS = insn_layout.size

#: bits of a Q-scratchpad value
Q_BITS = 32
#: the rows of one channel block of scratchpad Q, in order; each holds ``cols`` int32 values,
#: one per output channel of the block
Q_BLOCK = ("bias", "multiplier", "shift")
Q_BLOCK_ROWS = len(Q_BLOCK)
#: channel blocks scratchpad Q holds
Q_BLOCKS = 256


def q_block_row(block: int, name: str) -> int:
    """The scratchpad Q row (or, times the row size, the memory offset) of row ``name`` of
    channel block ``block``."""
    return block * Q_BLOCK_ROWS + Q_BLOCK.index(name)


_DEP_NAMES = tuple(name for name, _ in deps_layout)
#: Which dependency flags an operation may carry: those that move a token
_ALLOWED_DEPS = {op: set(POPS[op]) | set(PUSHES[op]) for op in Op}


def _layout_fields(layout: data.StructLayout) -> tuple[str, ...]:
    return tuple(name for name, _ in layout)


_LAYOUTS = {Op.LOAD: load_layout, Op.COMPUTE: compute_layout, Op.STORE: store_layout,
            Op.CONFIG: config_layout}
_FIELDS = {op: _layout_fields(layout) for op, layout in _LAYOUTS.items()}


class AsmError(ConfigError):
    """An instruction or program the engine cannot run; the message says which and why, and
    ``code`` is the :class:`ErrorCode` the engine raises for the same instruction (``None``
    for what no instruction word can hold: a value wider than its field, an unknown field)."""

    def __init__(self, message: str, code: ErrorCode | None = None):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Geometry:
    """Row counts and widths of the engine's memories, derived from an EngineConfig."""

    a_rows: int
    b_rows: int
    q_rows: int
    acc_rows: int
    a_row_bytes: int
    b_row_bytes: int
    q_row_bytes: int
    acc_row_bytes: int


def geometry(config: EngineConfig) -> Geometry:
    """Scratchpad and accumulator sizes in rows: ``spad_kib`` each for A and B, ``acc_kib``."""
    acc_row_bytes = config.cols * ((config.acc_bits + 7) // 8)
    rows = config.rows
    cols = config.cols
    in_bytes = (config.in_bits + 7) // 8
    g = Geometry(
        a_rows=min(config.spad_kib * 1024 // (rows * in_bytes), 1 << ROW_BITS),
        b_rows=min(config.spad_kib * 1024 // (cols * in_bytes), 1 << ROW_BITS),
        q_rows=Q_BLOCK_ROWS * Q_BLOCKS,
        acc_rows=min(config.acc_kib * 1024 // acc_row_bytes, 1 << ROW_BITS),
        a_row_bytes=rows * in_bytes, b_row_bytes=cols * in_bytes, q_row_bytes=cols * Q_BITS // 8,
        acc_row_bytes=acc_row_bytes,
    )
    if min(g.a_rows, g.b_rows) < max(rows, cols) or g.acc_rows < max(rows, cols):
        raise ConfigError(f"scratchpads of {config.spad_kib} KiB / accumulator of "
                          f"{config.acc_kib} KiB cannot hold one {rows}x{cols} tile")
    return g


@dataclass(frozen=True)
class Insn:
    """One instruction, in Python. ``args`` holds the fields of its kind (see the layouts).

    Instructions are values: equal when op, fields and flags are, and hashable (a program's
    instructions can key a dict or fill a set)."""

    op: Op
    args: dict[str, int] = field(default_factory=dict)
    deps: frozenset[str] = frozenset()

    def __hash__(self) -> int:
        return hash((self.op, tuple(sorted(self.args.items())), self.deps))

    @property
    def queue(self) -> Queue:
        """The queue (and unit) that runs this instruction."""
        return QUEUE_OF[self.op]

    def pops(self) -> tuple[str, ...]:
        """The token channels this instruction waits for and takes (see :data:`TOKENS`)."""
        return tuple(ch for flag, ch in POPS[self.op].items() if flag in self.deps)

    def pushes(self) -> tuple[str, ...]:
        """The token channels this instruction gives a token on when it is done."""
        return tuple(ch for flag, ch in PUSHES[self.op].items() if flag in self.deps)

    def __str__(self) -> str:
        parts = [self.op.name.lower()]
        for name in _FIELDS[self.op]:
            value = self.args.get(name, 0)
            if name == "spad":
                parts.append(Spad(value).name if value in (s.value for s in Spad)
                             else f"spad={value}")
            elif name in ("addr",) and value:
                parts.append(f"{name}=0x{value:x}")
            else:
                parts.append(f"{name}={value}")
        parts += sorted(self.deps, key=_DEP_NAMES.index)
        return " ".join(parts)


def load(spad: Spad | str, row: int, rows: int, length: int, addr: int, stride: int,
         *deps: str) -> Insn:
    spad = Spad[spad] if isinstance(spad, str) else spad
    return Insn(Op.LOAD, dict(spad=spad.value, row=row, rows=rows, length=length, addr=addr,
                              stride=stride), frozenset(deps))


def compute(a_row: int, b_row: int, acc_row: int, extent: int, accumulate: bool,
            *deps: str) -> Insn:
    return Insn(Op.COMPUTE, dict(a_row=a_row, b_row=b_row, acc_row=acc_row, extent=extent,
                                 accumulate=int(accumulate)), frozenset(deps))


def store(acc_row: int, rows: int, cols: int, addr: int, stride: int, requant: bool,
          *deps: str, q_row: int = 0, segs: int = 1, seg_stride: int = 0,
          softmax: bool = False, causal: bool = False, mask_row: int = 0) -> Insn:
    """A STORE; ``segs`` accumulator rows ``seg_stride`` apart make one stored row (the
    last segment ``cols`` wide, the others the array's width); ``causal`` masks a softmax
    store's row ``r`` to its elements ``j <= mask_row + r``."""
    return Insn(Op.STORE, dict(acc_row=acc_row, rows=rows, cols=cols, addr=addr, stride=stride,
                               requant=int(requant), q_row=q_row, extra_segs=segs - 1,
                               seg_stride=seg_stride, softmax=int(softmax),
                               causal=int(causal), mask_row=mask_row), frozenset(deps))


def config(zero_point: int = 0, qmin: int = -128, qmax: int = 127, relu: bool = False) -> Insn:
    """A CONFIG of the requantizer's settings."""
    return Insn(Op.CONFIG, dict(zero_point=zero_point, qmin=qmin, qmax=qmax, relu=int(relu),
                                softmax=0, x0=0))


def config_softmax(x0: int) -> Insn:
    """A CONFIG of Shiftmax's ``x0 = floor(-1 / scale)`` for the softmax STOREs after it."""
    return Insn(Op.CONFIG, dict(zero_point=0, qmin=0, qmax=0, relu=0, softmax=1, x0=x0))


#: the most negative x0 Shiftmax takes (|x0| 2**15 stays below 2**31)
X0_MIN = -((1 << 16) - 1)


def check(insn: Insn, cfg: EngineConfig, where: str = "") -> None:
    """Refuse an instruction this engine cannot run, naming the field and the limit.

    The :class:`AsmError` carries the :class:`ErrorCode` the engine raises for the same word:
    every check here but a field's width (which no word can violate) is made by the hardware
    too (``rtl/dispatch.py`` as it decodes, the load and store units for the address range).
    """
    if not isinstance(insn.op, Op):
        raise AsmError(f"{where}{insn.op!r} is not an operation", ErrorCode.OPCODE)
    g = geometry(cfg)
    at = f"{where}{insn.op.name.lower()}: "
    a = insn.args
    unknown = set(a) - set(_FIELDS[insn.op])
    if unknown:
        raise AsmError(f"{at}unknown field(s) {', '.join(sorted(unknown))}")
    for name in _FIELDS[insn.op]:
        v = a.get(name, 0)
        if not isinstance(v, int) or isinstance(v, bool):
            raise AsmError(f"{at}{name} must be an integer, not {v!r}")
        lo, hi = _RANGES[insn.op][name]
        if not lo <= v <= hi:
            raise AsmError(f"{at}{name}={v} does not fit its {_ARGS[insn.op][name][1]}-bit "
                           f"field ({lo}..{hi})")
    unknown_deps = set(insn.deps) - set(_DEP_NAMES)
    if unknown_deps:
        raise AsmError(f"{at}unknown dependency flag(s) "
                       f"{', '.join(sorted(map(repr, unknown_deps)))} (they are "
                       f"{', '.join(_DEP_NAMES)})")
    bad_deps = set(insn.deps) - _ALLOWED_DEPS[insn.op]
    if bad_deps:
        raise AsmError(f"{at}dependency flag(s) {', '.join(sorted(bad_deps))} make no sense on "
                       f"a {insn.op.name.lower()} instruction", ErrorCode.DEPS)
    if insn.op == Op.LOAD:
        if a["spad"] not in (s.value for s in Spad):
            raise AsmError(f"{at}scratchpad {a['spad']} does not exist (A, B or Q)",
                           ErrorCode.SPAD)
        spad = Spad(a["spad"])
        depth, width = {Spad.A: (g.a_rows, g.a_row_bytes), Spad.B: (g.b_rows, g.b_row_bytes),
                        Spad.Q: (g.q_rows, g.q_row_bytes)}[spad]
        _span(at, f"scratchpad {spad.name}", a["row"], a["rows"], depth)
        if not 1 <= a["length"] <= width:
            raise AsmError(f"{at}a row of {a['length']} bytes does not fit scratchpad "
                           f"{spad.name}'s {width}-byte rows", ErrorCode.EXTENT)
        if spad == Spad.Q and (a["addr"] % 4 or a["stride"] % 4 or a["length"] % 4):
            raise AsmError(f"{at}Q rows hold int32 values: addr, stride and length must be "
                           f"multiples of 4 (got addr={a['addr']}, stride={a['stride']}, "
                           f"length={a['length']})", ErrorCode.ALIGN)
        _mem(at, a["addr"], a["stride"], a["rows"], a["length"])
    elif insn.op == Op.COMPUTE:
        if a["extent"] < 1:
            raise AsmError(f"{at}extent must be at least 1, not {a['extent']}", ErrorCode.EXTENT)
        os_ = cfg.dataflow == "os"
        _span(at, "scratchpad A", a["a_row"], a["extent"], g.a_rows)
        _span(at, "scratchpad B", a["b_row"], a["extent"] if os_ else cfg.rows, g.b_rows)
        _span(at, "the accumulator", a["acc_row"], cfg.rows if os_ else a["extent"], g.acc_rows)
    elif insn.op == Op.STORE:
        if a["rows"] < 1:
            raise AsmError(f"{at}row count must be at least 1, not {a['rows']}",
                           ErrorCode.EXTENT)
        if not 1 <= a["cols"] <= cfg.cols:
            raise AsmError(f"{at}cols must be between 1 and {cfg.cols}, not {a['cols']}",
                           ErrorCode.EXTENT)
        _span(at, "the accumulator", a["acc_row"] + a["extra_segs"] * a["seg_stride"],
              a["rows"], g.acc_rows)
        if a["requant"]:
            _span(at, "scratchpad Q", a["q_row"], Q_BLOCK_ROWS, g.q_rows)
        if a["softmax"] and not a["requant"]:
            raise AsmError(f"{at}a softmax store takes int8 logits: requant must be set",
                           ErrorCode.MODE)
        if a.get("causal", 0) and not a["softmax"]:
            raise AsmError(f"{at}causal masks a softmax: softmax must be set", ErrorCode.MODE)
        if a["softmax"] and a["rows"] > cfg.rows:
            raise AsmError(f"{at}a softmax store keeps statistics for at most {cfg.rows} rows "
                           f"(the array's), not {a['rows']}", ErrorCode.MODE)
        width = store_row_bytes(insn, cfg)
        if not a["requant"] and (a["addr"] % 4 or (a["rows"] > 1 and a["stride"] % 4)):
            raise AsmError(f"{at}misaligned int32 store: addr ({a['addr']}) and stride "
                           f"({a['stride']}) must be multiples of 4", ErrorCode.ALIGN)
        if a["rows"] > 1 and a["stride"] < width:
            raise AsmError(f"{at}stride {a['stride']} is shorter than a stored row of {width} "
                           f"bytes: rows would overwrite each other", ErrorCode.STRIDE)
        _mem(at, a["addr"], a["stride"], a["rows"], width)
    elif insn.op == Op.CONFIG and a["softmax"]:
        if not X0_MIN <= a["x0"] <= -1:
            raise AsmError(f"{at}x0 {a['x0']} is outside [{X0_MIN}, -1] (Shiftmax's "
                           f"floor(-1 / scale) of the logits)", ErrorCode.RANGE)
    elif insn.op == Op.CONFIG:
        lo, hi = -(1 << (cfg.in_bits - 1)), (1 << (cfg.in_bits - 1)) - 1
        for name in ("zero_point", "qmin", "qmax"):
            if not lo <= a[name] <= hi:
                raise AsmError(f"{at}{name} {a[name]} is outside the int{cfg.in_bits} range",
                               ErrorCode.RANGE)
        if a["qmin"] > a["qmax"]:
            raise AsmError(f"{at}qmin {a['qmin']} is above qmax {a['qmax']}", ErrorCode.RANGE)
    else:   # pragma: no cover - every Op has a branch above
        raise AsmError(f"{at}no checks written for this operation", ErrorCode.OPCODE)


def store_segs(insn: Insn) -> int:
    """Accumulator rows (segments) per stored row of a STORE."""
    return insn.args.get("extra_segs", 0) + 1


def store_elem_bytes(insn: Insn) -> int:
    """Bytes per stored element: int8 when a STORE requantizes, else int32."""
    return 1 if insn.args["requant"] else 4


def store_seg_bytes(insn: Insn, cfg: EngineConfig) -> tuple[int, int]:
    """Bytes of a stored row's segments: (every segment but the last, the last)."""
    elem = store_elem_bytes(insn)
    return cfg.cols * elem, insn.args["cols"] * elem


def store_row_bytes(insn: Insn, cfg: EngineConfig) -> int:
    """Bytes a STORE writes per row: its segments side by side, every one but the last the
    array's ``cols`` elements wide, the last ``cols`` (the field) wide."""
    full, last = store_seg_bytes(insn, cfg)
    return (store_segs(insn) - 1) * full + last


def _span(at: str, what: str, first: int, count: int, depth: int) -> None:
    if count < 1:
        raise AsmError(f"{at}row count must be at least 1, not {count}", ErrorCode.EXTENT)
    if first < 0 or first + count > depth:
        raise AsmError(f"{at}rows {first}..{first + count - 1} overrun {what} "
                       f"({depth} rows)", ErrorCode.OVERRUN)


def _mem(at: str, addr: int, stride: int, rows: int, length: int) -> None:
    end = addr + stride * (rows - 1) + length
    if end > (1 << ADDR_BITS):
        raise AsmError(f"{at}memory range 0x{addr:x}..0x{end:x} is outside the "
                       f"{ADDR_BITS}-bit address space", ErrorCode.ADDRESS)


def _fields_of(layout: data.Layout, base: int = 0) -> dict[str, tuple[int, int, bool]]:
    return {name: (base + f.offset, f.width, Shape.cast(f.shape).signed)
            for name, f in layout}


# Bit positions of every field, read from the layout once, so that encoding thousands of
# instructions does not build an Amaranth constant for each.
_OP = insn_layout["op"]
_DEPS = _fields_of(deps_layout, insn_layout["deps"].offset)
_ARGS = {op: _fields_of(insn_layout["args"].shape[op.name.lower()].shape,
                        insn_layout["args"].offset) for op in Op}
#: the values each field can hold, from its width and signedness
_RANGES = {op: {name: ((-(1 << (w - 1)), (1 << (w - 1)) - 1) if sgn else (0, (1 << w) - 1))
                for name, (_, w, sgn) in fields.items()} for op, fields in _ARGS.items()}


def encode(insn: Insn, cfg: EngineConfig) -> int:
    """The instruction word as an integer, after checking it against ``cfg``."""
    check(insn, cfg)
    return _pack(insn)


def _pack(insn: Insn) -> int:
    """The word, unchecked (tests use it to make words the assembler refuses). Fields are cut
    to their width."""
    word = insn.op.value << _OP.offset
    for name in insn.deps:
        word |= 1 << _DEPS[name][0]
    for name, (offset, width, _) in _ARGS[insn.op].items():
        word |= (insn.args.get(name, 0) & ((1 << width) - 1)) << offset
    return word


def decode(word: int) -> Insn:
    """The instruction an integer word holds (no checks: see :func:`check`)."""
    code = (word >> _OP.offset) & ((1 << _OP.width) - 1)
    try:
        op = Op(code)
    except ValueError:
        raise AsmError(f"0x{word:x} has no instruction: opcode {code}", ErrorCode.OPCODE) \
            from None
    args = {}
    for name, (offset, width, sgn) in _ARGS[op].items():
        v = (word >> offset) & ((1 << width) - 1)
        if sgn and v >> (width - 1):
            v -= 1 << width
        args[name] = v
    deps = frozenset(name for name, (offset, _, _) in _DEPS.items() if (word >> offset) & 1)
    return Insn(op, args, deps)


def assemble(program: Iterable[Insn], cfg: EngineConfig) -> list[int]:
    """Encode a whole program, naming the instruction index of the first bad one."""
    words = []
    for pc, insn in enumerate(program):
        check(insn, cfg, where=f"instruction {pc}: ")
        words.append(_pack(insn))
    return words


def disassemble(words: Sequence[int]) -> str:
    """One line per instruction, in the text form :func:`parse` reads."""
    return "\n".join(str(decode(w)) for w in words)


_TOKEN = re.compile(r"^([a-z_][a-z0-9_]*)=(-?(?:0x[0-9a-fA-F]+|[0-9]+))$")


def _number(text: str) -> int:
    """A decimal or ``0x`` hexadecimal integer; ``010`` is ten (not Python's refusal)."""
    negative = text.startswith("-")
    digits = text[1:] if negative else text
    value = int(digits, 16) if digits[:2].lower() == "0x" else int(digits, 10)
    return -value if negative else value


def parse(text: str) -> list[Insn]:
    """Read the text form: ``load A row=0 rows=4 length=4 addr=0x100 stride=16 push_next``.

    One instruction per line; ``#`` starts a comment; missing fields are zero; numbers are
    decimal or ``0x`` hexadecimal.
    """
    return [insn for _, insn in parse_numbered(text)]


def parse_numbered(text: str) -> list[tuple[int, Insn]]:
    """:func:`parse`, each instruction with its line number (for messages that name it)."""
    program = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        try:
            op = Op[words[0].upper()]
        except KeyError:
            raise AsmError(f"line {n}: unknown instruction {words[0]!r}") from None
        args: dict[str, int] = {}
        deps = set()
        rest = words[1:]
        if op == Op.LOAD:
            if not rest or rest[0].upper() not in Spad.__members__:
                raise AsmError(f"line {n}: load needs a scratchpad (A, B or Q) first")
            args["spad"] = Spad[rest[0].upper()].value
            rest = rest[1:]
        for w in rest:
            if w in _DEP_NAMES:
                deps.add(w)
                continue
            m = _TOKEN.match(w)
            if not m or m.group(1) not in _FIELDS[op]:
                raise AsmError(f"line {n}: {w!r} is not a field of {op.name.lower()} "
                               f"({', '.join(_FIELDS[op])}) nor a dependency flag")
            if m.group(1) in args:
                raise AsmError(f"line {n}: field {m.group(1)} given twice")
            args[m.group(1)] = _number(m.group(2))
        program.append((n, Insn(op, {k: args.get(k, 0) for k in _FIELDS[op]},
                                 frozenset(deps))))
    return program
