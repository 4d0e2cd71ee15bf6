"""Run host-link sessions on the simulated FPGA board top (cocotb + Verilator).

``run_session(config, steps)`` builds (or reuses) the board top for ``config`` and plays the
steps of :mod:`sim.tb_board` through its UART pins; it returns one result per step.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from rtl.config import EngineConfig

from .build import ROOT, build, tool_env
from .regress import _outside_pytest

__all__ = ["run_session"]


def run_session(config: EngineConfig, steps: list[dict[str, Any]], *, divisor: int = 8,
                mem_words: int = 2048, imem_depth: int = 512,
                build_root: Path | None = None) -> list[dict[str, Any]]:
    from cocotb_tools.runner import get_runner

    sim = build(config, kind="board", depth=imem_depth, mem_words=mem_words, divisor=divisor,
                root=build_root)
    with tempfile.TemporaryDirectory(dir=sim.directory) as tmp:
        tmp = Path(tmp)
        job = {"config": config.to_dict(), "divisor": divisor, "steps": steps,
               "out": str(tmp / "out.json")}
        (tmp / "job.json").write_text(json.dumps(job))
        sys.path.insert(0, str(ROOT))
        try:
            with tool_env(), _outside_pytest():
                get_runner("verilator").test(
                    hdl_toplevel=sim.toplevel, hdl_toplevel_lang="verilog",
                    test_module="sim.tb_board", build_dir=sim.directory, test_dir=tmp,
                    extra_env={"TESSERA_JOB": str(tmp / "job.json")},
                    results_xml=str(tmp / "results.xml"), log_file=tmp / "sim.log")
        except (RuntimeError, SystemExit) as e:
            log = (tmp / "sim.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the board simulation did not complete ({e}):\n{log}") from None
        finally:
            sys.path.remove(str(ROOT))
        out = tmp / "out.json"
        if not out.exists():
            log = (tmp / "sim.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the board session did not finish:\n{log}")
        return json.loads(out.read_text())
