"""The FPGA flow: boards, fit refusals before any tool runs, reports, one synthesis in CI."""

import json

import pytest

from fpga.boards import BOARDS, BoardError, board
from fpga.build import (
    _brams_for,
    _pnr_report,
    _synth_stats,
    build,
    build_directory,
    check_fit,
    dsp_multipliers,
    make_top,
)
from fpga.clocks import ecp5_pll
from rtl.config import EngineConfig, preset
from tessera.cli import main


def test_registry_names_each_board_and_refuses_unknown_ones():
    assert {"ulx3s-12f", "ulx3s-45f", "ulx3s-85f", "orangecrab", "icebreaker",
            "arty-a7-35"} <= set(BOARDS)
    for b in BOARDS.values():
        platform = b.make_platform()
        assert platform.device == b.device
    with pytest.raises(BoardError, match="unknown board 'de10'"):
        board("de10")


def test_configs_that_cannot_fit_are_refused_with_the_reason(capsys):
    # the iCE40 UP5K has 30 block RAMs of 4 Kbit: the tiny preset's 16 KiB scratchpads do not
    # fit, and the message says what would (this runs no tool: it is refused first)
    assert main(["fpga", "build", "icebreaker", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "does not fit icebreaker" in err and "30 of 4 Kbit" in err
    assert "--spad-kib" in err
    # too many multipliers for the DSP blocks and the LUTs
    big = preset("large").replace(rows=64, cols=64, spad_kib=4, acc_kib=4)
    with pytest.raises(BoardError, match=r"4545 multipliers \(4096 PEs, 256 in the "
                                         r"requantizer, 192 in the softmax stage, 1 in the "
                                         r"dispatcher\) need as many DSP blocks, the device "
                                         r"has 28"):
        check_fit(board("ulx3s-12f"), big, {})
    # Yosys puts every multiplier in a DSP block on ECP5: one too many is refused, not left to
    # fail in nextpnr; iCE40 has no LUT RAM for the instruction queues
    with pytest.raises(BoardError, match="45 multipliers .* need as many DSP blocks, the "
                                         "device has 28"):
        check_fit(board("orangecrab"), preset("tiny"), {})
    assert main(["fpga", "build", "icebreaker", "--preset", "tiny", "--spad-kib", "1",
                 "--acc-kib", "1"]) == 2
    assert "LUT RAM, which iCE40 does not have" in capsys.readouterr().err


def test_nextpnr_and_yosys_reports_are_read(tmp_path):
    report = {"utilization": {"TRELLIS_SLICE": {"used": 100, "available": 41820},
                              "MULT18X18D": {"used": 64, "available": 156},
                              "DP16KD": {"used": 0, "available": 208}},
              "fmax": {"$glbnet$clk": {"achieved": 104.2, "constraint": 100.0}}}
    (tmp_path / "r.json").write_text(json.dumps(report))
    resources, fmax = _pnr_report(tmp_path / "r.json")
    assert resources == {"TRELLIS_SLICE": (100, 41820), "MULT18X18D": (64, 156)}
    assert fmax == 104.2
    stat = {"design": {"num_cells_by_type": {"LUT4": 10, "TRELLIS_FF": 7, "MULT18X18D": 2,
                                             "DP16KD": 3, "CCU2C": 4}}}
    (tmp_path / "s.json").write_text(json.dumps(stat))
    got = _synth_stats(tmp_path / "s.json", board("ulx3s-85f"))
    assert got["LUT4"] == (10, 83640) and got["DSP"] == (2, 156) and got["BRAM"] == (3, 208)
    assert got["FF"] == (7, None)


def test_vendor_board_gets_files_only(tmp_path):
    cfg = EngineConfig(rows=2, cols=2, spad_kib=1, acc_kib=1, mem_bytes_per_cycle=4)
    report = build(board("arty-a7-35"), cfg, out=tmp_path)
    assert report.stage == "files"
    names = {p.name for p in tmp_path.iterdir()}
    assert "top.xdc" in names and any(n.endswith(".sh") or n.endswith(".bat") for n in names)


@pytest.mark.fpga
def test_smallest_preset_synthesizes_for_an_ecp5_board(capsys):
    # one real run of YoWASP Yosys in CI (about a minute on two cores)
    assert main(["fpga", "build", "ulx3s-85f", "--preset", "tiny", "--synth-only",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stage"] == "synth"
    luts, available = out["resources"]["LUT4"]["used"], out["resources"]["LUT4"]["available"]
    assert 0 < luts < available
    cfg, b = preset("tiny"), board("ulx3s-85f")
    # the fit check's counts against what Yosys made: DSPs exactly, block RAM never under
    # 16 PEs, 4 x 4 in the requantizer, 4 x 3 in the softmax stage, 1 in the dispatcher
    assert out["resources"]["DSP"]["used"] == dsp_multipliers(cfg) == 45
    top = make_top(b, cfg)
    top._MustUse__silence = True
    estimate = sum(n * _brams_for(w, d, b) for w, d, n in top.memory_shapes.values())
    used = out["resources"]["BRAM"]["used"]
    assert used <= estimate <= used + 8, (used, estimate)
    assert out["memory_bytes"] == top.mem_bytes and out["baud"] == 115_200
    # the 25 MHz oscillator goes through a PLL to the 100 MHz target, which the UART divides
    assert out["pll"] and out["clock_hz"] == 100_000_000 == top.clock_hz
    assert top.divisor == round(100_000_000 / 115_200)


@pytest.mark.parametrize("fin, fout, dividers, made", [
    # what Project Trellis' ecppll (yowasp-ecppll -i FIN -o FOUT) chooses (it never went
    # above the target in these)
    (25, 100, (1, 4, 6), 100), (25, 90, (5, 18, 7), 90), (25, 120, (5, 24, 5), 120),
    (25, 48, (8, 15, 13), 46.875), (48, 100, (12, 25, 6), 100),
])
def test_ecp5_pll_dividers_match_ecppll(fin, fout, dividers, made):
    pll = ecp5_pll(fin * 1_000_000, fout * 1e6)
    assert (pll.clki_div, pll.clkfb_div, pll.clkop_div) == dividers
    assert pll.output_hz == made * 1e6 and 400e6 <= pll.vco_hz <= 800e6


def test_ecp5_pll_refuses_what_it_cannot_make():
    with pytest.raises(BoardError, match="3.125 to 400 MHz, not 500 MHz"):
        ecp5_pll(25_000_000, 500e6)
    # a board clocked at the target needs no PLL; a non-ECP5 board runs from its oscillator
    top = make_top(board("ulx3s-85f"), preset("tiny").replace(clock_mhz=25.0))
    top._MustUse__silence = True
    assert top.pll is None and top.clock_hz == 25_000_000
    cfg = EngineConfig(rows=2, cols=2, spad_kib=1, acc_kib=1, mem_bytes_per_cycle=4,
                       clock_mhz=50.0)
    top = make_top(board("arty-a7-35"), cfg)
    top._MustUse__silence = True
    assert top.pll is None and top.clock_hz == 100_000_000
    # from 48 MHz, 50 exactly needs a 2 MHz phase detector (the least is 3.125); nothing
    # between 48 and 50 is possible, so the oscillator it is
    top = make_top(board("orangecrab"), cfg)
    top._MustUse__silence = True
    assert top.pll is None and top.clock_hz == 48_000_000
    top = make_top(board("orangecrab"), cfg.replace(clock_mhz=100.0))
    top._MustUse__silence = True
    assert top.pll is not None and top.clock_hz == 100_000_000


def test_a_bad_placement_seed_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(BoardError, match="--seed must be an integer"):
        build(board("ulx3s-85f"), preset("tiny"), out=tmp_path, seed=-1)
    assert not any(tmp_path.iterdir())


def test_builds_with_a_chosen_memory_or_seed_get_their_own_directory():
    b, cfg = board("ulx3s-85f"), preset("edge")
    default = build_directory(b, cfg)
    assert default.name == f"ulx3s-85f-{cfg.key}"
    assert build_directory(b, cfg, mem_kib=4).name == f"ulx3s-85f-{cfg.key}-mem4k"
    assert build_directory(b, cfg, seed=3).name == f"ulx3s-85f-{cfg.key}-seed3"
    assert build_directory(b, cfg, mem_kib=8, seed=0).name == f"ulx3s-85f-{cfg.key}-mem8k-seed0"
