"""Reports of a mapped workload: a rich table for people, CSV and JSON for scripts."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from .mapper import MapResult

__all__ = ["CSV_FIELDS", "to_csv", "to_json", "to_table"]

CSV_FIELDS = ["name", "kind", "shape", "count", "cycles", "compute_cycles", "stall_cycles",
              "utilization", "macs", "dram_bytes", "onchip_bytes", "energy_pj", "verified",
              "muls", "adds", "hardware_energy_pj", "stage"]


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.2f}"


def to_table(result: MapResult) -> Any:
    """A ``rich.table.Table``: one row per op, then totals. Modeled rows are marked ``*``."""
    from rich.table import Table

    params = ", ".join(f"{k} {v}" for k, v in result.params.items())
    mode = "ideal memory" if result.ideal_memory else \
        f"{result.config.mem_bytes_per_cycle} B/cycle memory"
    table = Table(title=f"{result.workload} ({params}) on {result.config.label}, {mode}",
                  caption=f"* modeled vector unit ({result.config.cols} elements/cycle), not "
                          f"RTL-verified; energy: {result.energy_source}")
    paper = result.count == "paper"
    cols = ["op", "kind", "shape", "count", "cycles", "stall cycles", "util %", "MACs",
            "bytes", "pJ"] + (["muls", "adds"] if paper else [])
    for c in cols:
        table.add_column(c, justify="left" if c in ("op", "kind", "shape") else "right",
                         no_wrap=True)
    for o in result.ops:
        mark = "*" if o.verified == "modeled" else ""
        row = [o.name + mark, o.kind, o.shape, str(o.count), f"{o.cycles:,}",
               f"{o.stall_cycles:,}", f"{100 * o.utilization:.1f}", _si(o.macs),
               _si(o.dram_bytes), _si(o.energy_pj)]
        if paper:
            row += [_si(o.muls), _si(o.adds)]
        table.add_row(*row)
    t = result.totals()
    row = ["total", "", "", "", f"{t['cycles']:,}", f"{t['stall_cycles']:,}",
           f"{100 * t['utilization']:.1f}", _si(t["macs"]), _si(t["dram_bytes"]),
           _si(t["energy_pj"])]
    if paper:
        row += [_si(t["muls"]), _si(t["adds"])]
    table.add_section()
    table.add_row(*row, style="bold")
    return table


def summary(result: MapResult) -> str:
    """One line of totals: cycles, time, utilization, MACs, bytes, energy."""
    t = result.totals()
    line = (f"total: {t['cycles']:,} cycles ({t['time_ms']:.3f} ms at "
            f"{result.config.clock_mhz:g} MHz), utilization {100 * t['utilization']:.1f}%, "
            f"{_si(t['macs'])} MACs, {_si(t['dram_bytes'])}B DRAM, "
            f"{t['hardware_energy_pj'] / 1e9:.3f} mJ; modeled (vector) cycles "
            f"{t['modeled_cycles']:,}")
    if result.count == "paper":
        line += (f"\nEcoFormer paper counting: {t['muls'] / 1e9:.3f} G muls, "
                 f"{t['adds'] / 1e9:.3f} G adds, {t['energy_pj'] / 1e9:.3f} G pJ (= mJ); this "
                 f"engine: {t['hardware_energy_pj'] / 1e9:.3f} mJ")
    return line


def to_json(result: MapResult) -> str:
    """The whole result (config, params, totals, ops) as indented JSON."""
    return json.dumps(result.to_dict(), indent=2)


def to_csv(result: MapResult) -> str:
    """One line per op with :data:`CSV_FIELDS`, then a ``total`` line."""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for o in result.ops:
        w.writerow(o.to_dict())
    t = result.totals()
    w.writerow({"name": "total", **{k: v for k, v in t.items() if k in CSV_FIELDS}})
    return out.getvalue()
