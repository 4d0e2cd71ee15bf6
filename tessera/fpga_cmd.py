"""``tessera fpga``: build the engine for a board with the open toolchain, and report.

    tessera fpga boards
    tessera fpga build ulx3s-85f --preset edge
    tessera fpga build ulx3s-85f --preset tiny --synth-only --json
    tessera fpga build arty-a7-35 --preset edge       # files for the vendor flow only
"""

from __future__ import annotations

import argparse
import json
import sys

from rtl.config import EngineConfig, add_config_arguments

__all__ = ["add_fpga_parser"]


def _cmd_boards(args: argparse.Namespace, config: EngineConfig | None) -> int:
    from fpga.boards import BOARDS

    print(f"{'board':<16} {'device':<11} {'LUTs':>7} {'DSPs':>5} {'block RAM':>16}  flow")
    for b in BOARDS.values():
        flow = "open (YoWASP)" if b.open_flow else "vendor: files only"
        print(f"{b.name:<16} {b.device:<11} {b.luts:>7,} {b.dsps:>5} "
              f"{b.bram_blocks:>4} x {b.bram_kbit:>2} Kbit  {flow}")
    return 0


def _cmd_build(args: argparse.Namespace, config: EngineConfig) -> int:
    from fpga.boards import BoardError, board
    from fpga.build import build

    try:
        b = board(args.board)
        if not b.open_flow and args.synth_only:
            raise BoardError(f"{b.name} uses the vendor flow: tessera writes its files but "
                             f"runs no synthesis")
        print(f"building {config.label} for {b.name} ({b.device})"
              f"{', synthesis only' if args.synth_only else ''}...", file=sys.stderr)
        report = build(b, config, synth_only=args.synth_only)
    except BoardError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"{report.board} ({report.device}), {report.config}: {report.stage} in "
          f"{report.seconds:.0f} s, {report.directory}")
    if report.stage == "files":
        print("  Verilog, constraints and build script written for the vendor toolchain")
        return 0
    print(f"  {'resource':<18} {'used':>9} {'available':>10} {'%':>6}")
    for name, (used, avail) in report.resources.items():
        pct = f"{100 * used / avail:5.1f}" if avail else "   - "
        print(f"  {name:<18} {used:>9,} {avail if avail is not None else '-':>10} {pct:>6}")
    if report.fmax_mhz is not None:
        verdict = "meets" if report.meets_timing else "misses"
        print(f"  Fmax {report.fmax_mhz:.1f} MHz: {verdict} the {report.target_mhz:g} MHz "
              f"target")
    if report.bitstream:
        print(f"  bitstream {report.bitstream}")
    return 0


def add_fpga_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``tessera fpga``; handlers return the exit code."""
    p = sub.add_parser("fpga", help="build the engine for an FPGA board (open toolchain)")
    fpga = p.add_subparsers(dest="fpga_command", required=True, metavar="COMMAND")
    q = fpga.add_parser("boards", help="list the supported boards")
    q.set_defaults(func=_cmd_boards)
    q = fpga.add_parser("build", help="synthesize, place, route and pack; report resources "
                                      "and Fmax against the target clock (--clock-mhz)")
    q.add_argument("board", metavar="BOARD", help="a board name (tessera fpga boards)")
    add_config_arguments(q)
    q.add_argument("--synth-only", action="store_true",
                   help="stop after Yosys: cell counts, no place and route")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.set_defaults(func=_cmd_build)
