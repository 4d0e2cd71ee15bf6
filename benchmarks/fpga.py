"""Full FPGA builds: presets x boards, with resources, Fmax against the target and build time.

    .venv/bin/python benchmarks/fpga.py [--boards ulx3s-85f,icebreaker] [--presets tiny,edge]

Each build synthesizes, places, routes and packs with the YoWASP tools (minutes each); a
configuration a board cannot hold is listed with the reason instead.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from fpga.boards import BoardError, board  # noqa: E402
from fpga.build import build  # noqa: E402
from rtl.config import preset  # noqa: E402


def _used(resources: dict, *names: str) -> str:
    for n in names:
        if n in resources:
            used, available = resources[n]
            return f"{used:,}/{available:,}"
    return "-"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--boards", default="ulx3s-85f,icebreaker")
    p.add_argument("--presets", default="tiny,edge")
    args = p.parse_args()
    rows = []
    for b in args.boards.split(","):
        for name in args.presets.split(","):
            cfg = preset(name)
            try:
                r = build(board(b), cfg)
            except BoardError as e:
                rows.append((b, cfg.label, "-", "-", "-", "-", "-", "-",
                             str(e).split(": ", 1)[-1]))
                continue
            res = r.resources
            rows.append((b, cfg.label, _used(res, "TRELLIS_COMB", "ICESTORM_LC"),
                         _used(res, "TRELLIS_FF"),
                         _used(res, "MULT18X18D", "ICESTORM_DSP"),
                         _used(res, "DP16KD", "ICESTORM_RAM"),
                         f"{r.fmax_mhz:.1f}" if r.fmax_mhz else "-", f"{r.seconds:.0f}",
                         "meets target" if r.meets_timing else
                         f"under the {r.target_mhz:g} MHz target"))
    head = ("board", "config", "LUTs", "FFs", "DSPs", "BRAMs", "Fmax MHz", "build s", "note")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    for line in (head, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
