"""Whole-network cycles with the non-linears the engine runs in RTL, against the same network
with every non-linear serialized on the modeled unit, measured in the same run.

    python benchmarks/layer_cycles.py [--model deit-tiny] [--preset default]

Prints the total cycles three ways: fused (what ``tessera map`` reports: attention's softmax on
the stores of ``Q K^T``), serialized (every non-linear modeled, after its GEMM), and the GEMMs
alone (every non-linear hidden: the moonshot), with the issue-16 target for DeiT-Tiny on the
default engine (5.6 M cycles) and the ratios between them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mapping.mapper import map_workload  # noqa: E402
from mapping.workloads import build  # noqa: E402
from rtl.config import preset  # noqa: E402

#: issue 16's target for DeiT-Tiny on the default 16x16 engine, 16 B/cycle
TARGET = {("deit-tiny", "default"): 5_600_000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deit-tiny")
    parser.add_argument("--preset", default="default")
    args = parser.parse_args(argv)
    cfg = preset(args.preset)
    workload = build(args.model)
    fused = map_workload(workload, cfg)
    serial = map_workload(workload, cfg, fuse=False)
    gemms = sum(o.cycles for o in serial.ops if o.verified == "rtl-model")
    modeled = sum(o.cycles for o in fused.ops if o.verified == "modeled")
    print(f"{args.model} on {cfg.label}")
    print(f"  serialized (every non-linear modeled): {serial.cycles:>12,} cycles")
    print(f"  fused (softmax on the engine):         {fused.cycles:>12,} cycles "
          f"({fused.cycles / serial.cycles:.3f} of serialized)")
    print(f"    of which still modeled:              {modeled:>12,} cycles "
          f"({', '.join(sorted({o.kind for o in fused.ops if o.verified == 'modeled'}))})")
    print(f"  GEMMs alone (every non-linear hidden): {gemms:>12,} cycles")
    target = TARGET.get((args.model, args.preset))
    if target:
        verdict = "met" if fused.cycles <= target else "NOT met"
        print(f"  target {target:,}: {verdict} ({fused.cycles / target:.3f} of it; the GEMMs "
              f"alone are {gemms / target:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
