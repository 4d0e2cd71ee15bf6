"""``tessera asm``, ``tessera disasm`` and ``tessera clean``: the assembler at the command line,
and the build caches kept in check.

    tessera asm program.s --preset edge -o program.hex   # text -> one hex word per line
    tessera disasm program.hex                            # and back
    tessera clean --keep-last 4                           # Verilator builds: keep the newest 4
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rtl.config import (
    ConfigError,
    EngineConfig,
    add_config_arguments,
    read_text_file,
    write_text_file,
)

__all__ = ["add_tool_parsers", "build_caches"]


def _read_text(path: str, what: str) -> str:
    """A text file the user named (``-`` for stdin), or a ConfigError saying why not."""
    if path == "-":
        return sys.stdin.read()
    return read_text_file(path, what)


def _write(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        return
    print(f"wrote {write_text_file(path, text)}", file=sys.stderr)


def _cmd_asm(args: argparse.Namespace, config: EngineConfig) -> int:
    from rtl import isa

    text = _read_text(args.source, "program")
    numbered = isa.parse_numbered(text)
    for line, insn in numbered:
        isa.check(insn, config, where=f"line {line}: ")
    words = [isa._pack(insn) for _, insn in numbered]
    width = -(-isa.INSN_BITS // 4)
    _write(args.output, "".join(f"{w:0{width}x}\n" for w in words))
    print(f"{len(words)} instructions for {config.label}", file=sys.stderr)
    return 0


def _cmd_disasm(args: argparse.Namespace, _config: object) -> int:
    from rtl import isa

    words = []
    for n, raw in enumerate(_read_text(args.words, "word file").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            word = int(line, 16)
        except ValueError:
            raise ConfigError(f"line {n}: {line!r} is not a hexadecimal instruction word") \
                from None
        if word >> isa.INSN_BITS:
            raise ConfigError(f"line {n}: 0x{word:x} is wider than an instruction "
                              f"({isa.INSN_BITS} bits)")
        try:
            words.append(str(isa.decode(word)))
        except isa.AsmError as e:
            raise ConfigError(f"line {n}: {e}") from None
    _write(args.output, "".join(w + "\n" for w in words))
    return 0


def build_caches(root: Path) -> list[Path]:
    """The Verilator builds under ``root`` (``build/sim``), least recently used first."""
    sim = root / "build" / "sim"
    builds = [d for d in sim.iterdir() if d.is_dir()] if sim.is_dir() else []
    return sorted(builds, key=lambda d: d.stat().st_mtime)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _cmd_clean(args: argparse.Namespace, _config: object) -> int:
    from mapping.units import format_bytes
    from sim.build import ROOT

    if args.keep_last is not None and args.keep_last < 0:
        raise ConfigError(f"--keep-last must be 0 or more, not {args.keep_last}")
    builds = build_caches(ROOT)
    doomed = builds if not args.keep_last else builds[:-args.keep_last]
    if args.all:
        doomed = [ROOT / "build"] if (ROOT / "build").exists() else []
    freed = 0
    for d in doomed:
        freed += _size(d)
        if not args.dry_run:
            shutil.rmtree(d, ignore_errors=True)
    verb = "would free" if args.dry_run else "freed"
    kept = 0 if args.all else len(builds) - len(doomed)
    print(f"{verb} {format_bytes(freed)}: {len(doomed)} "
          f"{'folder' if args.all else 'Verilator build(s)'} removed, {kept} kept")
    return 0


def add_tool_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``asm``, ``disasm`` and ``clean``."""
    p = sub.add_parser("asm", help="assemble program text into instruction words (hex)",
                       description="Assemble the text form (one instruction a line, as "
                                   "tessera map gemm --program writes it) for an engine "
                                   "configuration; every instruction is checked as the "
                                   "engine would check it.")
    p.add_argument("source", metavar="FILE.s", help="program text, - for stdin")
    add_config_arguments(p)
    p.add_argument("-o", "--output", metavar="FILE", default="-",
                   help="one hexadecimal word per line (default: stdout)")
    p.set_defaults(func=_cmd_asm)

    p = sub.add_parser("disasm", help="instruction words (hex) back into program text")
    p.add_argument("words", metavar="FILE.hex", help="one hexadecimal word a line, - for stdin")
    p.add_argument("-o", "--output", metavar="FILE", default="-", help="default: stdout")
    p.set_defaults(func=_cmd_disasm)

    p = sub.add_parser("clean", help="remove build caches (Verilator builds: 150-200 MB each)")
    p.add_argument("--keep-last", type=int, default=None, metavar="N",
                   help="keep the N Verilator builds used most recently")
    p.add_argument("--all", action="store_true",
                   help="remove the whole build/ folder (sweeps and FPGA builds too)")
    p.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    p.set_defaults(func=_cmd_clean)
