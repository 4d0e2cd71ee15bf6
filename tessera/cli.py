"""The ``tessera`` command line: one front door to the generator, the simulator and the tools."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from rtl.config import (
    ConfigError,
    EngineConfig,
    add_config_arguments,
    config_from_args,
    write_text_file,
)

__all__ = ["main"]


def _cmd_verilog(args: argparse.Namespace, config: EngineConfig) -> int:
    from amaranth.back import verilog

    from rtl.tile import TileEngine

    if args.lint and args.output == "-":
        print("tessera: error: --lint needs an output file, not -", file=sys.stderr)
        return 2
    name = args.name or f"tessera_{args.top}"
    if not name.isidentifier() or not name.isascii():
        print(f"tessera: error: --name must be a Verilog identifier (letters, digits and _, not "
              f"starting with a digit), not {name!r}", file=sys.stderr)
        return 2
    if args.top == "engine":
        from rtl.engine import Engine

        top = Engine(config)
    else:
        top = TileEngine(config)
    text = _port_header(top, name, config) + verilog.convert(top, name=name, emit_src=False)
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    out = write_text_file(args.output, text)
    print(f"wrote {out} ({config.label}, top module {name}, "
          f"{len(text.splitlines())} lines)", file=sys.stderr)
    if args.lint:
        import subprocess

        from sim.build import WAIVERS, verilator_bin

        cmd = [str(verilator_bin()), "--lint-only", "-Wall", str(WAIVERS), str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout + done.stderr, file=sys.stderr)
            print(f"tessera: error: Verilator lint of {out} failed", file=sys.stderr)
            return 1
        print(f"Verilator lint (-Wall with {WAIVERS.name}): clean", file=sys.stderr)
    return 0


def _port_header(top, name: str, config: EngineConfig) -> str:
    """A comment block naming the top module's ports: direction, width, what it carries."""
    from amaranth.hdl import Shape
    from amaranth.lib.wiring import In

    lines = [f"// {name}: Tessera {type(top).__name__} for {config.label}",
             f"// {config.to_dict()}",
             "// ports (Amaranth flattens each stream and struct into <port>__<member>):"]
    for path, member, _ in top.signature.flatten(top):
        direction = "input " if member.flow == In else "output"
        width = Shape.cast(member.shape).width
        lines.append(f"//   {direction} {width:5d}  {'__'.join(map(str, path))}")
    lines.append("//   input      1  clk, rst")
    return "\n".join(lines) + "\n"


def _cmd_sim(args: argparse.Namespace, config: EngineConfig) -> int:
    from rich.console import Console
    from rich.table import Table

    from sim.regress import default_matrix, run_matrix

    configs = default_matrix() if args.matrix else [config]
    # Logs and CI are not terminals; keep the table's columns whole there.
    console = Console(stderr=args.json, width=None if sys.stdout.isatty() else 100)
    results = []
    with console.status(f"building and simulating {len(configs)} configuration(s)...") as status:
        for r in run_matrix(configs, jobs=args.jobs, pattern=args.k, seed=args.seed,
                            waves=args.waves, programs=args.programs):
            results.append(r)
            mark = "ok" if r.ok else "FAILED"
            unit = "tests" if r.kind == "tiles" else "programs"
            console.print(f"{r.config.label:<24} {r.passed}/{r.tests} {unit} {mark} "
                          f"(build {r.build_seconds:.1f} s, run {r.run_seconds:.1f} s)"
                          + (f"\n  waveform: {r.waves}" if r.waves else ""))
            status.update(f"{len(results)}/{len(configs) * (3 if args.programs else 1)} "
                          f"runs done...")
    order = {c.key: i for i, c in enumerate(configs)}
    kinds = ("tiles", "programs", "softmax")
    results.sort(key=lambda r: (order[r.config.key], kinds.index(r.kind)))
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        table = Table(title="Tessera RTL regression (Verilator; elements compared, cycles "
                            "simulated)")
        for col in ("configuration", "run", "tests", "passed", "elements", "cycles",
                    "seconds"):
            table.add_column(col, justify="left" if col in ("configuration", "run") else "right",
                             no_wrap=True)
        for r in results:
            style = None if r.ok else "bold red"
            run = {"tiles": "tiles", "programs": "GEMM programs",
                   "softmax": "softmax GEMMs"}[r.kind]
            table.add_row(r.config.label, run, str(r.tests), str(r.passed), f"{r.elements:,}",
                          f"{r.cycles:,}", f"{r.build_seconds + r.run_seconds:.1f}", style=style)
        console.print(table)
    bad = [r for r in results if not r.ok]
    for r in bad:
        what = r.error or f"failed: {', '.join(r.failed)}"
        print(f"{r.config.label}: {what}" + (f"\n  log: {r.log}" if r.log else ""),
              file=sys.stderr)
    if bad:
        print(f"{len(bad)} of {len(results)} configuration(s) failed", file=sys.stderr)
        return 1
    return 0


def _verdict(result: dict) -> str:
    """One phrase on a cosim result: bit-exact, how many elements differ, or the RTL's error."""
    if result["bit_exact"]:
        return "bit-exact"
    if result["error"] is None:
        return f"MISMATCH: {result['mismatches']} of {result['elements']} elements differ"
    return f"ERROR: {result['error']}"


def _cmd_cosim(args: argparse.Namespace, config: EngineConfig) -> int:
    from mapping.gemm import PlanError
    from mapping.progress import RunProgress
    from sim.cosim import cosim_gemm

    if not 0 <= args.stall <= 255:
        print(f"tessera: error: --stall is a chance out of 256 that memory refuses a request "
              f"(0 to 255), not {args.stall}", file=sys.stderr)
        return 2
    if args.causal and args.softmax is None:
        print("tessera: error: --causal masks the softmax: give --softmax X0 too",
              file=sys.stderr)
        return 2
    waves = _waves_path(args, f"gemm-{args.m}x{args.k}x{args.n}", config)
    try:
        with RunProgress(f"gemm {args.m}x{args.k}x{args.n} on {config.label}") as progress:
            result = cosim_gemm(config, args.m, args.k, args.n, seed=args.seed,
                                requant=args.requant or args.softmax is not None,
                                stall=args.stall, waves=waves, progress=progress,
                                backend=args.backend, softmax_x0=args.softmax,
                                causal=args.causal)
    except PlanError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        verdict = _verdict(result)
        kind = "int8 (requantized)" if args.requant else "int32"
        if args.softmax is not None:
            kind = (f"{'causal ' if args.causal else ''}Shiftmax over each row "
                    f"(x0 = {args.softmax}, int8 probabilities)")
        print(f"gemm {args.m}x{args.k}x{args.n} on {config.label}, {kind} output: {verdict}")
        c = result["counters"]
        print(f"  cycles {result['cycles']:,} (mapper predicted {result['predicted_cycles']:,}, "
              f"{100 * result['model_error']:+.2f}%)  MACs {result['macs']:,}  utilization "
              f"{100 * result['utilization']:.1f}%  instructions {result['instructions']:,}")
        print(f"  compute cycles {c['compute']:,}  load-wait {c['load_wait']:,}  store-wait "
              f"{c['store_wait']:,}  memory beats read {result['mem_read_beats']:,} / written "
              f"{result['mem_write_beats']:,}")
        if result.get("waves"):
            print(f"  waveform: {result['waves']}")
    return 0 if result["bit_exact"] else 1


def _waves_path(args: argparse.Namespace, what: str, config: EngineConfig) -> Path | None:
    """Where ``--waves`` puts the run's waveform: build/waves/<what>-<configuration>.fst (.vcd
    where Verilator's FST writer cannot be compiled: it needs lz4.h)."""
    if not getattr(args, "waves", False):
        return None
    from sim.build import ROOT, waves_file

    label = config.label.replace(" ", "-")
    return ROOT / "build" / "waves" / f"{what}-{label}{Path(waves_file()).suffix}"


def _cmd_cosim_op(args: argparse.Namespace, config: EngineConfig) -> int:
    """Run one instance of a model's GEMM op on the RTL; the mapper's cycles beside it."""
    from mapping.mapper import map_workload
    from mapping.workloads import WorkloadError, build

    try:
        workload = build(args.model, seq=args.seq, image_size=args.image_size,
                         batch=args.batch, attention=args.attention,
                         hash_bits=config.hash_bits)
        rows = {row.name: row for row in map_workload(workload, config).ops}
    except (WorkloadError, ConfigError) as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2
    if args.op is None:
        for row in rows.values():
            where = ("RTL" + (" (with the softmax stage)" if "softmax_x0" in row.gemm else "")
                     if row.gemm else row.why if row.verified == "rtl-model"
                     else "no RTL unit yet (modeled)")
            print(f"{row.name:<28} {row.kind:<12} {row.shape:<16} {where}")
        return 0
    row = rows.get(args.op)
    if row is None:
        print(f"tessera: error: {args.model} has no op {args.op!r}; run `tessera cosim op "
              f"{args.model}` to list them", file=sys.stderr)
        return 2
    if row.gemm is None and row.verified == "rtl-model":
        print(f"tessera: error: op {args.op} ({row.kind}) has no program of its own: it is "
              f"{row.why}; run that op", file=sys.stderr)
        return 2
    if row.gemm is None:
        print(f"tessera: error: op {args.op} is a {row.kind}, which runs on the modeled "
              f"vector unit; only GEMM-like ops (linear, conv, matmul, sign_matmul) and the "
              f"softmax fused into attention's Q K^T have RTL", file=sys.stderr)
        return 2
    from mapping.progress import RunProgress
    from sim.cosim import cosim_gemm

    g = row.gemm
    with RunProgress(f"{args.model} {row.name} on {config.label}") as progress:
        result = cosim_gemm(config, g["m"], g["k"], g["n"], seed=args.seed,
                            requant=g["requant"], progress=progress, backend=args.backend,
                            waves=_waves_path(args, f"{args.model}-{row.name}", config),
                            softmax_x0=g.get("softmax_x0"), causal=g.get("causal", False))
    result["op"] = row.name
    result["kind"] = row.kind
    result["count"] = row.count
    result["mapper_cycles"] = g["cycles"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        verdict = _verdict(result)
        print(f"{args.model} {row.name} ({row.kind} {row.shape}, one of {row.count}) on "
              f"{config.label}: {verdict}")
        print(f"  RTL {result['cycles']:,} cycles, mapper {g['cycles']:,} "
              f"({100 * (g['cycles'] - result['cycles']) / result['cycles']:+.2f}%), "
              f"utilization {100 * result['utilization']:.1f}%, "
              f"{result['instructions']:,} instructions")
        if result.get("waves"):
            print(f"  waveform: {result['waves']}")
    return 0 if result["bit_exact"] else 1


def _version() -> str:
    """Tessera's version and the tools it runs on."""
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    tools = ", ".join(f"{n} {v(n)}" for n in ("amaranth", "cocotb", "verilator", "torch"))
    return f"tessera {v('tessera')} ({tools})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("verilog", help="write the engine's Verilog")
    add_config_arguments(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="output file, - for stdout")
    p.add_argument("--top", choices=("tile", "engine"), default="tile",
                   help="tile: the systolic tile engine with stream ports; engine: the whole "
                        "programmable engine (instruction stream, memory port, counters)")
    p.add_argument("--name", default=None,
                   help="top module name (default tessera_tile or tessera_engine)")
    p.add_argument("--lint", action="store_true",
                   help="then lint the file with Verilator -Wall and the project's waivers")
    p.set_defaults(func=_cmd_verilog)

    p = sub.add_parser("sim", help="run the cocotb regression under Verilator")
    add_config_arguments(p)
    p.add_argument("-k", metavar="PATTERN", default=None,
                   help="run only tests whose name matches this regular expression")
    p.add_argument("--matrix", action="store_true",
                   help="run the standard set: 1x1, 3x5 and the tiny/edge/default presets, "
                        "both dataflows (what `make sim` runs)")
    p.add_argument("--jobs", type=int, default=1, help="configurations to run at once")
    p.add_argument("--seed", type=int, default=1, help="seed for the random tests")
    p.add_argument("--programs", type=int, default=24,
                   help="random GEMM programs on the whole engine per configuration, after the "
                        "tile regression (tessera fuzz's; 0: none)")
    p.add_argument("--waves", action="store_true",
                   help="record a waveform, FST (VCD where Verilator's FST writer does not "
                        "compile); a build of its own; the path is printed")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser("cosim", help="run a workload on the RTL engine and check it bit for bit")
    cosim = p.add_subparsers(dest="workload", required=True, metavar="WORKLOAD")
    q = cosim.add_parser("gemm", help="C[M x N] = A[M x K] @ B[K x N] with random int8 operands")
    q.add_argument("m", type=int, metavar="M")
    q.add_argument("k", type=int, metavar="K")
    q.add_argument("n", type=int, metavar="N")
    add_config_arguments(q)
    q.add_argument("--seed", type=int, default=0, help="seed for the operands")
    q.add_argument("--requant", action="store_true",
                   help="requantize to int8 with per-channel parameters (else int32 output)")
    q.add_argument("--stall", type=int, default=0,
                   help="memory refuses requests at random, chance out of 256")
    q.add_argument("--softmax", type=int, default=None, metavar="X0",
                   help="attention logits: requantize C with one scale and run I-ViT's "
                        "Shiftmax over each whole row on the engine's softmax stage, with "
                        "x0 = floor(-1 / scale of the logits) = X0 (-1 .. -65535)")
    q.add_argument("--causal", action="store_true",
                   help="with --softmax: mask element j of row i unless j <= i (GPT-2)")
    q.add_argument("--waves", action="store_true",
                   help="record a waveform, FST (VCD where Verilator's FST writer does not "
                        "compile); a build of its own; the path is printed")
    q.add_argument("--backend", choices=("native", "cocotb"), default="native",
                   help="native: Verilator with its own C++ main (default, fast); cocotb: "
                        "the cocotb testbench (the same harness, the same results)")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.set_defaults(func=_cmd_cosim)

    from mapping.workloads import ATTENTIONS

    q = cosim.add_parser("op", help="one GEMM op of a model, as the mapper schedules it")
    q.add_argument("model", metavar="MODEL", help="a model name (see tessera map)")
    q.add_argument("op", metavar="OP", nargs="?", default=None,
                   help="the op's name, as in tessera map's table (omit to list them)")
    add_config_arguments(q)
    q.add_argument("--seq", type=int, default=None, help="tokens (language models)")
    q.add_argument("--image-size", type=int, default=None, help="pixels (vision models)")
    q.add_argument("--batch", type=int, default=1, help="inputs per run (default 1)")
    q.add_argument("--attention", choices=ATTENTIONS, default="softmax",
                   help="attention kind, as for tessera map")
    q.add_argument("--seed", type=int, default=0, help="seed for the operands")
    q.add_argument("--waves", action="store_true",
                   help="record a waveform, FST (VCD where Verilator's FST writer does not "
                        "compile); a build of its own; the path is printed")
    q.add_argument("--backend", choices=("native", "cocotb"), default="native",
                   help="native (default) or cocotb, as for cosim gemm")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.set_defaults(func=_cmd_cosim_op)

    from .fuzz_cmd import add_fuzz_parser, add_program_parser

    add_program_parser(cosim)
    add_fuzz_parser(sub)

    from .map_cmd import add_map_parser
    from .tools_cmd import add_tool_parsers

    add_map_parser(sub)
    add_tool_parsers(sub)

    from .fpga_cmd import add_fpga_parser
    from .sweep_cmd import add_sweep_parser

    add_fpga_parser(sub)
    add_sweep_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""

    def terminate(signum, frame):   # SIGTERM stops a command as Ctrl-C does
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:   # not the main thread (called from a library): leave signals alone
        previous = None
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("tessera: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # whoever read our output stopped (``| head``): stop quietly, as Unix tools do, and keep
        # Python's own flush at exit from failing again on the closed pipe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # commands without engine flags (sweep reads its own spec) get no configuration
        config = config_from_args(args) if hasattr(args, "preset") else None
        if getattr(args, "jobs", None) is not None and args.jobs < 1:
            parser.error(f"--jobs must be at least 1, not {args.jobs}")
        return args.func(args, config)
    except ConfigError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
