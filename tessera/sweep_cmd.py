"""``tessera sweep SPEC.toml``: design-space exploration from a TOML spec.

    tessera sweep examples/array_shapes.toml -o build/sweeps/shapes
    tessera sweep spec.toml --jobs 2
    tessera sweep spec.toml --scheduler tcp://10.0.0.5:8786
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_sweep_parser"]


def _cmd_sweep(args: argparse.Namespace, _config: object) -> int:
    from tessera.sweep import SweepError, _label, load_spec

    try:
        sweep = load_spec(args.spec)
        if args.jobs is not None and args.jobs < 1:
            raise SweepError(f"--jobs must be at least 1, not {args.jobs}")
    except SweepError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else Path("build/sweeps") / Path(args.spec).stem
    print(f"{sweep.name}: {len(sweep.points)} points -> {out}/", file=sys.stderr)
    try:
        result = sweep.run(jobs=args.jobs, scheduler=args.scheduler, out=out,
                           progress=False if args.quiet else None)
    except OSError as e:
        print(f"tessera: error: could not reach the Dask scheduler or write {out}: {e}",
              file=sys.stderr)
        return 2
    rate = result.computed / result.seconds * 60 if result.seconds and result.computed else 0
    print(f"{len(result.rows)} points ({result.computed} computed, {result.cached} from the "
          f"cache) in {result.seconds:.1f} s" + (f", {rate:,.0f} points/min" if rate else ""))
    front = result.pareto("latency_ms", "energy_uj")
    if front:
        print("Pareto front, latency vs energy:")
        for r in front:
            print(f"  {r['workload']:<14} {_label(r, result.axes):<24} "
                  f"{r['latency_ms']:10.3f} ms  {r['energy_uj']:10.1f} uJ  "
                  f"util {100 * r['utilization']:5.1f}%")
    for r in result.failed:
        print(f"point {r['point']} ({r['workload']}, {r['rows']}x{r['cols']} {r['dataflow']}) "
              f"failed: {r['error']}", file=sys.stderr)
    for name in ("sweep.csv", "sweep.json", "ops.csv", "pareto_energy.png", "pareto_area.png",
                 "utilization.png"):
        if (out / name).exists():
            print(f"wrote {out / name}")
    return 1 if result.failed and not result.ok else 0


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``tessera sweep``; its ``func(args, config)`` returns the exit code."""
    p = sub.add_parser("sweep", help="explore engine configurations x workloads (TOML spec)",
                       description="Evaluate every combination of the spec's axes and "
                                   "workloads with the mapper; write sweep.csv, sweep.json "
                                   "and plots. See examples/array_shapes.toml.")
    p.add_argument("spec", metavar="SPEC.toml", help="the sweep's axes, workloads and options")
    p.add_argument("-o", "--output", metavar="DIR", default=None,
                   help="output folder (default build/sweeps/<spec name>); its cache/ keeps "
                        "finished points, so a rerun resumes")
    p.add_argument("--jobs", type=int, default=None,
                   help="local worker processes (default: one per CPU)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run on a Dask cluster (e.g. tcp://host:8786) instead of locally")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sweep)
