"""Co-simulation: a program on the RTL engine, checked against the golden model element by element.

``run_program`` runs any program with a memory image and returns what the engine did;
``cosim_gemm`` schedules a GEMM with the mapper, makes operands, runs it and compares every
element of the result with ``golden``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from mapping.gemm import PlanError, check_gemm, plan_gemm
from mapping.operands import golden_result, make_operands, memory_image, read_result
from mapping.program import program_cycles
from rtl import isa
from rtl.config import EngineConfig
from rtl.isa import ErrorCode

from .build import ROOT, build, tool_env, waves_file
from .native import run_native
from .regress import _outside_pytest

__all__ = ["BACKENDS", "Job", "ProgramRun", "cosim_gemm", "cosim_gemms", "run_program",
           "run_programs"]


def _pow2(x: int, least: int) -> int:
    return 1 << max(least, x - 1).bit_length() if x > least else least


@dataclass
class ProgramRun:
    """What the engine did with one program."""

    cycles: int
    error: str | None
    counters: dict[str, int]
    mem_reads: int
    mem_writes: int
    regions: list[bytes] = field(default_factory=list)
    #: wall time of the clock loop (native), or of the simulator process the run shared
    #: (cocotb: loading, simulating, reading back); never the build
    sim_seconds: float = 0.0


@dataclass
class Job:
    """One program run: assembled words, a memory image, regions to read back."""

    words: list[int]
    image: bytes
    read: list[tuple[int, int]]
    stall: int = 0
    timeout_cycles: int = 0
    #: the cycle model's figure, when known: progress displays estimate the time left from it
    predicted_cycles: int = 0


#: how a program runs: ``native`` (the harness's own C++ main, Verilator's speed) or
#: ``cocotb`` (the same harness through cocotb and VPI; for testbenches that watch signals)
BACKENDS = ("native", "cocotb")


#: the most bytes a co-simulation's memory may hold (operands, results, parameters)
MAX_SIM_BYTES = 64 << 20


def _timeout(job: Job, w: int) -> int:
    """Cycles to wait for a program with no prediction: generous for its instructions and
    memory traffic, and stretched by the share of cycles the memory refuses."""
    base = 50 * (len(job.words) + len(job.image) // w) + 100_000
    return base * 256 // max(1, 256 - job.stall)


def run_job(sim, test_module: str, tmp: Path, *, waves: bool = False) -> None:
    """Run cocotb testbench ``test_module`` on the build ``sim`` with the job in
    ``tmp/job.json`` (``TESSERA_JOB``); a simulation that fails says so with its log's tail."""
    from cocotb_tools.runner import get_runner

    sys.path.insert(0, str(ROOT))
    try:
        with tool_env(), _outside_pytest():
            get_runner("verilator").test(
                hdl_toplevel=sim.toplevel, hdl_toplevel_lang="verilog",
                test_module=test_module, build_dir=sim.directory, test_dir=tmp,
                extra_env={"TESSERA_JOB": str(tmp / "job.json")},
                results_xml=str(tmp / "results.xml"), log_file=tmp / "sim.log", waves=waves)
    except (RuntimeError, SystemExit) as e:
        log = (tmp / "sim.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the simulation did not complete ({e}):\n{log}") from None
    finally:
        sys.path.remove(str(ROOT))


def run_program(cfg: EngineConfig, words: list[int], image: bytes,
                read: list[tuple[int, int]], *, stall: int = 0, timeout_cycles: int = 0,
                build_root: Path | None = None, backend: str = "native") -> ProgramRun:
    """Run assembled ``words`` on the engine with memory ``image``; read back ``read`` regions."""
    return run_programs(cfg, [Job(words, image, read, stall, timeout_cycles)],
                        build_root=build_root, backend=backend)[0]


def run_programs(cfg: EngineConfig, jobs: list[Job], *, build_root: Path | None = None,
                 min_mem_words: int = 4096, waves: Path | None = None,
                 backend: str = "native",
                 progress: Callable[[int, int, int], None] | None = None,
                 coverage: Path | None = None) -> list[ProgramRun]:
    """Run several programs, one after the other, in one simulator process.

    Builds (or reuses) the engine harness sized for the largest job: instruction memory and
    simulated memory round up to powers of two, so similar jobs share one build. ``waves``:
    record every signal into this file (FST, or VCD where FST does not compile; a build of its
    own). ``backend``: one of :data:`BACKENDS`; both run the same harness and agree on every
    output and cycle. ``progress(job, cycles, predicted)``: called a few times a second while a
    job runs (``native`` only). ``coverage``: write line and toggle coverage counts to this file
    (``native`` only, a build of its own; :mod:`sim.coverage` reads them).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend is one of {', '.join(BACKENDS)}, not {backend!r}")
    w = cfg.mem_bytes_per_cycle
    end = max(max([len(j.image)] + [a + n for a, n in j.read]) for j in jobs)
    mem_words = _pow2(-(-end // w) + 1, min_mem_words)
    imem = _pow2(max(len(j.words) for j in jobs), 8192)
    jobs = [replace(j, timeout_cycles=j.timeout_cycles or _timeout(j, w)) for j in jobs]
    if coverage is not None and backend != "native":
        raise ValueError("coverage is counted by the native backend only")
    sim = build(cfg, kind="native" if backend == "native" else "engine", depth=imem,
                mem_words=mem_words, root=build_root, waves=waves is not None,
                coverage=coverage is not None)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=sim.directory) as tmp:
        tmp = Path(tmp)
        if backend == "native":
            if waves is not None:
                waves.parent.mkdir(parents=True, exist_ok=True)
            outs = run_native(sim, jobs, tmp, waves=waves, progress=progress,
                              coverage=coverage)
        else:
            outs = _run_cocotb(sim, jobs, tmp, waves)
    seconds = time.perf_counter() - t0
    runs = []
    for n, (job, out) in enumerate(zip(jobs, outs, strict=True)):
        if not out["finished"]:
            raise RuntimeError(f"the engine did not finish program {n} within "
                               f"{job.timeout_cycles:,} cycles (it stopped at "
                               f"{out['cycles']:,})")
        error = f"illegal instruction ({out['error']})" if out["error"] else None
        runs.append(ProgramRun(cycles=out["cycles"], error=error, counters=out["counters"],
                               mem_reads=out["mem_reads"], mem_writes=out["mem_writes"],
                               regions=out["regions"],
                               sim_seconds=out.get("seconds", seconds)))
    return runs


def _run_cocotb(sim, jobs: list[Job], tmp: Path, waves: Path | None) -> list[dict]:
    """The jobs through cocotb (``sim/tb_engine.py``), results as :func:`run_native` gives."""
    w = sim.config.mem_bytes_per_cycle
    spec = []
    for n, job in enumerate(jobs):
        (tmp / f"image{n}.bin").write_bytes(job.image)
        spec.append({
            "program": [f"{x:x}" for x in job.words], "memory": str(tmp / f"image{n}.bin"),
            "bytes_per_word": w, "stall": job.stall, "read": [list(r) for r in job.read],
            "out": str(tmp / f"out{n}.json"), "timeout_cycles": job.timeout_cycles})
    (tmp / "job.json").write_text(json.dumps({"jobs": spec}))
    run_job(sim, "sim.tb_engine", tmp, waves=waves is not None)
    if waves is not None and (tmp / waves_file()).exists():
        waves.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp / waves_file()), waves)
    outs = []
    for n in range(len(jobs)):
        if not (tmp / f"out{n}.json").exists():
            # the testbench's timeout: the job did not finish
            outs.append({"finished": False, "cycles": jobs[n].timeout_cycles})
            continue
        out = json.loads((tmp / f"out{n}.json").read_text())
        outs.append({
            "finished": True, "cycles": out["cycles"],
            "error": ErrorCode(out["error_code"]).name if out["error"] else None,
            "counters": out["counters"], "mem_reads": out["mem_reads"],
            "mem_writes": out["mem_writes"],
            "regions": [bytes.fromhex(x) for x in out["regions"]]})
    return outs


def cosim_gemm(cfg: EngineConfig, m: int, k: int, n: int, *, seed: int = 0,
               requant: bool = False, stall: int = 0, build_root: Path | None = None,
               min_mem_words: int = 4096, waves: Path | None = None,
               backend: str = "native",
               progress: Callable[[int, int, int], None] | None = None,
               softmax_x0: int | None = None, causal: bool = False) -> dict:
    """Schedule, run and check one GEMM; the dict has ``bit_exact``, ``cycles``, ``macs``,
    ``utilization`` (MACs / (rows x cols x cycles)) and the engine's counters (and ``waves``,
    the FST file, when asked for). ``softmax_x0``: C's rows leave through the softmax stage."""
    case = (m, k, n, seed, requant, stall) + ((softmax_x0, causal) if softmax_x0 is not None
                                               else ())
    result = cosim_gemms(cfg, [case], build_root=build_root,
                         min_mem_words=min_mem_words, waves=waves, backend=backend,
                         progress=progress)[0]
    if waves is not None:
        result["waves"] = str(waves) if waves.exists() else None
    return result


def cosim_gemms(cfg: EngineConfig, cases: list[tuple[int, int, int, int, bool, int]], *,
                build_root: Path | None = None, min_mem_words: int = 4096,
                waves: Path | None = None, backend: str = "native",
                progress: Callable[[int, int, int], None] | None = None) -> list[dict]:
    """Several GEMMs ``(m, k, n, seed, requant, stall)`` in one simulator process; a seventh
    element, Shiftmax's ``x0``, runs the softmax stage over C's rows (logits requantized with
    one scale), and an eighth, True, masks it causally (element j of row i only if j <= i)."""
    prepared = []
    for case in cases:
        m, k, n, seed, requant, stall = case[:6]
        x0 = case[6] if len(case) > 6 else None
        causal = bool(case[7]) if len(case) > 7 else False
        if isinstance(stall, bool) or not isinstance(stall, int) or not 0 <= stall <= 255:
            raise PlanError(f"stall is a chance out of 256 that memory refuses a request, 0 to "
                            f"255, not {stall!r}")
        layout = check_gemm(cfg, m, k, n, requant)   # the shape, before any allocation
        if layout.size > MAX_SIM_BYTES:
            raise PlanError(f"a {m}x{k}x{n} GEMM needs {layout.size:,} bytes of memory for its "
                            f"operands and result; co-simulation holds at most "
                            f"{MAX_SIM_BYTES >> 20} MiB")
        ops = make_operands(m, k, n, seed=seed, requant=requant, softmax=x0 is not None)
        plan = plan_gemm(cfg, m, k, n, requant=requant, zero_point=ops.zero_point,
                         softmax_x0=x0, softmax_causal=causal)
        words = isa.assemble(plan.program, cfg)
        predicted = program_cycles(cfg, plan.program, stall=stall).cycles
        job = Job(words, memory_image(plan, ops), [(plan.layout.c_addr, m * plan.layout.ldc)],
                  stall, timeout_cycles=2 * predicted + 10_000, predicted_cycles=predicted)
        prepared.append((plan, ops, job, predicted))
    runs = run_programs(cfg, [p[2] for p in prepared], build_root=build_root,
                        min_mem_words=min_mem_words, waves=waves, backend=backend,
                        progress=progress)
    results = []
    for (plan, ops, job, predicted), run, case in zip(prepared, runs, cases, strict=True):
        m, k, n, seed, requant, stall = case[:6]
        want = golden_result(cfg, ops, requant, plan.softmax_x0, plan.softmax_causal)
        got = read_result(plan, run.regions[0]) if run.error is None else None
        mismatches = int((got != want).sum()) if got is not None else want.numel()
        macs = m * k * n
        results.append({
            "config": cfg.label, "m": m, "k": k, "n": n, "requant": requant, "seed": seed,
            "softmax_x0": plan.softmax_x0, "causal": plan.softmax_causal,
            "stall": stall, "bit_exact": run.error is None and mismatches == 0,
            "mismatches": mismatches, "elements": want.numel(), "error": run.error,
            "cycles": run.cycles, "macs": macs, "utilization": macs / (cfg.pes * run.cycles),
            "predicted_cycles": predicted, "model_error": (predicted - run.cycles) / run.cycles,
            "instructions": len(job.words), "blocking": [plan.mb, plan.nb, plan.kc],
            "array_beats": sum(i.args["extent"] for i in plan.program if i.op == isa.Op.COMPUTE),
            "counters": run.counters,
            "mem_read_beats": run.mem_reads, "mem_write_beats": run.mem_writes,
            # wall time of the simulator process (loading, simulation, readback; not the build)
            "sim_seconds": run.sim_seconds,
        })
    return results
