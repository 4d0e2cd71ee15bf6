"""Verilator's line, branch and toggle coverage of the engine, summarized per unit.

A native build with ``coverage=True`` (``sim.build.build``) counts every block, branch arm and
bit toggle of the generated Verilog and writes the counts at the end of a run
(``coverage.dat``, Verilator's ``SystemC::Coverage-3`` text format: one ``C '<key>' count``
line per point, the key's fields separated by ``\\x01`` and ``\\x02``). :func:`read` merges
files; :func:`summarize` counts covered points per unit (the instance under the engine:
``dispatch``, ``load``, ``compute``, ``store``, ...) and names what no run reached, as the
Python line of the RTL that made it: the coverage build's Verilog keeps Amaranth's ``src``
attributes, and an uncovered block is traced to the register or wire it drives.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["UnitCoverage", "read", "summarize"]

KINDS = ("line", "branch", "toggle")


def read(paths, into: dict[str, int] | None = None) -> dict[str, int]:
    """Counts per coverage point of one or more ``coverage.dat`` files, summed."""
    counts = into if into is not None else {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        with open(path, encoding="latin-1") as f:
            for line in f:
                if not line.startswith("C '"):
                    continue
                key, count = line[3:].rsplit("' ", 1)
                counts[key] = counts.get(key, 0) + int(count)
    return counts


def _fields(key: str) -> dict[str, str]:
    return dict(part.split("\x02", 1) for part in key.split("\x01") if part)


@dataclass
class UnitCoverage:
    unit: str
    covered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    #: Python lines of the RTL (``file:line``) with a block or branch no run reached
    uncovered: list[str] = field(default_factory=list)

    def percent(self, kind: str) -> float | None:
        return 100 * self.covered[kind] / self.total[kind] if self.total[kind] else None


_SRC = re.compile(r'\(\* src = "([^"]+)" \*\)')
_TARGET = re.compile(r"^\s*(\\?\S+)\s*=\s")
_REG = re.compile(r"^\s*(\\?\S+)\s*<=\s*(\\?\S+)\s*;")


class _Sources:
    """From a line of the coverage build's Verilog to the Python line that made it."""

    def __init__(self, verilog: Path):
        self.lines = verilog.read_text().splitlines()
        self.module = [0] * len(self.lines)   # line -> the line its module starts at
        self.src: dict[tuple[int, str], str] = {}     # (module, signal) -> "file:line"
        self.feeds: dict[tuple[int, str], str] = {}   # (module, $N) -> the register it feeds
        pending, start = None, 0
        for i, text in enumerate(self.lines):
            if text.startswith("module "):
                start = i
            self.module[i] = start
            m = _SRC.search(text)
            if m and text.strip().startswith("(*"):
                pending = m.group(1)
                continue
            if pending:
                decl = re.match(r"\s*(?:reg|wire|input|output)\b.*?(\\?\S+)\s*;", text)
                if decl:
                    self.src.setdefault((start, decl.group(1)), pending)
                elif text.strip().startswith("always @(posedge"):
                    reg = _REG.match(self.lines[i + 1]) if i + 1 < len(self.lines) else None
                    if reg:
                        self.src.setdefault((start, reg.group(1)), pending)
                        self.feeds.setdefault((start, reg.group(2)), reg.group(1))
            pending = None

    def generated(self, line: int) -> bool:
        """Whether Verilog line ``line`` is a statement the Verilog writer adds (an empty
        ``if`` on a constant), not the design's."""
        return 0 < line <= len(self.lines) and "verilog_backend.cc" in self.lines[line - 1]

    def name(self, line: int) -> str:
        """``file.py:line (signal)`` for Verilog line ``line`` (1-based), or the Verilog line."""
        i = min(line, len(self.lines)) - 1
        mod = self.module[i]
        while i > mod and not self.lines[i].lstrip().startswith("always"):
            i -= 1
        target = None
        for text in self.lines[i + 1: line + 40]:
            m = _TARGET.match(text)
            if m and not text.lstrip().startswith("if"):
                target = m.group(1)
                break
        signal = self.feeds.get((mod, target), target) if target else None
        src = self.src.get((mod, signal)) or self.src.get((mod, target or ""))
        if src:
            where = src.split("/rtl/", 1)[-1] if "/rtl/" in src else src.rsplit("/", 1)[-1]
            return f"{where} ({signal.lstrip(chr(92))})" if signal else where
        return f"tessera_top.v:{line}"


def _unit(hierarchy: str) -> str:
    parts = hierarchy.split(".")[1:]      # TOP.tessera_top.engine.load... -> tessera_top...
    if len(parts) >= 3 and parts[1] == "engine":
        return parts[2].split("$")[0]
    if len(parts) >= 2 and parts[1] == "engine":
        return "engine (glue)"
    return "harness" if len(parts) < 2 else f"harness.{parts[1].split('$')[0]}"


def summarize(counts: dict[str, int], verilog: Path | None = None) -> list[UnitCoverage]:
    """Covered and total points per unit and kind; with the build's ``verilog``, the Python
    lines of blocks and branches that no run reached."""
    sources = _Sources(verilog) if verilog is not None and Path(verilog).is_file() else None
    units: dict[str, UnitCoverage] = {}
    missed: dict[str, set[int]] = defaultdict(set)
    for key, count in counts.items():
        f = _fields(key)
        kind = f.get("page", "").split("/")[0].removeprefix("v_")
        if kind not in KINDS:
            continue
        line = int(f["l"]) if f.get("l", "").isdigit() else 0
        if sources is not None and sources.generated(line):
            continue
        unit = _unit(f.get("h", "TOP"))
        u = units.setdefault(unit, UnitCoverage(unit))
        u.total[kind] += 1
        if count > 0:
            u.covered[kind] += 1
        elif kind in ("line", "branch") and line:
            missed[unit].add(line)
    for unit, lines in missed.items():
        names = [sources.name(n) if sources else f"tessera_top.v:{n}" for n in sorted(lines)]
        units[unit].uncovered = sorted(dict.fromkeys(names))
    return sorted(units.values(), key=lambda u: u.unit)
