"""fpga.sta: endpoint slacks from a routed design's SDF (a hand-written one here)."""

from __future__ import annotations

import pytest

from fpga.sta import SdfError, analyze, group_of

# a -> lut -> b (a long path), a -> c (a short one), and a block RAM output -> d
SDF = r"""
(DELAYFILE
  (SDFVERSION "3.0")
  (DESIGN "top")
  (TIMESCALE 1ps)
  (CELL (CELLTYPE "top") (INSTANCE )
    (DELAY (ABSOLUTE
      (INTERCONNECT engine.a_TRELLIS_FF_Q/Q engine.x_LUT4_Z/A (3000:3500:4000) (3000:3500:4000))
      (INTERCONNECT engine.x_LUT4_Z/F engine.b_TRELLIS_FF_Q/DI (5000:5500:6000) (10:10:10))
      (INTERCONNECT engine.a_TRELLIS_FF_Q/Q link.c_TRELLIS_FF_Q/DI (100:100:100) (100:100:100))
      (INTERCONNECT engine.spad\$1.0.0/DOB0 engine.d_TRELLIS_FF_Q/M (4000:4000:4000) (10:10:10))
    )))
  (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE engine.a_TRELLIS_FF_Q)
    (DELAY (ABSOLUTE (IOPATH CLK Q (400:450:500) (400:450:500))))
    (TIMINGCHECK (SETUPHOLD (posedge DI) (posedge CLK) (0:0:0) (200:200:200))))
  (CELL (CELLTYPE "TRELLIS_COMB") (INSTANCE engine.x_LUT4_Z)
    (DELAY (ABSOLUTE (IOPATH A F (200:218:236) (200:218:236)))))
  (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE engine.b_TRELLIS_FF_Q)
    (DELAY (ABSOLUTE (IOPATH CLK Q (400:450:500) (400:450:500))))
    (TIMINGCHECK (SETUPHOLD (posedge DI) (posedge CLK) (264:264:264) (0:0:0))))
  (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE link.c_TRELLIS_FF_Q)
    (DELAY (ABSOLUTE (IOPATH CLK Q (400:450:500) (400:450:500))))
    (TIMINGCHECK (SETUPHOLD (posedge DI) (posedge CLK) (0:0:0) (0:0:0))))
  (CELL (CELLTYPE "DP16KD") (INSTANCE engine.spad\$1.0.0)
    (DELAY (ABSOLUTE (IOPATH CLKB DOB0 (5795:5812:5830) (5795:5812:5830)))))
  (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE engine.d_TRELLIS_FF_Q)
    (TIMINGCHECK (SETUPHOLD (posedge M) (posedge CLK) (100:100:100) (0:0:0))))
)
"""


def test_slacks_paths_and_groups(tmp_path):
    f = tmp_path / "top.sdf"
    f.write_text(SDF)
    r = analyze(f, period_ns=10)
    assert r.endpoints == 3   # (a.DI is driven by nothing: not an endpoint)
    # b: 500 (clock to Q) + 4000 + 236 + 6000 + 264 setup = 11,000 -> -1000
    # d: 5830 + 4000 + 100 setup = 9930 -> +70 (passes); c: 600 -> passes
    assert [(e.pin, e.slack_ps) for e in r.failing] == [("engine.b_TRELLIS_FF_Q/DI", -1000)]
    assert [p for p, _ in r.failing[0].path] == [
        "engine.a_TRELLIS_FF_Q/Q", "engine.x_LUT4_Z/A", "engine.x_LUT4_Z/F",
        "engine.b_TRELLIS_FF_Q/DI"]
    assert r.failing[0].path[-1][1] == pytest.approx(10736)
    assert r.groups() == [("engine.b", 1, -1000)]
    tight = analyze(f, period_ns=9.9)
    assert {e.pin for e in tight.failing} == {"engine.b_TRELLIS_FF_Q/DI",
                                              "engine.d_TRELLIS_FF_Q/M"}


def test_group_names_drop_yosys_suffixes():
    assert group_of("engine.requant$231.core.ab3_7_TRELLIS_FF_Q_28/DI") == "engine.requant"
    assert group_of("link.fsm_state_TRELLIS_FF_Q/LSR", depth=3) == "link.fsm_state"


def test_not_an_sdf_file_is_refused(tmp_path):
    f = tmp_path / "top.sdf"
    f.write_text("(CELL (INSTANCE x))")
    with pytest.raises(SdfError, match="DELAYFILE"):
        analyze(f)
