"""Whole-engine regressions: generated Verilog under Verilator, driven by cocotb.

Marked ``sim``: ``make test-quick`` (``-m "not sim"``) skips them. Builds are cached per
configuration under ``build/sim``.
"""

import pytest

from rtl.config import EngineConfig, preset
from sim.regress import run_regression

pytestmark = pytest.mark.sim

CONFIGS = [
    EngineConfig(rows=r, cols=c, dataflow=d, name=f"{r}x{c}")
    for (r, c) in [(1, 1), (3, 5), (8, 8)] for d in ("os", "ws")
] + [preset("tiny").replace(dataflow=d, name="tiny") for d in ("os", "ws")] + [
    # A narrow accumulator: the corner and range tests drive it past its limits, so it wraps.
    EngineConfig(rows=4, cols=3, dataflow=d, acc_bits=18, name="narrow-acc") for d in ("os", "ws")
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.rows}x{c.cols}-{c.dataflow}"
                         + ("-acc18" if c.acc_bits == 18 else ""))
def test_regression(config):
    result = run_regression(config)
    assert result.error is None, result.error
    assert result.tests >= 6, f"only {result.tests} cocotb tests ran; log: {result.log}"
    assert not result.failed, f"failed: {result.failed}; log: {result.log}"
    assert result.elements > 0 and result.cycles > 0


def test_a_broken_pe_is_caught(tmp_path, monkeypatch):
    """Flip one bit of the product: the regression must notice (the tests can fail)."""
    from rtl.pe import PE

    original = PE.product
    monkeypatch.setattr(PE, "product", lambda self, a, b: original(self, a, b) ^ 4)
    result = run_regression(EngineConfig(rows=2, cols=3, dataflow="os"),
                            pattern="random_tiles$", build_root=tmp_path)
    assert result.error is None, result.error
    assert result.tests == 1 and result.failed == ["random_tiles"], result.to_dict()
