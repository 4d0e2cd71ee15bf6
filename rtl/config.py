"""The engine's parameters: one frozen, validated object that every part of Tessera reads.

The RTL generator, the mapper, the simulator, the FPGA flow and the sweeps all take an
:class:`EngineConfig`. It is built from a named preset, a TOML file, keyword arguments or command
line flags, and it checks itself when it is made, so an impossible engine is refused with a message
that names the field instead of failing somewhere deep inside elaboration.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "DATAFLOWS",
    "EngineConfig",
    "PRESETS",
    "add_config_arguments",
    "config_from_args",
    "preset",
    "read_text_file",
    "read_toml",
    "refuse",
]

#: Output-stationary: each PE keeps one output element, A flows right and B flows down.
#: Weight-stationary: each PE keeps one weight, A flows right and partial sums flow down.
DATAFLOWS = ("os", "ws")


class ConfigError(ValueError):
    """An engine configuration that cannot be built; the message names the field."""


def refuse(block: object, message: str) -> ConfigError:
    """The error for a block whose parameters are wrong, raised from its ``__init__``.

    Amaranth warns about every elaboratable that is created and never used; one whose
    constructor refused its parameters was never meant to be, so it is silenced first.
    """
    block._MustUse__silence = True
    return ConfigError(message)


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")


def _positive_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, not {value!r}")


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of one Tessera engine.

    Sizes are in PEs, bits, KiB, bytes per cycle and cycles; ``clock_mhz`` only turns cycles into
    time. The array has ``rows`` x ``cols`` processing elements. With the ``"os"`` dataflow a tile
    computes a ``rows`` x ``cols`` block of C over any K; with ``"ws"`` the array holds a ``rows``
    (K) x ``cols`` (N) block of weights and streams any number of rows of A through it.
    """

    rows: int = 16
    cols: int = 16
    dataflow: str = "os"
    #: operand width (signed), in bits
    in_bits: int = 8
    #: accumulator width (signed, two's complement, wraps), in bits
    acc_bits: int = 32
    #: EcoFormer hash code length b
    hash_bits: int = 16
    #: operand scratchpad capacity, in KiB (for each of the A and B scratchpads)
    spad_kib: int = 64
    #: accumulator memory capacity, in KiB
    acc_kib: int = 64
    #: external memory bandwidth, in bytes per cycle
    mem_bytes_per_cycle: int = 16
    #: external memory latency from request to first data, in cycles
    mem_latency: int = 32
    #: clock frequency used to turn cycles into time, in MHz
    clock_mhz: float = 100.0
    #: the preset this configuration started from, for reports; not a hardware parameter
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "in_bits", "acc_bits", "hash_bits", "spad_kib", "acc_kib",
                     "mem_bytes_per_cycle"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.mem_latency, bool) or not isinstance(self.mem_latency, int) \
                or self.mem_latency < 0:
            raise ConfigError(
                f"mem_latency must be a non-negative integer, not {self.mem_latency!r}")
        _positive_number("clock_mhz", self.clock_mhz)
        if self.dataflow not in DATAFLOWS:
            raise ConfigError(
                f"dataflow must be one of {', '.join(DATAFLOWS)}, not {self.dataflow!r}")
        if self.rows > 256 or self.cols > 256:
            raise ConfigError(
                f"array of {self.rows}x{self.cols} is larger than the 256x256 the generator "
                "supports")
        if self.in_bits < 2 or self.in_bits > 16:
            raise ConfigError(f"in_bits must be between 2 and 16, not {self.in_bits}")
        if self.acc_bits > 64:
            raise ConfigError(f"acc_bits must be at most 64, not {self.acc_bits}")
        # A product of two signed in_bits operands needs 2*in_bits bits ((-2^(n-1))^2 = 2^(2n-2)
        # is positive and needs one bit more than 2n-2); anything narrower loses products outright.
        if self.acc_bits < 2 * self.in_bits:
            raise ConfigError(
                f"acc_bits ({self.acc_bits}) is too narrow for {self.in_bits}-bit operands: "
                f"a product needs {2 * self.in_bits} bits")

    # -- derived figures -------------------------------------------------------------------------

    @property
    def pes(self) -> int:
        """Processing elements in the array."""
        return self.rows * self.cols

    @property
    def read_latency(self) -> int:
        """Cycles from a memory read's acceptance to its data: ``mem_latency``, at least one (a
        memory answers no earlier than the cycle after it was asked)."""
        return max(1, self.mem_latency)

    @property
    def key(self) -> str:
        """A short stable hash of the hardware parameters, for build caches and result files."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def label(self) -> str:
        """A human-readable name such as ``default 16x16 os`` (or ``3x5 os`` with no preset)."""
        shape = f"{self.rows}x{self.cols} {self.dataflow}"
        return shape if self.name in ("custom", f"{self.rows}x{self.cols}") else \
            f"{self.name} {shape}"

    def to_dict(self) -> dict[str, Any]:
        """The hardware parameters as plain values (the preset name is left out)."""
        d = dataclasses.asdict(self)
        d.pop("name")
        return d

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with some fields changed, validated again. Unknown fields are refused."""
        unknown = sorted(set(changes) - _FIELDS)
        if unknown:
            raise ConfigError(f"unknown engine parameter(s): {', '.join(unknown)}")
        if "name" not in changes:
            changes["name"] = "custom" if changes else self.name
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, base: EngineConfig | None = None) -> EngineConfig:
        """Build from a mapping; a ``preset`` key names the starting point."""
        values = dict(values)
        start = base if base is not None else preset("default")
        if "preset" in values:
            start = preset(values.pop("preset"))
        return start.replace(**values) if values else start

    @classmethod
    def from_toml(cls, path: str | Path, *, base: EngineConfig | None = None) -> EngineConfig:
        """Load from a TOML file whose top level (or ``[engine]`` table) holds the fields.

        Example::

            preset = "edge"      # optional starting point (else ``base``, else "default")
            rows = 4
            dataflow = "ws"
        """
        return cls.from_dict(_read_toml(path), base=base)


def read_text_file(path: str | Path, what: str, error: type[Exception] = ConfigError) -> str:
    """The text of a file the user named; any reason it cannot be read is an ``error`` naming
    the file as ``what`` ("engine config file", "topology file", ...) and the reason. UTF-8,
    with or without a byte-order mark; UTF-16 (with its mark) is read too."""
    path = Path(path)
    name = f"{what} {str(path)!r}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{name} does not exist") from None
    except IsADirectoryError:
        raise error(f"{name} is a directory, not a file") from None
    except PermissionError:
        raise error(f"{name} cannot be read (permission denied)") from None
    except OSError as e:
        raise error(f"{name} cannot be read: {e.strerror}") from None
    try:
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return raw.decode("utf-16")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error(f"{name} is not text in UTF-8 (or UTF-16 with a byte-order mark)") from None


def write_text_file(path: str | Path, text: str, error: type[Exception] = ConfigError) -> Path:
    """Write a file the user named (its folder made as needed); any reason it cannot be written
    is an ``error`` naming the file and the reason. Returns the path written."""
    target = Path(path)
    try:
        if target.is_dir():
            raise error(f"{str(path)!r} is a directory: give a file name")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as e:
        raise error(f"cannot write {str(path)!r}: {e.strerror}") from None
    return target


def read_toml(path: str | Path, what: str, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """The table a TOML file holds; any reason it cannot be read is an ``error`` naming the file
    as ``what`` ("engine config file", "sweep spec", ...) and the reason."""
    name = f"{what} {str(path)!r}"
    try:
        return tomllib.loads(read_text_file(path, what, error))
    except tomllib.TOMLDecodeError as e:
        raise error(f"{name} is not valid TOML: {e}") from None


def _read_toml(path: str | Path) -> dict[str, Any]:
    data = read_toml(path, "engine config file")
    if "engine" in data:
        if not isinstance(data["engine"], dict):
            raise ConfigError(f"{path}: [engine] must be a table")
        data = data["engine"]
    return data


_FIELDS = {f.name for f in dataclasses.fields(EngineConfig)}

#: Named design points. ``tiny`` keeps tests fast, ``edge`` is a small FPGA-class engine,
#: ``default`` is the reference engine the mapper and benchmarks use, ``large`` is a big array.
PRESETS: dict[str, EngineConfig] = {
    "tiny": EngineConfig(rows=4, cols=4, spad_kib=16, acc_kib=16, mem_bytes_per_cycle=4,
                         mem_latency=8, name="tiny"),
    "edge": EngineConfig(rows=8, cols=8, spad_kib=32, acc_kib=32, mem_bytes_per_cycle=8,
                         mem_latency=16, name="edge"),
    "default": EngineConfig(name="default"),
    "large": EngineConfig(rows=32, cols=32, spad_kib=256, acc_kib=128, mem_bytes_per_cycle=32,
                          mem_latency=32, name="large"),
}


def preset(name: str) -> EngineConfig:
    """The named design point; ``"RxC"`` (``"16x16"``) names a preset by its array size."""
    if name in PRESETS:
        return PRESETS[name]
    for cfg in PRESETS.values():
        if name == f"{cfg.rows}x{cfg.cols}":
            return cfg
    choices = ", ".join(f"{n} ({c.rows}x{c.cols})" for n, c in PRESETS.items())
    raise ConfigError(f"unknown preset {name!r}; choose one of {choices}")


# -- command line --------------------------------------------------------------------------------

_FLAGS: list[tuple[str, type, str]] = [
    ("rows", int, "PE rows"),
    ("cols", int, "PE columns"),
    ("dataflow", str, "os (output-stationary) or ws (weight-stationary)"),
    ("in_bits", int, "operand width in bits"),
    ("acc_bits", int, "accumulator width in bits"),
    ("hash_bits", int, "EcoFormer hash bits b"),
    ("spad_kib", int, "operand scratchpad capacity, KiB"),
    ("acc_kib", int, "accumulator memory capacity, KiB"),
    ("mem_bytes_per_cycle", int, "memory bandwidth, bytes per cycle"),
    ("mem_latency", int, "memory latency, cycles"),
    ("clock_mhz", float, "clock, MHz: for time figures; an FPGA build's target"),
]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--preset``, ``--config FILE`` and one flag per engine parameter to ``parser``."""
    group = parser.add_argument_group("engine configuration")
    group.add_argument("--preset", default=None,
                       help=f"starting design point: {', '.join(PRESETS)} (default: default)")
    group.add_argument("--config", metavar="FILE", default=None,
                       help="TOML file with engine parameters (applied after --preset)")
    for name, typ, text in _FLAGS:
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None,
                           metavar=typ.__name__.upper() if name != "dataflow" else "{os,ws}",
                           help=text)


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    """The configuration the flags describe: preset, then TOML file, then individual flags."""
    cfg = preset(args.preset) if args.preset else preset("default")
    if args.config:
        cfg = EngineConfig.from_toml(args.config, base=cfg)
    overrides = {name: getattr(args, name) for name, _, _ in _FLAGS
                 if getattr(args, name, None) is not None}
    return cfg.replace(**overrides) if overrides else cfg
