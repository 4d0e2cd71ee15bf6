"""``tessera map``: a model (or one GEMM) onto an engine configuration, with cycles and energy.

    tessera map deit-tiny --preset default
    tessera map pvtv2-b0 --attention ecoformer --count paper
    tessera map topology.csv --preset large --csv
    tessera map gemm 128 768 768 --ideal-memory --json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from rtl.config import ConfigError, EngineConfig, add_config_arguments, write_text_file

__all__ = ["add_map_parser"]


def _cmd_map(args: argparse.Namespace, config: EngineConfig) -> int:
    """Map a model or a SCALE-Sim CSV; prints a table (or JSON / CSV). Exit 2 on bad input."""
    from mapping.energy import DEFAULT, EnergyTable
    from mapping.mapper import map_gemm, map_workload
    from mapping.progress import status
    from mapping.report import summary, to_csv, to_json, to_table
    from mapping.units import format_bytes, format_energy_pj, format_time_ms
    from mapping.workloads import WorkloadError, build, from_scalesim_csv

    try:
        energy = EnergyTable.from_toml(args.energy_table) if args.energy_table else DEFAULT
        if args.model == "gemm":
            dims = args.dims
            if len(dims) != 3:
                raise WorkloadError("map gemm needs three dimensions: M K N")
            m, k, n = (_positive(name, v) for name, v in zip("MKN", dims, strict=True))
            result = map_gemm(config, m, k, n, ideal_memory=args.ideal_memory, energy=energy)
            if args.program:
                _write_program(args.program, config, m, k, n)
            if args.json:
                print(json.dumps(_clean(result), indent=2))
            elif args.csv:
                fields = [f for f in result if f not in ("why",)]
                w = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore",
                                   lineterminator="\n")
                w.writeheader()
                w.writerow(_clean({**result, "blocking": "x".join(map(str,
                                                                      result["blocking"]))}))
            else:
                time_ms = result["cycles"] / (config.clock_mhz * 1e3)
                print(f"gemm {m}x{k}x{n} on {config.label}"
                      f"{' (ideal memory)' if args.ideal_memory else ''}: "
                      f"{result['cycles']:,} cycles ({format_time_ms(time_ms)} at "
                      f"{config.clock_mhz:g} MHz; compute {result['compute_cycles']:,}, "
                      f"stall {result['stall_cycles']:,}), utilization "
                      f"{100 * result['utilization']:.1f}%, {result['macs']:,} MACs, "
                      f"{format_bytes(result['dram_bytes'])} DRAM, "
                      f"{format_energy_pj(result['energy_pj'])}, "
                      f"blocking {tuple(result['blocking'])}, bound "
                      f"{result['ideal_cycles']:,} cycles")
                if args.explain:
                    print(f"  blocking: {result['why']}")
            return 0
        if args.dims:
            raise WorkloadError(f"unexpected arguments after {args.model}: "
                                f"{' '.join(map(str, args.dims))}")
        if ":" in args.model:
            workload = _torch_workload(args)
        elif Path(args.model).is_dir():
            raise WorkloadError(f"{args.model!r} is a directory, not a model, a topology .csv "
                                f"or FILE.py:Module")
        elif args.model.endswith(".csv") or Path(args.model).is_file():
            if args.seq is not None or args.image_size is not None or args.batch != 1:
                raise WorkloadError("--seq, --image-size and --batch do not apply to a "
                                    "topology file")
            workload = from_scalesim_csv(args.model)
        else:
            if args.input_shape is not None:
                raise WorkloadError("--input-shape applies to a PyTorch module "
                                    "(FILE.py:Module, package.module:Module, timm:name)")
            workload = build(args.model, seq=args.seq, image_size=args.image_size,
                             batch=args.batch, attention=args.attention,
                             hash_bits=config.hash_bits)
        with status(f"mapping {workload.name} ({len(workload.ops)} ops) onto {config.label}"):
            result = map_workload(workload, config, ideal_memory=args.ideal_memory,
                                  count=args.count, energy=energy)
    except (WorkloadError, ConfigError) as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(to_json(result))
    elif args.csv:
        sys.stdout.write(to_csv(result))
    else:
        from rich.console import Console

        # On a terminal the table fits its width (columns left out, never digits cut); piped
        # output keeps whole rows rather than the 80 columns rich assumes off a terminal.
        tty = sys.stdout.isatty()
        console = Console(width=None if tty else 240)
        console.print(to_table(result, width=console.width if tty else None))
        console.print(summary(result), highlight=False)
        if args.explain:
            console.print("\nBlocking of each GEMM (mb, nb, kc), and why:", highlight=False)
            for op in result.ops:
                if op.why:
                    console.print(f"  {op.name}: {op.why}", highlight=False)
    return 0


def _torch_workload(args: argparse.Namespace):
    """The workload of a PyTorch module named on the command line, traced with an example
    input of ``--input-shape`` (timm models know their own)."""
    import torch

    from mapping.frontend import from_torch, load_module, parse_shapes
    from mapping.progress import status
    from mapping.workloads import WorkloadError

    for flag in ("seq", "image_size"):
        if getattr(args, flag) is not None:
            raise WorkloadError(f"--{flag.replace('_', '-')} applies to a preset model; give a "
                                f"module its input with --input-shape")
    with status(f"loading {args.model}"):
        module = load_module(args.model)
    if args.input_shape is not None:
        shapes = parse_shapes(args.input_shape)
    elif hasattr(module, "default_cfg") and "input_size" in module.default_cfg:
        shapes = [(args.batch, *module.default_cfg["input_size"])]   # timm says its own
    else:
        raise WorkloadError(f"{args.model}: give the example input's shape with --input-shape "
                            f"(1,197,192, or several separated by ';')")
    dtype = {"float": torch.float32, "long": torch.long}[args.input_dtype]
    inputs = [torch.zeros(s, dtype=dtype) if dtype == torch.long else torch.randn(s)
              for s in shapes]
    return from_torch(module, *inputs, name=args.model)


def _clean(d: dict) -> dict:
    from mapping.units import clean

    return {k: clean(v) for k, v in d.items()}


def _write_program(path: str, config: EngineConfig, m: int, k: int, n: int) -> None:
    """The program ``tessera cosim gemm`` would run for this GEMM, as assembler text."""
    from mapping.gemm import plan_gemm

    plan = plan_gemm(config, m, k, n)
    text = (f"# gemm {m}x{k}x{n} on {config.label}: {len(plan.program)} instructions, "
            f"{plan.estimate:,} cycles predicted\n"
            f"# A at 0x{plan.layout.a_addr:x} (ld {plan.layout.lda}), B at "
            f"0x{plan.layout.b_addr:x} (ld {plan.layout.ldb}), C at 0x{plan.layout.c_addr:x} "
            f"(ld {plan.layout.ldc})\n")
    text += "\n".join(str(insn) for insn in plan.program) + "\n"
    _write_text(path, text)


def _write_text(path: str, text: str) -> None:
    """Write a file the user named, or say why not (no traceback)."""
    print(f"wrote {write_text_file(path, text)}", file=sys.stderr)


def _positive(name: str, value: str) -> int:
    from mapping.workloads import WorkloadError

    try:
        v = int(value)
    except ValueError:
        raise WorkloadError(f"{name} must be a positive integer, not {value!r}") from None
    if v < 1:
        raise WorkloadError(f"{name} must be a positive integer, not {v}")
    return v


def add_map_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``map`` on a subparsers object; its ``func(args, config)`` returns the exit code."""
    from mapping.workloads import ATTENTIONS, MODELS

    p = sub.add_parser(
        "map", help="map a model (or one GEMM) onto the engine: cycles, traffic, energy",
        description="Map a model, a SCALE-Sim topology CSV (Layer,M,N,K) or one GEMM "
                    "('gemm M K N') onto the engine. Models: " + ", ".join(MODELS) + ".")
    p.add_argument("model", metavar="MODEL",
                   help="a model name, a SCALE-Sim .csv, 'gemm' followed by M K N, or a "
                        "PyTorch module: FILE.py:Name, package.module:Name (a class or a "
                        "function that makes one) or timm:model_name")
    p.add_argument("dims", nargs="*", metavar="M K N", help="for 'gemm': its dimensions")
    add_config_arguments(p)
    p.add_argument("--seq", type=int, default=None, help="tokens (language models)")
    p.add_argument("--image-size", type=int, default=None, help="pixels (vision models)")
    p.add_argument("--batch", type=int, default=1, help="inputs per run (default 1)")
    p.add_argument("--attention", choices=ATTENTIONS, default="softmax",
                   help="softmax (the model's own), msa (PVTv2 without spatial reduction, "
                        "EcoFormer's baseline) or ecoformer (hashed, linear)")
    p.add_argument("--count", choices=("hardware", "paper"), default="hardware",
                   help="energy of this engine, or EcoFormer's counting (3.7 pJ/mul, "
                        "0.9 pJ/add)")
    p.add_argument("--energy-table", metavar="FILE", default=None,
                   help="TOML file replacing the per-action energy figures (pJ)")
    p.add_argument("--ideal-memory", action="store_true",
                   help="unbounded memory bandwidth: compute alone")
    p.add_argument("--explain", action="store_true",
                   help="after the table, say for each GEMM which blocking the search chose "
                        "and what it compared")
    p.add_argument("--input-shape", metavar="SHAPE", default=None,
                   help="for a PyTorch module: its example input, e.g. 1,197,192 (several: "
                        "separated by ';'); timm models default to their own")
    p.add_argument("--input-dtype", choices=("float", "long"), default="float",
                   help="the example input's type: long for token ids (default float)")
    p.add_argument("--program", metavar="FILE", default=None,
                   help="for 'gemm': also write the program the engine would run, as "
                        "assembler text (tessera asm reads it)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true",
                     help="print CSV (cycles, bytes, pJ; one row per op)")
    p.set_defaults(func=_cmd_map)
