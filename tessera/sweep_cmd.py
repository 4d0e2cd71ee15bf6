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
    from mapping.units import format_energy_pj, format_time_ms
    from tessera.sweep import SweepError, SweepInterrupted, _label, load_spec

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
    except SweepInterrupted as e:
        print(f"tessera: interrupted: {e.done} of {e.total} points done, kept in {out}/cache "
              f"(run the same command to finish the rest)", file=sys.stderr)
        return 130
    except SweepError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"tessera: error: could not write {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    rate = result.computed / result.seconds * 60 if result.seconds and result.computed else 0
    print(f"{len(result.rows)} points ({result.computed} computed, {result.cached} from the "
          f"cache) in {result.seconds:.1f} s" + (f", {rate:,.0f} points/min" if rate else ""))
    for workload in dict.fromkeys(r["workload"] for r in result.ok):
        # a front per workload: points of different workloads do not compete
        front = result.pareto("latency_ms", "energy_uj",
                              [r for r in result.ok if r["workload"] == workload])
        print(f"Pareto front, latency vs energy, {workload}:")
        for r in front:
            print(f"  {_label(r, result.axes):<28} {format_time_ms(r['latency_ms']):>10}  "
                  f"{format_energy_pj(r['energy_uj'] * 1e6):>10}  "
                  f"util {100 * r['utilization']:5.1f}%")
    for r in result.failed:
        print(f"point {r['point']} ({r['workload']}, {r['rows']}x{r['cols']} {r['dataflow']}) "
              f"failed: {r['error']}", file=sys.stderr)
    for path in result.written:
        print(f"wrote {path}")
    if result.failed:
        print(f"{len(result.failed)} of {len(result.rows)} points failed", file=sys.stderr)
        return 1
    return 0


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
