"""Programs on the engine at Verilator's own speed: the harness with a C++ main of its own.

The same :class:`sim.engine_harness.EngineHarness` that cocotb drives in ``sim/tb_engine.py``,
built by ``sim.build.build(kind="native")`` with ``sim/cpp/engine_main.cpp`` as its main: no VPI,
no ``--public-flat-rw``, only the two memories visible so the jobs' program and image can be
loaded and the results read back. Python writes a manifest of jobs, runs the executable once
for all of them and reads what it wrote; while it runs, its progress lines drive ``progress``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from rtl.counters import counter_layout
from rtl.isa import ErrorCode

from .build import SimBuild

__all__ = ["run_native"]

COUNTERS = [name for name, _ in counter_layout]


def run_native(sim: SimBuild, jobs: list, tmp: Path, *, waves: Path | None = None,
               progress: Callable[[int, int, int], None] | None = None,
               report_ms: int = 250, coverage: Path | None = None) -> list[dict]:
    """Run ``jobs`` (:class:`sim.cosim.Job`) on the native build ``sim`` in directory ``tmp``.

    Returns one dict per job: ``finished`` (done rose before the job's timeout), ``cycles``,
    ``error`` (the ErrorCode's name, or None), ``counters``, ``mem_reads``, ``mem_writes``,
    ``seconds`` (the clock loop's wall time, loading and reading back excluded) and ``regions``
    (the bytes read back). ``progress(job, cycles, predicted)`` is called while a job runs, at
    most once per ``report_ms`` milliseconds (checked every 65,536 cycles). ``coverage``: a
    file for the build's coverage counts (a build with ``coverage``; :mod:`sim.coverage`).
    """
    lines = [f"coverage {coverage}"] if coverage is not None else []
    for n, job in enumerate(jobs):
        (tmp / f"program{n}.hex").write_text("".join(f"{x:x}\n" for x in job.words))
        (tmp / f"image{n}.bin").write_bytes(job.image)
        lines += ["job", f"program {tmp / f'program{n}.hex'}", f"memory {tmp / f'image{n}.bin'}",
                  f"stall {job.stall}", f"timeout {job.timeout_cycles}",
                  f"predicted {job.predicted_cycles}", f"report_ms {report_ms}"]
        lines += [f"read {a} {length} {tmp / f'region{n}_{r}.bin'}"
                  for r, (a, length) in enumerate(job.read)]
        lines += [f"out {tmp / f'out{n}.json'}", "end"]
    manifest = tmp / "jobs.txt"
    manifest.write_text("\n".join(lines) + "\n")
    cmd = [str(sim.executable), str(manifest)] + ([str(waves)] if waves is not None else [])
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          bufsize=1) as proc:
        try:
            for line in proc.stdout:
                parts = line.split()
                if parts and parts[0] == "progress" and progress is not None:
                    progress(int(parts[1]), int(parts[2]), int(parts[3]))
            stderr = proc.stderr.read()
            proc.wait()
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0:
        raise RuntimeError(f"the engine harness stopped (exit {proc.returncode}): "
                           f"{stderr.strip()[-2000:]}")
    results = []
    for n, job in enumerate(jobs):
        out = json.loads((tmp / f"out{n}.json").read_text())
        code = out["error_code"]
        results.append({
            "finished": out["finished"], "cycles": out["cycles"],
            "error": ErrorCode(code).name if out["error"] else None,
            "counters": dict(zip(COUNTERS, out["counters"], strict=False)),
            "mem_reads": out["mem_reads"], "mem_writes": out["mem_writes"],
            "seconds": out["seconds"],
            "regions": [(tmp / f"region{n}_{r}.bin").read_bytes() for r in range(len(job.read))],
        })
    return results
