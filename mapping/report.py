"""Reports of a mapped workload: a rich table for people, CSV and JSON for scripts.

People get units scaled to read well (``4.779 ms``, ``1.23 mJ``, ``12.3 MiB``) and a table that
fits the terminal: when it is narrow, the least needed columns are left out (and named in the
caption), never digits cut. Scripts get fixed, stated units (cycles, bytes, pJ) with clean
numbers: CSV holds one row per op and nothing else; the totals are in the JSON and the summary.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from .mapper import MapResult
from .units import clean, format_bytes, format_energy_pj, format_time_ms

__all__ = ["CSV_FIELDS", "summary", "to_csv", "to_json", "to_table"]

#: CSV columns; units: cycles, MACs, bytes, pJ
CSV_FIELDS = ["name", "kind", "shape", "count", "cycles", "compute_cycles", "stall_cycles",
              "utilization", "macs", "dram_bytes", "onchip_bytes", "energy_pj", "verified",
              "muls", "adds", "hardware_energy_pj", "stage"]

#: columns a narrow terminal drops first, in order
_DROP_ORDER = ("stall cycles", "kind", "MACs", "count", "util %", "DRAM")


def _count(x: float) -> str:
    """A count (MACs, multiplications) with a k / M / G / T prefix."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.0f}"


def to_table(result: MapResult, width: int | None = None) -> Any:
    """A ``rich.table.Table``: one row per op, then totals. Modeled rows are marked ``*``.

    ``width``: the columns it may take; columns are dropped (least needed first, named in the
    caption) until the table fits, so no number is ever cut."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    params = ", ".join(f"{k} {v}" for k, v in result.params.items())
    mode = "ideal memory" if result.ideal_memory else \
        f"{result.config.mem_bytes_per_cycle} B/cycle memory"
    paper = result.count == "paper"
    columns = ["op", "kind", "shape", "count", "cycles", "stall cycles", "util %", "MACs",
               "DRAM", "energy"] + (["muls", "adds"] if paper else [])
    rows = []
    for o in result.ops:
        mark = "*" if o.verified == "modeled" else ""
        row = [o.name + mark, o.kind, o.shape, f"{o.count:,}", f"{o.cycles:,}",
               f"{o.stall_cycles:,}", f"{100 * o.utilization:.1f}", _count(o.macs),
               format_bytes(o.dram_bytes), format_energy_pj(o.energy_pj)]
        if paper:
            row += [_count(o.muls), _count(o.adds)]
        rows.append(row)
    t = result.totals()
    total = ["total", "", "", "", f"{t['cycles']:,}", f"{t['stall_cycles']:,}",
             f"{100 * t['utilization']:.1f}", _count(t["macs"]), format_bytes(t["dram_bytes"]),
             format_energy_pj(t["energy_pj"])]
    if paper:
        total += [_count(t["muls"]), _count(t["adds"])]

    def build(keep: list[str]) -> Table:
        dropped = [c for c in columns if c not in keep]
        caption = (f"* modeled vector unit ({result.config.cols} elements/cycle), not "
                   f"RTL-verified; energy: {result.energy_source}")
        if dropped:
            caption += f"; left out to fit: {', '.join(dropped)}"
        table = Table(title=f"{result.workload} ({params}) on {result.config.label}, {mode}",
                      caption=caption)
        index = [columns.index(c) for c in keep]
        for c in keep:
            table.add_column(c, justify="left" if c in ("op", "kind", "shape") else "right",
                             no_wrap=True)
        for row in rows:
            table.add_row(*(row[i] for i in index))
        table.add_section()
        table.add_row(*(total[i] for i in index), style="bold")
        return table

    keep = list(columns)
    table = build(keep)
    if width is None:
        return table
    console = Console(width=max(width, 40), file=io.StringIO())
    for name in _DROP_ORDER:
        if Measurement.get(console, console.options, table).minimum <= width:
            break
        if name in keep:
            keep.remove(name)
            table = build(keep)
    return table


def summary(result: MapResult) -> str:
    """One line of totals: cycles, time, utilization, MACs, bytes, energy."""
    t = result.totals()
    line = (f"total: {t['cycles']:,} cycles ({format_time_ms(t['time_ms'])} at "
            f"{result.config.clock_mhz:g} MHz), utilization {100 * t['utilization']:.1f}%, "
            f"{_count(t['macs'])} MACs, {format_bytes(t['dram_bytes'])} DRAM, "
            f"{format_energy_pj(t['hardware_energy_pj'])}; modeled (vector) cycles "
            f"{t['modeled_cycles']:,}")
    if result.count == "paper":
        line += (f"\nEcoFormer paper counting: {_count(t['muls'])} muls, "
                 f"{_count(t['adds'])} adds, {format_energy_pj(t['energy_pj'])}; this engine: "
                 f"{format_energy_pj(t['hardware_energy_pj'])}")
    return line


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return clean(value)


def to_json(result: MapResult) -> str:
    """The whole result (config, params, totals, ops) as indented JSON; units in the keys'
    names or as in :data:`CSV_FIELDS`."""
    return json.dumps(_clean(result.to_dict()), indent=2)


def to_csv(result: MapResult) -> str:
    """One line per op with :data:`CSV_FIELDS` (cycles, MACs, bytes, pJ); no totals line."""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for o in result.ops:
        w.writerow(_clean(o.to_dict()))
    return out.getvalue()
