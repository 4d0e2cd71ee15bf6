"""The instruction set: one ``amaranth.lib.data`` layout, read by the RTL decoder and the assembler.

A program is a list of instructions in four kinds, dispatched to three queues that run
decoupled, as in VTA:

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
of A), B holds ``cols`` int8 (a row of B), Q holds ``cols`` int32 (three rows per channel block:
bias, multiplier, shift). Accumulator rows hold ``cols`` accumulators.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from amaranth.hdl import signed
from amaranth.lib import data, enum

from .config import ConfigError, EngineConfig

__all__ = [
    "ADDR_BITS", "AsmError", "Insn", "Op", "Spad", "assemble", "disassemble", "decode",
    "encode", "geometry", "insn_layout", "parse",
]

ADDR_BITS = 32
ROW_BITS = 16
LEN_BITS = 12


class Op(enum.Enum, shape=3):
    CONFIG = 0
    LOAD = 1
    COMPUTE = 2
    STORE = 3


class Spad(enum.Enum, shape=2):
    A = 0
    B = 1
    Q = 2


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
    "q_row": ROW_BITS,      # scratchpad Q row of the bias (multiplier +1, shift +2)
})

config_layout = data.StructLayout({
    "zero_point": signed(16),
    "qmin": signed(16),
    "qmax": signed(16),
    "relu": 1,
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
#: channel blocks the Q scratchpad holds (three rows each)
Q_BLOCKS = 256

_DEP_NAMES = ("pop_prev", "pop_next", "push_prev", "push_next")
# Which dependency flags make sense on which queue (no queue before load, none after store).
_ALLOWED_DEPS = {
    Op.LOAD: {"pop_next", "push_next"},
    Op.COMPUTE: set(_DEP_NAMES),
    Op.STORE: {"pop_prev", "push_prev"},
    Op.CONFIG: set(),
}
_FIELDS = {
    Op.LOAD: ("spad", "row", "rows", "length", "addr", "stride"),
    Op.COMPUTE: ("a_row", "b_row", "acc_row", "extent", "accumulate"),
    Op.STORE: ("acc_row", "rows", "cols", "addr", "stride", "requant", "q_row"),
    Op.CONFIG: ("zero_point", "qmin", "qmax", "relu"),
}


class AsmError(ConfigError):
    """An instruction or program the engine cannot run; the message says which and why."""


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
        q_rows=3 * Q_BLOCKS,
        acc_rows=min(config.acc_kib * 1024 // acc_row_bytes, 1 << ROW_BITS),
        a_row_bytes=rows * in_bytes, b_row_bytes=cols * in_bytes, q_row_bytes=cols * 4,
        acc_row_bytes=acc_row_bytes,
    )
    if min(g.a_rows, g.b_rows) < max(rows, cols) or g.acc_rows < max(rows, cols):
        raise ConfigError(f"scratchpads of {config.spad_kib} KiB / accumulator of "
                          f"{config.acc_kib} KiB cannot hold one {rows}x{cols} tile")
    return g


@dataclass(frozen=True)
class Insn:
    """One instruction, in Python. ``args`` holds the fields of its kind (see the layouts)."""

    op: Op
    args: dict[str, int] = field(default_factory=dict)
    deps: frozenset[str] = frozenset()

    def __str__(self) -> str:
        parts = [self.op.name.lower()]
        for name in _FIELDS[self.op]:
            value = self.args.get(name, 0)
            if name == "spad":
                parts.append(Spad(value).name)
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
          q_row: int = 0, *deps: str) -> Insn:
    return Insn(Op.STORE, dict(acc_row=acc_row, rows=rows, cols=cols, addr=addr, stride=stride,
                               requant=int(requant), q_row=q_row), frozenset(deps))


def config(zero_point: int = 0, qmin: int = -128, qmax: int = 127, relu: bool = False) -> Insn:
    return Insn(Op.CONFIG, dict(zero_point=zero_point, qmin=qmin, qmax=qmax, relu=int(relu)))


def check(insn: Insn, cfg: EngineConfig, where: str = "") -> None:
    """Refuse an instruction this engine cannot run, naming the field and the limit."""
    g = geometry(cfg)
    at = f"{where}{insn.op.name.lower()}: "
    a = insn.args
    unknown = set(a) - set(_FIELDS[insn.op])
    if unknown:
        raise AsmError(f"{at}unknown field(s) {', '.join(sorted(unknown))}")
    bad_deps = set(insn.deps) - _ALLOWED_DEPS[insn.op]
    if bad_deps:
        raise AsmError(f"{at}dependency flag(s) {', '.join(sorted(bad_deps))} make no sense on "
                       f"the {insn.op.name.lower()} queue")
    for name in _FIELDS[insn.op]:
        v = a.get(name, 0)
        if not isinstance(v, int) or isinstance(v, bool):
            raise AsmError(f"{at}{name} must be an integer, not {v!r}")
    if insn.op == Op.LOAD:
        spad = Spad(a["spad"])
        depth, width = {Spad.A: (g.a_rows, g.a_row_bytes), Spad.B: (g.b_rows, g.b_row_bytes),
                        Spad.Q: (g.q_rows, g.q_row_bytes)}[spad]
        _span(at, f"scratchpad {spad.name}", a["row"], a["rows"], depth)
        if not 1 <= a["length"] <= width:
            raise AsmError(f"{at}a row of {a['length']} bytes does not fit scratchpad "
                           f"{spad.name}'s {width}-byte rows")
        _mem(at, a["addr"], a["stride"], a["rows"], a["length"])
        if spad == Spad.Q and (a["addr"] % 4 or a["stride"] % 4 or a["length"] % 4):
            raise AsmError(f"{at}Q rows hold int32 values: addr, stride and length must be "
                           f"multiples of 4 (got addr={a['addr']}, stride={a['stride']}, "
                           f"length={a['length']})")
    elif insn.op == Op.COMPUTE:
        if a["extent"] < 1:
            raise AsmError(f"{at}extent must be at least 1, not {a['extent']}")
        os_ = cfg.dataflow == "os"
        _span(at, "scratchpad A", a["a_row"], a["extent"], g.a_rows)
        _span(at, "scratchpad B", a["b_row"], a["extent"] if os_ else cfg.rows, g.b_rows)
        _span(at, "the accumulator", a["acc_row"], cfg.rows if os_ else a["extent"], g.acc_rows)
        if a["accumulate"] not in (0, 1):
            raise AsmError(f"{at}accumulate must be 0 or 1")
    elif insn.op == Op.STORE:
        _span(at, "the accumulator", a["acc_row"], a["rows"], g.acc_rows)
        if not 1 <= a["cols"] <= cfg.cols:
            raise AsmError(f"{at}cols must be between 1 and {cfg.cols}, not {a['cols']}")
        if a["requant"] not in (0, 1):
            raise AsmError(f"{at}requant must be 0 or 1")
        width = a["cols"] * (1 if a["requant"] else 4)
        _mem(at, a["addr"], a["stride"], a["rows"], width)
        if a["rows"] > 1 and a["stride"] < width:
            raise AsmError(f"{at}stride {a['stride']} is shorter than a stored row of {width} "
                           f"bytes: rows would overwrite each other")
        if not a["requant"] and (a["addr"] % 4 or (a["rows"] > 1 and a["stride"] % 4)):
            raise AsmError(f"{at}misaligned int32 store: addr ({a['addr']}) and stride "
                           f"({a['stride']}) must be multiples of 4")
        if a["requant"]:
            _span(at, "scratchpad Q", a["q_row"], 3, g.q_rows)
    else:
        lo, hi = -(1 << (cfg.in_bits - 1)), (1 << (cfg.in_bits - 1)) - 1
        for name in ("zero_point", "qmin", "qmax"):
            if not lo <= a[name] <= hi:
                raise AsmError(f"{at}{name} {a[name]} is outside the int{cfg.in_bits} range")
        if a["qmin"] > a["qmax"]:
            raise AsmError(f"{at}qmin {a['qmin']} is above qmax {a['qmax']}")
        if a["relu"] not in (0, 1):
            raise AsmError(f"{at}relu must be 0 or 1")


def _span(at: str, what: str, first: int, count: int, depth: int) -> None:
    if count < 1:
        raise AsmError(f"{at}row count must be at least 1, not {count}")
    if first < 0 or first + count > depth:
        raise AsmError(f"{at}rows {first}..{first + count - 1} overrun {what} "
                       f"({depth} rows)")


def _mem(at: str, addr: int, stride: int, rows: int, length: int) -> None:
    end = addr + stride * (rows - 1) + length
    if addr < 0 or stride < 0 or end > (1 << ADDR_BITS):
        raise AsmError(f"{at}memory range 0x{addr:x}..0x{end:x} is outside the "
                       f"{ADDR_BITS}-bit address space")


def _fields_of(layout: data.Layout, base: int = 0) -> dict[str, tuple[int, int]]:
    return {name: (base + f.offset, f.width) for name, f in layout}


# Bit positions of every field, read from the layout once, so that encoding thousands of
# instructions does not build an Amaranth constant for each.
_OP = insn_layout["op"]
_DEPS = _fields_of(deps_layout, insn_layout["deps"].offset)
_ARGS = {op: _fields_of(insn_layout["args"].shape[op.name.lower()].shape,
                        insn_layout["args"].offset) for op in Op}


def encode(insn: Insn, cfg: EngineConfig) -> int:
    """The instruction word as an integer, after checking it against ``cfg``."""
    check(insn, cfg)
    return _pack(insn)


def _pack(insn: Insn) -> int:
    word = insn.op.value << _OP.offset
    for name in insn.deps:
        word |= 1 << _DEPS[name][0]
    for name, (offset, width) in _ARGS[insn.op].items():
        word |= (insn.args.get(name, 0) & ((1 << width) - 1)) << offset
    return word


def decode(word: int) -> Insn:
    """The instruction an integer word holds (no checks: see :func:`check`)."""
    code = (word >> _OP.offset) & ((1 << _OP.width) - 1)
    try:
        op = Op(code)
    except ValueError:
        raise AsmError(f"0x{word:x} has no instruction: opcode {code}") from None
    args = {}
    for name, (offset, width) in _ARGS[op].items():
        v = (word >> offset) & ((1 << width) - 1)
        if name in ("zero_point", "qmin", "qmax") and v >> (width - 1):
            v -= 1 << width
        args[name] = v
    deps = frozenset(name for name, (offset, _) in _DEPS.items() if (word >> offset) & 1)
    return Insn(op, args, deps)


def assemble(program: Iterable[Insn], cfg: EngineConfig) -> list[int]:
    """Encode a whole program, naming the instruction index of the first bad one."""
    words = []
    for pc, insn in enumerate(program):
        check(insn, cfg, where=f"instruction {pc}: ")
        words.append(encode(insn, cfg))
    return words


def disassemble(words: Sequence[int]) -> str:
    """One line per instruction, in the text form :func:`parse` reads."""
    return "\n".join(str(decode(w)) for w in words)


_TOKEN = re.compile(r"^([a-z_]+)=(-?(?:0x[0-9a-fA-F]+|\d+))$")


def parse(text: str) -> list[Insn]:
    """Read the text form: ``load A row=0 rows=4 length=4 addr=0x100 stride=16 push_next``.

    One instruction per line; ``#`` starts a comment; missing fields are zero.
    """
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
            args[m.group(1)] = int(m.group(2), 0)
        program.append(Insn(op, {k: args.get(k, 0) for k in _FIELDS[op]}, frozenset(deps)))
    return program
