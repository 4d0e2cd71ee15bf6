"""``tessera map``: a model (or one GEMM) onto an engine configuration, with cycles and energy.

    tessera map deit-tiny --preset default
    tessera map pvtv2-b0 --attention ecoformer --count paper
    tessera map topology.csv --preset large --csv
    tessera map gemm 128 768 768 --ideal-memory --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rtl.config import ConfigError, EngineConfig, add_config_arguments

__all__ = ["add_map_parser"]


def _cmd_map(args: argparse.Namespace, config: EngineConfig) -> int:
    """Map a model or a SCALE-Sim CSV; prints a table (or JSON / CSV). Exit 2 on bad input."""
    from mapping.energy import DEFAULT, EnergyTable
    from mapping.mapper import map_gemm, map_workload
    from mapping.report import summary, to_csv, to_json, to_table
    from mapping.workloads import WorkloadError, build, from_scalesim_csv

    try:
        energy = EnergyTable.from_toml(args.energy_table) if args.energy_table else DEFAULT
        if args.model == "gemm":
            dims = args.dims
            if len(dims) != 3:
                raise WorkloadError("map gemm needs three dimensions: M K N")
            m, k, n = (_positive(name, v) for name, v in zip("MKN", dims, strict=True))
            result = map_gemm(config, m, k, n, ideal_memory=args.ideal_memory, energy=energy)
            if args.json:
                print(json.dumps(result, indent=2))
            else:
                print(f"gemm {m}x{k}x{n} on {config.label}"
                      f"{' (ideal memory)' if args.ideal_memory else ''}: "
                      f"{result['cycles']:,} cycles (compute {result['compute_cycles']:,}, "
                      f"stall {result['stall_cycles']:,}), utilization "
                      f"{100 * result['utilization']:.1f}%, {result['macs']:,} MACs, "
                      f"{result['dram_bytes']:,} DRAM bytes, {result['energy_pj'] / 1e6:.3f} uJ, "
                      f"blocking {tuple(result['blocking'])}, bound "
                      f"{result['ideal_cycles']:,} cycles")
                if args.explain:
                    print(f"  blocking: {result['why']}")
            return 0
        if args.dims:
            raise WorkloadError(f"unexpected arguments after {args.model}: "
                                f"{' '.join(map(str, args.dims))}")
        if args.model.endswith(".csv") or Path(args.model).is_file():
            if args.seq is not None or args.image_size is not None or args.batch != 1:
                raise WorkloadError("--seq, --image-size and --batch do not apply to a "
                                    "topology file")
            workload = from_scalesim_csv(args.model)
        else:
            workload = build(args.model, seq=args.seq, image_size=args.image_size,
                             batch=args.batch, attention=args.attention,
                             hash_bits=config.hash_bits)
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

        # piped output keeps whole rows rather than the 80 columns rich assumes off a terminal
        console = Console(width=None if sys.stdout.isatty() else 200)
        console.print(to_table(result))
        console.print(summary(result), highlight=False)
        if args.explain:
            console.print("\nBlocking of each GEMM (mb, nb, kc), and why:", highlight=False)
            for op in result.ops:
                if op.why:
                    console.print(f"  {op.name}: {op.why}", highlight=False)
    return 0


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
                   help="a model name, a SCALE-Sim .csv, or 'gemm' followed by M K N")
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
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print CSV")
    p.set_defaults(func=_cmd_map)
