"""Utilization of whole GEMMs on the RTL engine, measured in simulation, against targets.

    .venv/bin/python benchmarks/utilization.py [--preset default] [--mem-bytes 16]

For each GEMM and dataflow: the program the mapper makes runs on the Verilator model of the
engine (int8 operands, requantized int8 output), every element is checked against the golden
model, and the table shows measured cycles, the mapper's prediction, utilization
(MACs / (rows x cols x cycles)), the ideal bound ceil(MACs / PEs), and simulated cycles per second
of the simulator process's wall time (which includes loading the operands through the backdoor
and reading back the result, but not the Verilator build).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rtl.config import preset  # noqa: E402
from sim.cosim import cosim_gemm  # noqa: E402

#: (M, K, N) and the utilization each must reach on a 16x16 array with 16 bytes per cycle
TARGETS = [((128, 768, 768), 0.95), ((197, 192, 576), 0.90)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--mem-bytes", type=int, default=16)
    parser.add_argument("--dataflows", default="os,ws")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    console = Console(width=140)
    rows = []
    for dataflow in args.dataflows.split(","):
        cfg = preset(args.preset).replace(dataflow=dataflow, mem_bytes_per_cycle=args.mem_bytes,
                                          name=args.preset)
        for (m, k, n), target in TARGETS:
            with console.status(f"{m}x{k}x{n} on {cfg.label}..."):
                r = cosim_gemm(cfg, m, k, n, requant=True, seed=1, min_mem_words=1 << 16)
            r["target"] = target
            r["ideal_cycles"] = -(-r["macs"] // cfg.pes)
            rows.append(r)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="GEMM utilization on the RTL (Verilator), int8 in, int8 out")
    for col in ("configuration", "M x K x N", "bit-exact", "cycles", "predicted", "ideal",
                "utilization", "target", "sim cycles/s"):
        table.add_column(col, justify="left" if col in ("configuration", "M x K x N") else "right")
    for r in rows:
        ok = r["utilization"] >= r["target"]
        table.add_row(r["config"], f"{r['m']}x{r['k']}x{r['n']}", "yes" if r["bit_exact"] else "NO",
                      f"{r['cycles']:,}", f"{r['predicted_cycles']:,}", f"{r['ideal_cycles']:,}",
                      f"{100 * r['utilization']:.1f}%", f"{100 * r['target']:.0f}%",
                      f"{r['cycles'] / r['sim_seconds']:,.0f}",
                      style=None if ok and r["bit_exact"] else "bold red")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
