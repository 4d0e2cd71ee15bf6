"""``tessera fuzz``: random programs on the RTL; ``tessera cosim program FILE``: replay one.

    tessera fuzz --preset tiny --programs 1000 --jobs 2
    tessera fuzz --preset edge --dataflow ws --programs 200 --scheduler tcp://host:8786
    tessera cosim program build/fuzz/tiny-4x4-os/case0-seed1234.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from rtl.config import EngineConfig, add_config_arguments

__all__ = ["add_fuzz_parser", "add_program_parser"]


def _cmd_fuzz(args: argparse.Namespace, config: EngineConfig) -> int:
    from mapping.progress import Bar
    from sim import fuzz
    from tessera.parallel import SchedulerError

    for flag, value in (("--programs", args.programs), ("--batch", args.batch)):
        if value < 1:
            print(f"tessera: error: {flag} must be at least 1, not {value}", file=sys.stderr)
            return 2
    out = Path(args.output) if args.output else \
        Path("build/fuzz") / config.label.replace(" ", "-")
    try:
        with Bar(args.programs, f"fuzz {config.label}") as bar:
            summary, failures = fuzz.campaign(
                config, args.programs, seed=args.seed, jobs=args.jobs,
                scheduler=args.scheduler, batch=args.batch, out=out, progress=bar.advance,
                coverage=args.coverage)
    except SchedulerError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"config": config.label, **summary,
                          "reproducers": [str(p) for p in failures]}, indent=2))
    else:
        s = summary
        print(f"fuzz on {config.label}, seed {args.seed}:")
        rows = [("programs", f"{s['programs']:,} ({s['illegal_programs']:,} with an illegal "
                             f"instruction)"),
                ("instructions", f"{s['instructions']:,}"),
                ("elements compared", f"{s['elements_compared']:,}"),
                ("mismatches", f"{s['mismatches']:,}"),
                ("cycle disagreements", f"{s['cycle_disagreements']:,}"),
                ("failed programs", f"{s['failed_programs']:,}"),
                ("simulated cycles", f"{s['simulated_cycles']:,}"),
                ("simulation speed", f"{s['cycles_per_second']:,.0f} cycles/s"),
                ("wall time", f"{s['wall_seconds']:.1f} s ({s['programs_per_minute']:,.0f} "
                              f"programs/min)")]
        for name, value in rows:
            print(f"  {name:<20} {value}")
        for path in failures:
            print(f"  reproducer: {path}  (tessera cosim program {path})")
        if args.coverage:
            _print_coverage(s["coverage"], out)
    return 1 if failures or summary["failed_programs"] else 0


def _print_coverage(units: list[dict], out: Path) -> None:
    def pct(u: dict, kind: str) -> str:
        n = u[f"{kind}_points"]
        return f"{100 * u[f'{kind}_covered'] / n:5.1f}% of {n:,}" if n else "-"

    print("coverage (Verilator line, branch and toggle points reached by the campaign):")
    print(f"  {'unit':<16} {'lines':>16} {'branches':>16} {'toggles':>18}  not reached")
    report = []
    for u in units:
        missed = u["uncovered"]
        shown = ", ".join(missed[:3]) + (f", ... ({len(missed)} in all)" if len(missed) > 3
                                         else "")
        print(f"  {u['unit']:<16} {pct(u, 'line'):>16} {pct(u, 'branch'):>16} "
              f"{pct(u, 'toggle'):>18}  {shown or '-'}")
        report += [f"{u['unit']}: {name}" for name in missed]
    out.mkdir(parents=True, exist_ok=True)
    (out / "uncovered.txt").write_text("".join(line + "\n" for line in report))
    print(f"  every block and branch not reached, by the Python line of the RTL: "
          f"{out / 'uncovered.txt'}")


def add_fuzz_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuzz", help="random programs on the RTL, checked against the golden "
                                    "and the cycle model",
                       description="Draw random GEMM programs (shapes, blockings, requantization "
                                   "parameters, operands at the int8 ends, memory stalls) and "
                                   "programs with an illegal instruction, run them on the RTL, "
                                   "and compare every element and every cycle count. Failing "
                                   "programs are written as reproducers.")
    add_config_arguments(p)
    p.add_argument("--programs", type=int, default=200, help="how many programs (default 200)")
    p.add_argument("--seed", type=int, default=0, help="the campaign's seed (default 0)")
    p.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run on a Dask cluster (e.g. tcp://host:8786) instead of locally")
    p.add_argument("--batch", type=int, default=50,
                   help="programs per simulator process (default 50)")
    p.add_argument("-o", "--output", metavar="DIR", default=None,
                   help="where reproducers of failing programs go (default "
                        "build/fuzz/<configuration>)")
    p.add_argument("--coverage", action="store_true",
                   help="run on a build that counts Verilator line, branch and toggle "
                        "coverage and print it per unit (a build of its own; slower)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_fuzz)


def _cmd_program(args: argparse.Namespace, _config: object) -> int:
    from sim import fuzz

    try:
        cfg, case = fuzz.load_reproducer(args.file)
        outcome, = fuzz.run_cases([case], cfg)
    except ValueError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"{args.file} on {cfg.label}: FAILED: {e}")
        return 1
    if args.json:
        print(json.dumps({"config": cfg.label, "case": asdict(case), "ok": outcome.ok,
                          "message": outcome.message, "cycles": outcome.cycles,
                          "predicted_cycles": outcome.predicted,
                          "mismatches": outcome.mismatches, "elements": outcome.elements},
                         indent=2))
    else:
        what = (f"gemm {case.m}x{case.k}x{case.n}" + (" requantized" if case.requant else "")
                + (f", illegal {case.illegal} at instruction {case.illegal_at}"
                   if case.illegal else ""))
        verdict = "passes" if outcome.ok else f"FAILS: {outcome.message}"
        print(f"{what} on {cfg.label} (seed {case.seed}, stall {case.stall}): {verdict}")
        if outcome.predicted is not None:
            print(f"  cycles {outcome.cycles:,} (model {outcome.predicted:,}), "
                  f"{outcome.elements:,} elements compared, {outcome.mismatches:,} differ")
    return 0 if outcome.ok else 1


def add_program_parser(cosim: argparse._SubParsersAction) -> None:
    q = cosim.add_parser("program", help="replay a reproducer written by tessera fuzz")
    q.add_argument("file", metavar="FILE", help="a reproducer (JSON) from tessera fuzz")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.set_defaults(func=_cmd_program)
