"""``tessera fpga``: build the engine for a board with the open toolchain, and report.

    tessera fpga boards
    tessera fpga build ulx3s-85f --preset edge
    tessera fpga build ulx3s-85f --preset tiny --synth-only --json
    tessera fpga build arty-a7-35 --preset edge       # files for the vendor flow only
    tessera fpga run --board ulx3s-85f --port /dev/ttyUSB0 --preset edge gemm 64 64 64
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
        report = build(b, config, synth_only=args.synth_only, baud=args.baud,
                       mem_kib=args.mem_kib, seed=args.seed)
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
        print(f"  {name:<18} {used:>9,} {f'{avail:,}' if avail is not None else '-':>10} {pct:>6}")
    if report.fmax_mhz is not None:
        verdict = "meets" if report.meets_timing else "misses"
        print(f"  Fmax {report.fmax_mhz:.1f} MHz: {verdict} the {report.target_mhz:g} MHz "
              f"target")
    if report.failing_endpoints:
        print(f"  {report.failing_endpoints:,} endpoints miss it (python -m fpga.sta "
              f"{report.directory} for their paths):")
        for group, n, worst in report.failing_groups:
            print(f"    {n:6,}  worst {worst / 1000:6.2f} ns  {group}")
    if report.bitstream:
        print(f"  bitstream {report.bitstream}")
    source = "PLL" if report.pll else "board"
    print(f"  host link: UART at {report.baud:,} baud from the {report.clock_hz / 1e6:g} MHz "
          f"{source} clock; {report.memory_bytes // 1024} KiB memory")
    return 0


def _cmd_run(args: argparse.Namespace, config: EngineConfig) -> int:
    from fpga import host
    from fpga.boards import board
    from fpga.protocol import FrameError
    from rtl.config import ConfigError

    if args.workload != "gemm" or len(args.dims) != 3:
        print("tessera: error: the workload is `gemm M K N`", file=sys.stderr)
        return 2
    m, k, n = args.dims
    if min(m, k, n) < 1:
        print(f"tessera: error: GEMM dimensions must be positive, not {m} {k} {n}",
              file=sys.stderr)
        return 2
    try:
        b = board(args.board)
        with host.SerialLink(args.port, args.baud, timeout=args.timeout) as link:
            result = link.run(host.gemm(config, m, k, n, seed=args.seed, requant=args.requant))
    except (ConfigError, FrameError, host.EngineFault) as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2
    result["board"] = b.name
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from .cli import _verdict

        print(f"{b.name}, {result['config']}: GEMM {m}x{k}x{n}"
              f"{' requantized' if args.requant else ''}: {_verdict(result)}")
        print(f"  {result['cycles']:,} cycles ({result['seconds_on_board'] * 1e6:,.1f} us at "
              f"{result['clock_hz'] / 1e6:g} MHz), utilization {result['utilization']:.1%}, "
              f"mapper predicted {result['predicted_cycles']:,}")
    return 0 if result["bit_exact"] else 1


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
    _link_arguments(q)
    q.add_argument("--mem-kib", type=int, default=None,
                   help="block-RAM memory for operands and results (default: what the "
                        "device has left, up to 64 KiB)")
    q.add_argument("--seed", type=int, default=None,
                   help="nextpnr's placement seed (its default unless given): timing varies "
                        "from seed to seed by a few percent")
    q.set_defaults(func=_cmd_build)
    q = fpga.add_parser("run", help="run a GEMM on a board over its UART and check it against "
                                    "the golden model")
    q.add_argument("--board", required=True, help="the board (tessera fpga boards)")
    q.add_argument("--port", required=True, help="its serial port, e.g. /dev/ttyUSB0")
    add_config_arguments(q)
    _link_arguments(q)
    q.add_argument("workload", choices=["gemm"], help="what to run")
    q.add_argument("dims", type=int, nargs=3, metavar="M K N", help="the GEMM's dimensions")
    q.add_argument("--requant", action="store_true", help="int8 output (requantized)")
    q.add_argument("--seed", type=int, default=0, help="seed of the random operands")
    q.add_argument("--timeout", type=float, default=2.0,
                   help="seconds to wait for each response")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.set_defaults(func=_cmd_run)


def _link_arguments(q: argparse.ArgumentParser) -> None:
    from fpga.build import DEFAULT_BAUD

    q.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"host link baud rate (default {DEFAULT_BAUD})")
