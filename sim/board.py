"""Run host-link sessions on the simulated FPGA board top (cocotb + Verilator).

``run_session(config, steps)`` builds (or reuses) the board top for ``config`` and plays the
steps of :mod:`sim.tb_board` through its UART pins; it returns one result per step.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from rtl.config import EngineConfig

from .build import build
from .cosim import run_job

__all__ = ["run_session"]


def run_session(config: EngineConfig, steps: list[dict[str, Any]], *, divisor: int = 8,
                mem_words: int = 2048, imem_depth: int = 512, ecp5_dsp: bool = False,
                build_root: Path | None = None) -> list[dict[str, Any]]:
    sim = build(config, kind="board", depth=imem_depth, mem_words=mem_words, divisor=divisor,
                ecp5_dsp=ecp5_dsp, root=build_root)
    with tempfile.TemporaryDirectory(dir=sim.directory) as tmp:
        tmp = Path(tmp)
        job = {"config": config.to_dict(), "divisor": divisor, "steps": steps,
               "out": str(tmp / "out.json")}
        (tmp / "job.json").write_text(json.dumps(job))
        run_job(sim, "sim.tb_board", tmp)
        out = tmp / "out.json"
        if not out.exists():
            log = (tmp / "sim.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the board session did not finish:\n{log}")
        return json.loads(out.read_text())
