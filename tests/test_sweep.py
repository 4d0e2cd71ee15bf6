"""Sweeps: rows equal the mapper's, order, cache and resume, failures, bad specs, Dask."""

import csv
import json
import sys
import warnings

import pytest

from mapping.mapper import map_workload
from mapping.workloads import build
from rtl.config import preset
from tessera.cli import main
from tessera.sweep import Sweep, SweepError, load_spec

AXES = {"rows": [8, 16], "cols": [8, 16], "dataflow": ["os", "ws"]}


def test_rows_are_the_mappers_numbers_in_spec_order():
    sweep = Sweep(axes=AXES, workloads=["deit-tiny", {"model": "bert-base", "seq": 32}])
    result = sweep.run(jobs=1)
    assert len(result.rows) == 16 and not result.failed
    # order: the axes' product in spec order, workloads innermost
    assert [(r["rows"], r["cols"], r["dataflow"], r["workload"]) for r in result.rows[:3]] == [
        (8, 8, "os", "deit-tiny"), (8, 8, "os", "bert-base seq=32"), (8, 8, "ws", "deit-tiny")]
    for r in result.rows[::5]:
        cfg = preset("default").replace(rows=r["rows"], cols=r["cols"], dataflow=r["dataflow"])
        wl = build("deit-tiny") if r["workload"] == "deit-tiny" else build("bert-base", seq=32)
        t = map_workload(wl, cfg).totals()
        assert (r["cycles"], r["dram_bytes"], r["macs"]) == (t["cycles"], t["dram_bytes"],
                                                             t["macs"])
        assert r["energy_uj"] == pytest.approx(t["energy_pj"] / 1e6)
        assert r["latency_ms"] == pytest.approx(t["cycles"] / (cfg.clock_mhz * 1e3))


def test_process_pool_gives_the_same_rows(tmp_path):
    sweep = Sweep(axes=AXES, workloads=["deit-tiny"])
    one = sweep.run(jobs=1)
    two = sweep.run(jobs=2, chunk=1)
    assert one.rows == two.rows


def test_cache_resumes_and_extends(tmp_path):
    out = tmp_path / "s"
    first = Sweep(axes={"rows": [8, 16]}, workloads=["deit-tiny"]).run(jobs=1, out=out)
    assert (first.computed, first.cached) == (2, 0)
    again = Sweep(axes={"rows": [8, 16]}, workloads=["deit-tiny"]).run(jobs=1, out=out)
    assert (again.computed, again.cached) == (0, 2)
    assert [r["cycles"] for r in again.rows] == [r["cycles"] for r in first.rows]
    # extending an axis computes only the new points
    more = Sweep(axes={"rows": [8, 16, 32]}, workloads=["deit-tiny"]).run(jobs=1, out=out)
    assert (more.computed, more.cached) == (1, 2)
    # a torn cache file (an interrupted write) is computed again, not trusted
    victim = next((out / "cache").glob("*.json"))
    victim.write_text("{not json")
    torn = Sweep(axes={"rows": [8, 16, 32]}, workloads=["deit-tiny"]).run(jobs=1, out=out)
    assert (torn.computed, torn.cached) == (1, 2)


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    topo = tmp_path / "huge.csv"
    # operands of this layer exceed the engine's 32-bit address space: every point fails
    topo.write_text("Layer,M,N,K\nhuge,70000,64,70000\n")
    sweep = Sweep(axes={"rows": [8, 16]}, workloads=["deit-tiny", str(topo)])
    result = sweep.run(jobs=1, out=tmp_path / "out")
    assert len(result.failed) == 2 and len(result.ok) == 2
    assert all("address space" in r["error"] for r in result.failed)
    # failures are not cached: they are tried again next time
    assert (tmp_path / "out" / "sweep.csv").exists()
    assert len(list((tmp_path / "out" / "cache").glob("*.json"))) == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(axes={"rowz": [8]}), "unknown axis 'rowz'"),
    (dict(axes={"rows": [0]}), "axis rows: value 0: rows must be a positive integer"),
    (dict(axes={"rows": []}), "axis rows has no values"),
    (dict(axes={"rows": 8}), "axis rows: give a list of values"),
    (dict(axes={"dataflow": ["os", "xs"]}), "axis dataflow: value 'xs'"),
    (dict(axes={"rows": [8]}, workloads=[]), "names no workload"),
    (dict(axes={"rows": [8]}, workloads=["resnet"]), "unknown model 'resnet'"),
    (dict(axes={"rows": [8]}, workloads=[{"model": "bert-base", "sequence": 5}]),
     "unknown workload option(s) sequence"),
    (dict(axes={"in_bits": [8, 16]}), "in_bits is not an axis: the programmable engine moves "
                                      "int8 operands"),
    # what the RTL cannot build is refused here as the generator and tessera map refuse it
    (dict(axes={"acc_bits": [32, 16]}),
     "point acc_bits=16: the requantizer needs acc_bits of at least 17, not 16"),
    (dict(axes={"mem_bytes_per_cycle": [16, 100000]}),
     "point mem_bytes_per_cycle=100000: mem_bytes_per_cycle must be at most 1024"),
    (dict(axes={"spad_kib": [64, 10_000_000]}),
     "point spad_kib=10000000: spad_kib = 10000000 gives scratchpad A"),
    (dict(axes={"rows": [4, 8], "spad_kib": [64, 512]}),   # each fine, not together
     "point rows=4, spad_kib=512: spad_kib = 512 gives scratchpad A 131,072 4-byte rows"),
    (dict(axes={"rows": [8.0]}), "axis rows: value 8.0 is not int"),
    (dict(axes={"rows": [True]}), "axis rows: value True is not int"),
    (dict(axes={"rows": [8]}, workloads=[{"model": "bert-base", "seq": -5}]),
     "workload 1: seq must be a positive integer, not -5"),
    (dict(axes={"rows": [8]}, workloads=[{"model": "deit-tiny", "batch": "2"}]),
     "workload 1: batch must be a positive integer, not '2'"),
    (dict(axes={"rows": [8]}, validate=True), "validate must be a number of points"),
    (dict(axes={"rows": [8]}, per_op="no"), "per_op must be true or false, not 'no'"),
    (dict(axes={"rows": [8]}, base="huge"), "base: unknown preset 'huge'"),
])
def test_bad_sweeps_are_refused_before_any_work(kwargs, message):
    kwargs.setdefault("workloads", ["deit-tiny"])
    with pytest.raises(SweepError) as e:
        Sweep(**kwargs)
    assert message in str(e.value)


def test_spec_file_and_cli(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "t"\nbase = "edge"\nworkloads = ["deit-tiny"]\n'
                    '[axes]\nrows = [4, 8]\ncols = [8]\n[options]\nper_op = true\n')
    out = tmp_path / "o"
    assert main(["sweep", str(spec), "-o", str(out), "--jobs", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "2 points (2 computed, 0 from the cache)" in text and "Pareto front" in text
    rows = list(csv.DictReader((out / "sweep.csv").read_text().splitlines()))
    assert [int(r["rows"]) for r in rows] == [4, 8] and rows[0]["spad_kib"] == "32"
    ops = list(csv.DictReader((out / "ops.csv").read_text().splitlines()))
    assert {o["point"] for o in ops} == {"0", "1"} and "blocks.qkv" in {o["name"] for o in ops}
    for png in ("pareto_energy.png", "pareto_area.png", "utilization.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "sweep.json").read_text())
    assert data["points"] == 2
    # bad specs: exit 2 with the reason, no traceback
    bad = tmp_path / "bad.toml"
    bad.write_text('workloads = ["deit-tiny"]\n[axes]\ncolumns = [8]\n')
    assert main(["sweep", str(bad)]) == 2
    assert "unknown axis 'columns'" in capsys.readouterr().err
    bad.write_text('workloads = ["deit-tiny"]\n[axes]\nrows = [8]\n[options]\nfpga = "ulx3s"\n')
    assert main(["sweep", str(bad)]) == 2
    assert "FPGA" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2


def test_pareto_front_is_not_dominated():
    result = Sweep(axes={"rows": [8, 16, 32], "cols": [8, 32], "mem_bytes_per_cycle": [8, 32]},
                   workloads=["deit-tiny"]).run(jobs=1)
    front = result.pareto("latency_ms", "energy_uj")
    assert front
    for f in front:
        assert not any(r["latency_ms"] <= f["latency_ms"] and r["energy_uj"] < f["energy_uj"]
                       or r["latency_ms"] < f["latency_ms"] and r["energy_uj"] <= f["energy_uj"]
                       for r in result.ok)


def test_example_spec_loads():
    sweep = load_spec("examples/array_shapes.toml")
    assert len(sweep.points) == 36


def test_dask_local_cluster_gives_the_same_rows():
    distributed = pytest.importorskip("distributed")
    sweep = Sweep(axes={"rows": [8, 16], "dataflow": ["os", "ws"]}, workloads=["deit-tiny"])
    local = sweep.run(jobs=1)
    with warnings.catch_warnings():
        # the in-process cluster may note that its (unused) dashboard port is taken
        warnings.simplefilter("ignore", UserWarning)
        with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            on_dask = sweep.run(scheduler=client, chunk=1)
    assert on_dask.rows == local.rows


@pytest.mark.sim
def test_validated_points_run_on_the_rtl(tmp_path):
    # the small engine of tests/test_engine_sim.py, so its Verilator build is shared
    base = {"rows": 3, "cols": 5, "spad_kib": 4, "acc_kib": 4, "mem_bytes_per_cycle": 8,
            "mem_latency": 4}
    sweep = Sweep(axes={"dataflow": ["os", "ws"]}, base=base,
                  workloads=[{"model": "bert-base", "seq": 16}], validate=1)
    result = sweep.run(jobs=1, out=tmp_path)
    checked = [r for r in result.rows if "rtl_op" in r]
    assert len(checked) == 1 and not checked[0]["error"]
    r = checked[0]
    assert r["rtl_op"] in ("layer.attn.qk", "layer.attn.av") and r["rtl_bit_exact"]
    assert r["rtl_cycles"] == r["rtl_predicted"]
    assert "rtl_cycles" in (tmp_path / "sweep.csv").read_text().splitlines()[0]


def _group_alive(pgid: int) -> list[int]:
    """Processes still in process group ``pgid`` (from /proc)."""
    import os

    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_an_interrupted_sweep_stops_its_workers_keeps_what_finished_and_exits_130(tmp_path,
                                                                                    signum):
    """A real signal to the whole process group, as Ctrl-C sends it (or SIGTERM as a job
    scheduler does): workers gone within seconds, every finished point kept, one line, 130."""
    import os
    import re
    import signal
    import subprocess
    import time

    spec = tmp_path / "spec.toml"
    spec.write_text('name = "slow"\nbase = "tiny"\nworkloads = ["bert-base"]\n[axes]\n'
                    'rows = [2, 3, 4, 5]\ncols = [2, 3, 4, 5]\ndataflow = ["os", "ws"]\n')
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tessera.cli", "sweep", str(spec), "-o", str(out), "--jobs",
           "2", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((out / "cache").glob("*.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no point finished in two minutes"
        time.sleep(0.05)
    t0 = time.monotonic()
    os.killpg(proc.pid, getattr(signal, signum))
    _, err = proc.communicate(timeout=60)
    stopped = time.monotonic() - t0
    err = err.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert stopped < 5, f"took {stopped:.1f} s to stop"
    # killed workers may take a moment to leave the process table once their parent is gone
    gone_by = time.monotonic() + 3
    while _group_alive(proc.pid) and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert not _group_alive(proc.pid), "worker processes are still running"
    done = int(re.search(r"interrupted: (\d+) of 32 points done", err).group(1))
    cached = len(list((out / "cache").glob("*.json")))
    assert done == cached and 0 < done < 32
    # the rerun computes only what is left
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({32 - done} computed, {done} from the cache)" in rerun.stdout
