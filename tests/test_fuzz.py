"""``tessera fuzz``: a short campaign on the RTL (zero mismatches, zero cycle disagreements),
and the campaign's own checks: it catches a wrong element and a wrong cycle count, writes a
reproducer that ``tessera cosim program`` replays, and runs on a Dask cluster."""

import contextlib
import json
import random

import pytest

from rtl.config import EngineConfig
from sim import fuzz
from tessera.cli import main

# the small engine of tests/test_engine_sim.py
OS = EngineConfig(rows=3, cols=5, dataflow="os", spad_kib=4, acc_kib=4, mem_bytes_per_cycle=8,
                  mem_latency=4)
WS = EngineConfig(rows=3, cols=5, dataflow="ws", spad_kib=4, acc_kib=4, mem_bytes_per_cycle=8,
                  mem_latency=4)


@pytest.mark.parametrize("kind", fuzz.ILLEGAL)
def test_each_planted_word_is_refused_with_its_own_error_code(kind):
    for cfg in (OS, WS):
        rng = random.Random(kind)
        for _ in range(5):
            assert fuzz._expected_code(cfg, fuzz._illegal_word(cfg, kind, rng)).name == kind


def test_cases_are_drawn_the_same_for_a_seed_and_span_what_the_campaign_promises():
    cases = fuzz.draw_cases(OS, 400, seed=7)
    assert cases == fuzz.draw_cases(OS, 400, seed=7)
    assert cases != fuzz.draw_cases(OS, 400, seed=8)
    assert {c.operands for c in cases} == {"random", "min", "max", "alternating", "params"}
    assert any(c.illegal for c in cases) and any(c.relu for c in cases)
    assert any(c.blocking for c in cases) and any(c.blocking is None for c in cases)
    assert any(c.stall > 200 for c in cases) and any(c.stall == 0 for c in cases)
    assert min(c.m for c in cases) == 1 and max(c.k for c in cases) > 1000


@pytest.mark.sim
@pytest.mark.xdist_group("fuzz")
@pytest.mark.parametrize("cfg", [OS, WS], ids=["os", "ws"])
def test_a_short_campaign_finds_nothing(cfg, tmp_path):
    summary, failures = fuzz.campaign(cfg, 150, seed=11, out=tmp_path)
    assert failures == [] and summary["failed_programs"] == 0
    assert summary["programs"] == 150 and summary["illegal_programs"] > 0
    assert summary["mismatches"] == 0 and summary["cycle_disagreements"] == 0
    assert summary["elements_compared"] > 5000


@pytest.mark.sim
@pytest.mark.xdist_group("fuzz")
def test_a_wrong_element_is_caught_saved_and_replayed(tmp_path, monkeypatch, capsys):
    real = fuzz._golden

    def off_by_one(cfg, case, ops):
        want = real(cfg, case, ops).clone()
        want[-1, -1] += 1
        return want

    monkeypatch.setattr(fuzz, "_golden", off_by_one)
    summary, failures = fuzz.campaign(OS, 12, seed=3, out=tmp_path)
    gemms = summary["programs"] - summary["illegal_programs"]
    assert summary["mismatches"] == gemms and len(failures) == gemms
    body = json.loads(failures[0].read_text())
    assert body["format"] == fuzz.FORMAT and "1 of" in body["failure"] and body["program"]
    capsys.readouterr()
    assert main(["cosim", "program", str(failures[0])]) == 1
    assert "FAILS: 1 of" in capsys.readouterr().out
    monkeypatch.setattr(fuzz, "_golden", real)
    assert main(["cosim", "program", str(failures[0])]) == 0
    assert "passes" in capsys.readouterr().out


@pytest.mark.sim
@pytest.mark.xdist_group("fuzz")
def test_a_wrong_cycle_count_is_caught(tmp_path, monkeypatch):
    real = fuzz.program_cycles

    class Late:
        def __init__(self, timing):
            self.cycles = timing.cycles + 1

    monkeypatch.setattr(fuzz, "program_cycles", lambda *a, **k: Late(real(*a, **k)))
    summary, failures = fuzz.campaign(OS, 6, seed=5, out=tmp_path)
    gemms = summary["programs"] - summary["illegal_programs"]
    assert summary["cycle_disagreements"] == gemms
    assert all("the model predicted" in json.loads(p.read_text())["failure"] for p in failures)


@pytest.mark.sim
@pytest.mark.xdist_group("fuzz")
def test_a_campaign_runs_on_a_dask_cluster():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        summary, failures = fuzz.campaign(OS, 40, seed=2, scheduler=client, batch=10)
    assert summary["programs"] == 40 and not failures and summary["failed_programs"] == 0


def test_a_file_that_is_not_a_reproducer_is_refused_by_name(tmp_path, capsys):
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    assert main(["cosim", "program", str(bad)]) == 2
    assert "not a tessera fuzz reproducer" in capsys.readouterr().err
    assert main(["cosim", "program", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert main(["cosim", "program", str(tmp_path / "broken.json")]) == 2
    assert "is not JSON" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--programs", "0"], "--programs must be at least 1"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--scheduler", "nonsense"], "a Dask scheduler address looks like tcp://"),
])
def test_fuzz_refuses_bad_options_by_name(flags, message, capsys):
    # --jobs is checked for every command by the parser (argparse exits with status 2)
    with pytest.raises(SystemExit) if flags[0] == "--jobs" else contextlib.nullcontext():
        assert main(["fuzz", "--preset", "tiny", "--programs", "2", *flags]) == 2
    assert message in capsys.readouterr().err


def test_coverage_files_merge_and_summarize_per_unit(tmp_path):
    from sim import coverage

    def key(h, page, line):
        return "\x01".join(f"{k}\x02{v}" for k, v in
                           [("f", "t.v"), ("l", line), ("page", f"{page}/x"), ("h", h)])

    a, b = tmp_path / "a.dat", tmp_path / "b.dat"
    a.write_text("# SystemC::Coverage-3\n"
                 f"C '{key('TOP.tessera_top.engine.load', 'v_line', 3)}' 0\n"
                 f"C '{key('TOP.tessera_top.engine.load', 'v_toggle', 4)}' 5\n"
                 f"C '{key('TOP.tessera_top.engine.store$7.req', 'v_branch', 9)}' 0\n")
    b.write_text(f"C '{key('TOP.tessera_top.engine.load', 'v_line', 3)}' 2\n"
                 f"C '{key('TOP.tessera_top.mem', 'v_line', 12)}' 0\n")
    counts = coverage.read([a, b])
    units = {u.unit: u for u in coverage.summarize(counts)}
    assert set(units) == {"load", "store", "harness.mem"}
    assert units["load"].covered == {"line": 1, "branch": 0, "toggle": 1}
    assert units["store"].total["branch"] == 1 and units["store"].uncovered == ["tessera_top.v:9"]
    assert units["harness.mem"].uncovered == ["tessera_top.v:12"]


@pytest.mark.sim
@pytest.mark.xdist_group("fuzz")
def test_a_campaign_with_coverage_reports_every_unit():
    summary, failures = fuzz.campaign(OS, 24, seed=4, coverage=True)
    assert not failures
    units = {u["unit"]: u for u in summary["coverage"]}
    assert {"dispatch", "load", "compute", "store", "acc", "arbiter"} <= set(units)
    for u in units.values():
        assert u["toggle_points"] > 0 and 0 <= u["toggle_covered"] <= u["toggle_points"]
    # a campaign reaches every block of the load unit; what it misses is named by Python line
    assert units["load"]["line_covered"] == units["load"]["line_points"] > 0
    assert all(":" in name for u in units.values() for name in u["uncovered"])
