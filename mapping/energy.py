"""Energy per action, and the EcoFormer paper's way of counting multiplications and additions.

:class:`EnergyTable` prices what the engine does, in pJ: one int8 multiply-accumulate, one int32
addition (EcoFormer's sign-mode products and the vector unit's element operations), a byte read
or written in a scratchpad or the accumulator memory, a byte moved to or from DRAM. The default
is Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm:

- 8-bit multiply 0.2 pJ, 8-bit add 0.03 pJ, 32-bit add 0.1 pJ: an int8 MAC into a 32-bit
  accumulator is a multiply and a 32-bit add, 0.3 pJ;
- 8 KB SRAM, 64-bit read 10 pJ: 1.25 pJ per byte, used for scratchpads and the accumulator
  (reads and writes alike);
- DRAM 1.3-2.6 nJ per 64 bits: the midpoint, 1.95 nJ / 8 bytes = 243.75 pJ per byte.

A TOML file replaces any of the fields (top level or under ``[energy]``)::

    mac_pj = 0.25
    dram_byte_pj = 160.0

:func:`paper_counts` counts the way ``ziplab/EcoFormer`` ``pvt/get_energy.py`` does: the mmcv
complexity counter's figure (every linear and convolution MAC, a convolution's bias additions,
two per element for an affine LayerNorm) counted once as multiplications and once as additions;
softmax attention's ``QK^T`` and ``AV`` MACs likewise plus one multiply per score for the scale;
EcoFormer attention by their formula (additions only for the hash-code products); 3.7 pJ per
multiplication and 0.9 pJ per addition (their figures, Horowitz's 32-bit float multiply and
add).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtl.config import ConfigError, read_toml

from .workloads import Op

__all__ = ["DEFAULT", "PAPER_ADD_PJ", "PAPER_MUL_PJ", "EnergyTable", "paper_counts"]

#: EcoFormer's energy per multiplication / addition, pJ (pvt/get_energy.py)
PAPER_MUL_PJ = 3.7
PAPER_ADD_PJ = 0.9


@dataclass(frozen=True)
class EnergyTable:
    """Energy per action, in pJ."""

    #: one int8 x int8 multiply accumulated into 32 bits
    mac_pj: float = 0.3
    #: one 32-bit addition (sign-mode product, vector-unit element operation)
    add_pj: float = 0.1
    #: per byte read from / written to a scratchpad
    spad_read_byte_pj: float = 1.25
    spad_write_byte_pj: float = 1.25
    #: per byte read from / written to the accumulator memory
    acc_read_byte_pj: float = 1.25
    acc_write_byte_pj: float = 1.25
    #: per byte moved to or from DRAM
    dram_byte_pj: float = 243.75
    #: where the figures come from
    source: str = "Horowitz, ISSCC 2014, 45 nm"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "source":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"energy {f.name} must be a non-negative number, not {v!r}")

    @classmethod
    def from_toml(cls, path: str | Path) -> EnergyTable:
        """Load a table: the fields given replace the defaults; unknown fields are refused."""
        path = Path(path)
        data: Any = read_toml(path, "energy table")
        data = data.get("energy", data)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [energy] must be a table of figures in pJ, not "
                              f"{data!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{path}: unknown energy field(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(names))}")
        for name, value in data.items():
            if name == "source":
                if not isinstance(value, str):
                    raise ConfigError(f"{path}: source must be a string, not {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{path}: {name} must be a non-negative number of pJ, not "
                                  f"{value!r}")
        if "source" not in data:
            data["source"] = str(path)
        return dataclasses.replace(cls(), **data)


DEFAULT = EnergyTable()


def paper_counts(op: Op) -> tuple[int, int]:
    """(multiplications, additions) of all ``op.count`` instances, counted as EcoFormer does."""
    if op.paper is not None:
        muls, adds = op.paper
    elif op.kind in ("linear", "matmul", "sign_matmul"):
        muls = adds = op.m * op.k * op.n
    elif op.kind == "conv":
        muls = adds = op.m * op.k * op.n + op.bias
    elif op.kind == "dwconv":
        muls = adds = op.elements * op.taps + op.bias
    elif op.kind == "layernorm":
        muls = adds = 2 * op.elements
    else:
        muls = adds = 0  # softmax, GELU, residual adds: not counted by mmcv
    return muls * op.count, adds * op.count
