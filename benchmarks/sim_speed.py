"""Simulation speed per preset: simulated cycles and MACs per second under cocotb + Verilator.

For each configuration the same Verilator build runs (1) a free-running clock with no Python
woken per cycle and (2) a long stream of GEMM tiles loaded, run, read back and checked. The
ratio of (2)'s cycles per second to (1)'s says what the testbench costs.

    .venv/bin/python benchmarks/sim_speed.py [--presets tiny,edge,default] [--cycles N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rtl.config import preset  # noqa: E402
from sim.build import build, tool_env  # noqa: E402


def measure(config, cycles: int) -> dict:
    from cocotb_tools.runner import get_runner

    sim = build(config)
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.jsonl"
        env = {"TESSERA_CONFIG": json.dumps(config.to_dict()), "TESSERA_DEPTH": str(sim.depth),
               "TESSERA_STATS": str(stats), "TESSERA_BENCH_CYCLES": str(cycles)}
        with tool_env():
            get_runner("verilator").test(
                hdl_toplevel=sim.toplevel, hdl_toplevel_lang="verilog", test_module="sim.tb_speed",
                build_dir=sim.directory, test_dir=tmp, extra_env=env,
                results_xml=str(Path(tmp) / "results.xml"), log_file=Path(tmp) / "log")
        rows = {r["test"]: r for r in map(json.loads, stats.read_text().splitlines())}
    free, gemm = rows["free_running"], rows["gemm_stream"]
    free_rate = free["cycles"] / free["seconds"]
    gemm_rate = gemm["cycles"] / gemm["seconds"]
    return {"config": config.label, "free_cycles_per_s": free_rate,
            "gemm_cycles_per_s": gemm_rate, "gemm_macs_per_s": gemm["macs"] / gemm["seconds"],
            "ratio": gemm_rate / free_rate, "gemm_cycles": gemm["cycles"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,edge,default")
    parser.add_argument("--dataflows", default="os,ws")
    parser.add_argument("--cycles", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configs = [preset(p).replace(dataflow=d, name=p) for p in args.presets.split(",")
               for d in args.dataflows.split(",")]
    console = Console(width=130)
    results = []
    for cfg in configs:
        with console.status(f"building and measuring {cfg.label}..."):
            results.append(measure(cfg, args.cycles))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    table = Table(title="Simulation speed (Verilator via cocotb; GEMM wall time includes "
                        "loading, readback and checking)")
    for col in ("configuration", "free-running cycles/s", "GEMM cycles/s", "GEMM MACs/s",
                "GEMM / free-running", "GEMM cycles"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in results:
        table.add_row(r["config"], f"{r['free_cycles_per_s']:,.0f}",
                      f"{r['gemm_cycles_per_s']:,.0f}",
                      f"{r['gemm_macs_per_s']:,.0f}", f"{r['ratio']:.2f}", f"{r['gemm_cycles']:,}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
