"""Run the cocotb regression for one configuration, or a matrix of them, and summarize it."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rtl.config import EngineConfig, preset

from .build import ROOT, build, tool_env, waves_file

__all__ = ["RegressionResult", "default_matrix", "run_regression"]

TEST_MODULE = "sim.tb_tile"


@dataclass
class RegressionResult:
    """What one configuration's regression did: tests run and failed, elements and cycles."""

    config: EngineConfig
    tests: int = 0
    failed: list[str] = field(default_factory=list)
    elements: int = 0
    cycles: int = 0
    build_seconds: float = 0.0
    run_seconds: float = 0.0
    log: Path | None = None
    error: str | None = None
    #: the FST waveform of the run, when it recorded one
    waves: Path | None = None
    #: "tiles": the cocotb tile regression; "programs": random GEMM programs on the whole
    #: engine (``sim.fuzz``, native), every element and every cycle count checked;
    #: "softmax": random GEMMs whose rows leave through the softmax stage, the same way
    kind: str = "tiles"

    @property
    def passed(self) -> int:
        return self.tests - len(self.failed)

    @property
    def ok(self) -> bool:
        return self.error is None and self.tests > 0 and not self.failed

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "label": self.config.label, "tests": self.tests,
                "passed": self.passed, "failed": self.failed, "elements": self.elements,
                "cycles": self.cycles, "build_seconds": round(self.build_seconds, 2),
                "run_seconds": round(self.run_seconds, 2),
                "kind": self.kind,
                "log": str(self.log) if self.log else None, "error": self.error,
                "waves": str(self.waves) if self.waves else None}


def default_matrix() -> list[EngineConfig]:
    """The configurations ``make sim`` covers: corner arrays and the presets, both dataflows."""
    shapes = [EngineConfig(rows=1, cols=1, name="1x1"), EngineConfig(rows=3, cols=5, name="3x5"),
              preset("tiny"), preset("edge"), preset("default")]
    return [s.replace(dataflow=d, name=s.name) for s in shapes for d in ("os", "ws")]


@contextlib.contextmanager
def _outside_pytest() -> Iterator[None]:
    # cocotb's runner exits the process on failure when it sees pytest; we report instead.
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved


def _parse_results(path: Path) -> tuple[int, list[str]]:
    tree = ET.parse(path)
    tests, failed = 0, []
    for case in tree.iter("testcase"):
        tests += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(case.get("name", "?"))
    return tests, failed


def run_regression(config: EngineConfig, *, pattern: str | None = None, seed: int = 1,
                   waves: bool = False, depth: int = 2048, build_root: Path | None = None,
                   ) -> RegressionResult:
    """Build (cached) and run every cocotb test of ``sim.tb_tile`` on ``config``.

    ``pattern`` is a regular expression selecting tests by name. Never raises for a failing
    design: failures and build errors come back in the result.
    """
    from cocotb_tools.runner import get_runner

    result = RegressionResult(config=config)
    t0 = time.perf_counter()
    try:
        sim = build(config, depth=depth, waves=waves, root=build_root)
    except RuntimeError as e:
        result.error = str(e)
        return result
    result.build_seconds = time.perf_counter() - t0
    run_dir = sim.directory / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True)
    stats = run_dir / "stats.jsonl"
    results_xml = run_dir / "results.xml"
    result.log = run_dir / "sim.log"
    env = {"TESSERA_CONFIG": json.dumps(config.to_dict()), "TESSERA_DEPTH": str(sim.depth),
           "TESSERA_SEED": str(seed), "TESSERA_STATS": str(stats)}
    t1 = time.perf_counter()
    # The simulator's embedded Python must import this checkout's packages, installed or not.
    sys.path.insert(0, str(ROOT))
    with tool_env(), _outside_pytest():
        runner = get_runner("verilator")
        try:
            runner.test(hdl_toplevel=sim.toplevel, hdl_toplevel_lang="verilog",
                        test_module=TEST_MODULE, build_dir=sim.directory, test_dir=run_dir,
                        extra_env=env, results_xml=str(results_xml), test_filter=pattern,
                        waves=waves, log_file=result.log, seed=seed)
        except (RuntimeError, SystemExit) as e:
            result.error = f"simulation did not complete ({e}); see {result.log}"
    sys.path.remove(str(ROOT))
    result.run_seconds = time.perf_counter() - t1
    if waves and (run_dir / waves_file()).exists():
        result.waves = run_dir / waves_file()
    if results_xml.exists():
        result.tests, result.failed = _parse_results(results_xml)
    elif result.error is None:
        result.error = f"no results were written; see {result.log}"
    if stats.exists():
        for line in stats.read_text().splitlines():
            row = json.loads(line)
            result.elements += row["elements"]
            result.cycles += row["cycles"]
    return result


def run_program_row(config: EngineConfig, programs: int, *, seed: int = 1,
                    build_root: Path | None = None,
                    softmax_only: bool = False) -> RegressionResult:
    """``programs`` random GEMM programs (``sim.fuzz``) on the whole engine, native: every
    element against the golden and every cycle count against the model. A failing program is
    written as a reproducer under ``build/fuzz/``; its path is the failure's name.
    ``softmax_only``: GEMMs whose rows leave through the softmax stage (kind "softmax")."""
    from .fuzz import campaign

    result = RegressionResult(config=config, kind="softmax" if softmax_only else "programs")
    t0 = time.perf_counter()
    try:
        summary, failures = campaign(config, programs, seed=seed, softmax_only=softmax_only,
                                     out=ROOT / "build" / "fuzz" / config.label.replace(" ", "-"))
    except RuntimeError as e:
        result.error = str(e)
        return result
    result.tests = summary["programs"]
    result.failed = [str(p) for p in failures]
    if summary["failed_programs"] and not failures:
        result.error = f"{summary['failed_programs']} program(s) failed"
    result.elements = summary["elements_compared"]
    result.cycles = summary["simulated_cycles"]
    result.run_seconds = time.perf_counter() - t0
    return result


def _config_rows(config: EngineConfig, programs: int, kwargs: dict) -> list[RegressionResult]:
    rows = [run_regression(config, **kwargs)]
    if programs:
        rows.append(run_program_row(config, programs, seed=kwargs.get("seed", 1)))
        rows.append(run_program_row(config, max(1, programs // 2), seed=kwargs.get("seed", 1),
                                    softmax_only=True))
    return rows


def run_matrix(configs: Sequence[EngineConfig], *, jobs: int = 1, programs: int = 0,
               **kwargs) -> Iterator[RegressionResult]:
    """Run several configurations, ``jobs`` at a time, yielding results as they finish: the
    tile regression of each and, with ``programs``, that many random GEMM programs."""
    if jobs <= 1:
        for cfg in configs:
            yield from _config_rows(cfg, programs, kwargs)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_config_rows, cfg, programs, kwargs) for cfg in configs]
        for fut in as_completed(futures):
            yield from fut.result()
