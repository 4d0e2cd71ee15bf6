
"""The mapper: workloads, the analytic GEMM cost against the tiler's cycle model, energy, CLI."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mapping.energy import EnergyTable, paper_counts
from mapping.gemm import SHORTLIST, _candidates, _estimate, plan_gemm, search_blocking
from mapping.gemm_cost import gemm_cost
from mapping.mapper import map_gemm, map_workload
from mapping.report import to_csv, to_json
from mapping.workloads import (
    MODELS,
    WorkloadError,
    build,
    from_scalesim_csv,
    from_torch,
)
from rtl.config import ConfigError, config_from_args, preset
from tessera.map_cmd import add_map_parser


def _random_cases(n: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        name = rng.choice(["tiny", "edge", "default", "large"])
        cfg = preset(name).replace(dataflow=rng.choice(["os", "ws"]),
                                   mem_bytes_per_cycle=rng.choice([2, 4, 8, 16, 32]),
                                   mem_latency=rng.choice([0, 1, 8, 32]))
        # keep plan_gemm (which builds every instruction) quick on the small arrays
        top = 160 if name == "tiny" else 320
        m, k, n_ = (rng.randint(1, top) for _ in range(3))
        cases.append((cfg, m, k, n_, rng.random() < 0.5))
    return cases


@pytest.mark.parametrize("cfg, m, k, n, requant", _random_cases(24, seed=4))
def test_analytic_gemm_cost_matches_the_tilers_cycle_model(cfg, m, k, n, requant):
    # gemm_cost replays group by group and skips repeating runs of groups; plan_gemm builds
    # the whole program and replays every instruction: the cycles must be equal
    plan = plan_gemm(cfg, m, k, n, requant=requant)
    cost = gemm_cost(cfg, m, k, n, requant=requant)
    assert (cost.cycles, cost.blocking) == (plan.estimate, (plan.mb, plan.nb, plan.kc))
    assert cost.instructions == len(plan.program)
    assert cost.compute_cycles == program_compute_beats(plan)


@pytest.mark.parametrize("cfg, m, k, n, requant", _random_cases(8, seed=11))
def test_search_finds_the_fastest_blocking_of_its_shortlist(cfg, m, k, n, requant):
    # the best-first search drops candidates early; it must pick what replaying every
    # shortlisted blocking in full would (fewest cycles, then fewest instructions)
    choice = search_blocking(cfg, m, k, n, requant)
    options = sorted((_estimate(cfg, m, k, n, *b), b) for b in _candidates(cfg, m, k, n))
    full = []
    for i, (_, b) in enumerate(options[:SHORTLIST]):
        plan = plan_gemm(cfg, m, k, n, requant=requant, blocking=b)
        full.append((plan.estimate, len(plan.program), i, b))
    cycles, _, _, blocking = min(full)
    assert (choice.cycles, choice.blocking) == (cycles, blocking)
    assert choice.explain(cfg).startswith(f"mb={blocking[0]} ")


def program_compute_beats(plan) -> int:
    return sum(i.args["extent"] for i in plan.program if i.op.name == "COMPUTE")


def test_analytic_cost_follows_queue_depth_stalls():
    # ws chunks with more loads than a queue holds: the dispatcher stalls (a 23% effect)
    cfg = preset("default").replace(dataflow="ws", mem_bytes_per_cycle=8, mem_latency=1)
    plan = plan_gemm(cfg, 276, 277, 170, requant=True)
    assert gemm_cost(cfg, 276, 277, 170, requant=True).cycles == plan.estimate


@pytest.mark.parametrize("name", ["tiny", "edge", "default", "large"])
@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_ideal_memory_bound(name, dataflow):
    cfg = preset(name).replace(dataflow=dataflow)
    rng = random.Random(7)
    for m, k, n in [(rng.randint(1, 700), rng.randint(1, 700), rng.randint(1, 700))
                    for _ in range(10)] + [(1, 1, 1), (cfg.rows, cfg.rows, cfg.cols)]:
        ideal = gemm_cost(cfg, m, k, n, ideal_memory=True)
        bound = math.ceil(m * k * n / cfg.pes)
        assert ideal.cycles >= bound
        assert ideal.cycles <= gemm_cost(cfg, m, k, n).cycles
    for m, k, n in [(1024, 1024, 1024), (512, 768, 3072), (2048, 1024, 4096)]:
        ideal = gemm_cost(cfg, m, k, n, ideal_memory=True)
        bound = math.ceil(m * k * n / cfg.pes)
        assert bound <= ideal.cycles <= 1.05 * bound, (m, k, n, ideal.cycles / bound)


def test_gemm_traffic_counts_every_byte_once_per_reuse():
    cfg = preset("default")
    c = gemm_cost(cfg, 256, 256, 256)
    mb, nb, _ = c.blocking
    # A is read once per group of N tiles, B once per group of M tiles, C written once (int32)
    assert c.dram_read_bytes == 256 * 256 * (256 // 16 // nb) + 256 * 256 * (256 // 16 // mb)
    assert c.dram_write_bytes == 256 * 256 * 4


# -- workloads ------------------------------------------------------------------------------------

def _vit_macs(dim: int, depth: int, image: int = 224, patch: int = 16) -> int:
    t = (image // patch) ** 2 + 1
    per_layer = t * (4 * dim * dim + 2 * dim * 4 * dim) + 2 * t * t * dim
    return depth * per_layer + (t - 1) * 3 * patch * patch * dim + dim * 1000


def test_deit_tiny_macs_by_hand():
    w = build("deit-tiny")
    assert w.macs == _vit_macs(192, 12)
    assert 1.2e9 < w.macs < 1.35e9  # DeiT-Ti: 1.3 G (multiply-adds) at 224x224


@pytest.mark.parametrize("model, dim, depth, published", [
    ("deit-small", 384, 12, 4.6e9), ("vit-b16", 768, 12, 17.6e9)])
def test_vit_macs_by_hand(model, dim, depth, published):
    w = build(model)
    assert w.macs == _vit_macs(dim, depth)
    assert abs(w.macs - published) / published < 0.02


@pytest.mark.parametrize("model, layers, dim, heads, ffn", [
    ("bert-base", 12, 768, 12, 3072), ("bert-large", 24, 1024, 16, 4096)])
def test_bert_linear_macs_are_tokens_times_weights(model, layers, dim, heads, ffn):
    layer = nn.TransformerEncoderLayer(dim, heads, ffn)
    weights = sum(p.numel() for p in layer.parameters() if p.dim() == 2)
    seq = 96
    w = build(model, seq=seq, batch=2)
    linear = sum(op.macs for op in w.ops if op.kind == "linear")
    assert linear == 2 * seq * layers * weights
    attn = sum(op.macs for op in w.ops if op.kind == "matmul")
    assert attn == 2 * layers * 2 * seq * seq * dim


@pytest.mark.parametrize("model, published", [
    ("pvtv2-b0", 0.57e9), ("pvtv2-b1", 2.1e9), ("pvtv2-b2", 4.0e9), ("swin-t", 4.5e9)])
def test_pyramid_models_match_published_complexity(model, published):
    assert abs(build(model).macs - published) / published < 0.03


@pytest.mark.parametrize("model, muls, adds, energy", [
    # ziplab/EcoFormer pvt/README.md, "Results and Models" (B muls, B adds, B pJ)
    ("pvtv2-b0", 0.54, 0.56, 2.5), ("pvtv2-b1", 2.03, 2.09, 9.4), ("pvtv2-b2", 3.85, 3.97, 17.8)])
def test_paper_counting_reproduces_ecoformers_pvtv2_table(model, muls, adds, energy):
    r = map_workload(build(model, attention="ecoformer"), preset("default"), count="paper")
    t = r.totals()
    assert round(t["muls"] / 1e9, 2) == pytest.approx(muls, abs=0.011)
    assert round(t["adds"] / 1e9, 2) == pytest.approx(adds, abs=0.011)
    assert round(t["energy_pj"] / 1e9, 1) == pytest.approx(energy, abs=0.051)
    assert 0 < t["hardware_energy_pj"]


def test_paper_counting_of_softmax_attention_is_macs_plus_scale():
    w = build("deit-tiny")
    qk = next(op for op in w.ops if op.name.endswith("attn.qk"))
    scale = next(op for op in w.ops if op.name.endswith("attn.scale"))
    assert paper_counts(qk) == (qk.macs, qk.macs)
    assert paper_counts(scale) == (3 * 12 * 197 * 197, 0)


def test_ecoformer_replaces_quadratic_attention():
    soft = build("deit-small", attention="softmax")
    eco = build("deit-small", attention="ecoformer")
    assert not any(op.kind == "softmax" for op in eco.ops)
    assert any(op.kind == "sign_matmul" for op in eco.ops)
    quadratic = [op for op in soft.ops if op.kind == "matmul"]
    assert sum(op.macs for op in quadratic) > 2 * 12 * 197 * 197 * 384 - 1


@pytest.mark.parametrize("kw, message", [
    ({"name": "resnet50"}, "unknown model 'resnet50'; known models: vit-b16, deit-tiny"),
    ({"name": "deit-tiny", "seq": 128}, "deit-tiny takes --image-size, not --seq"),
    ({"name": "bert-base", "image_size": 224}, "bert-base takes --seq"),
    ({"name": "vit-b16", "image_size": 200}, "not a multiple of the 16-pixel patch"),
    ({"name": "bert-base", "seq": 0}, "seq must be an integer >= 1, not 0"),
    ({"name": "gpt2", "attention": "flash"}, "attention must be one of softmax, msa, ecoformer"),
    ({"name": "swin-t", "batch": -1}, "batch must be an integer >= 1"),
])
def test_bad_workloads_are_refused(kw, message):
    with pytest.raises(WorkloadError) as e:
        build(kw.pop("name"), **kw)
    assert message in str(e.value)


def test_every_preset_model_maps():
    cfg = preset("edge")
    for name in MODELS:
        for attention in ("softmax", "ecoformer"):
            r = map_workload(build(name, attention=attention), cfg)
            t = r.totals()
            assert t["cycles"] > 0 and 0 < t["utilization"] <= 1
            assert all(o.cycles >= o.compute_cycles >= 0 for o in r.ops)


def test_scalesim_csv(tmp_path):
    f = tmp_path / "topo.csv"
    f.write_text("Layer,M,N,K,\nfc1,64,128,256,\nfc2,64,10,128,\n")
    w = from_scalesim_csv(f)
    assert [(op.m, op.k, op.n) for op in w.ops] == [(64, 256, 128), (64, 128, 10)]
    bad = tmp_path / "bad.csv"
    bad.write_text("Layer,M,N,K\nfc1,64,x,256\n")
    with pytest.raises(WorkloadError, match="bad.csv:2"):
        from_scalesim_csv(bad)
    with pytest.raises(WorkloadError, match="header must start with Layer,M,N,K"):
        (tmp_path / "h.csv").write_text("name,a,b\n")
        from_scalesim_csv(tmp_path / "h.csv")


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 4, stride=4)
        self.norm = nn.LayerNorm(32)
        self.qkv = nn.Linear(32, 96)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).flatten(2).transpose(1, 2)          # (1, 16, 32)
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        a = F.softmax(q @ k.transpose(-2, -1), dim=-1)
        return x + self.act(torch.matmul(a, v))


def test_torch_fx_module_is_traced_into_ops():
    w = from_torch(_Block(), torch.randn(1, 3, 16, 16))
    got = {(op.kind, op.shape) for op in w.ops}
    assert ("conv", "16x48x32") in got
    assert ("linear", "16x32x96") in got
    assert ("matmul", "16x32x16") in got and ("matmul", "16x16x32") in got
    assert {"softmax", "layernorm", "gelu", "add"} <= {op.kind for op in w.ops}
    assert map_workload(w, preset("tiny")).cycles > 0


class _Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(self.act(self.fc(x)), dim=-1).values


def test_torch_fx_names_every_op_it_cannot_map():
    with pytest.raises(WorkloadError) as e:
        from_torch(_Unsupported(), torch.randn(2, 8))
    assert "cannot map 2 op(s)" in str(e.value)
    assert "act (SiLU)" in str(e.value) and "sort" in str(e.value)


# -- energy ---------------------------------------------------------------------------------------

def test_energy_table_from_toml(tmp_path):
    f = tmp_path / "e.toml"
    f.write_text("[energy]\ndram_byte_pj = 0.0\nmac_pj = 1.0\n")
    table = EnergyTable.from_toml(f)
    assert table.dram_byte_pj == 0.0 and table.add_pj == 0.1 and table.source == str(f)
    g = map_gemm(preset("default"), 64, 64, 64, energy=table)
    assert g["energy_pj"] == pytest.approx(
        64**3 + 1.25 * (g["onchip_bytes"]))
    (tmp_path / "x.toml").write_text("dram_pj = 3\n")
    with pytest.raises(ConfigError, match="unknown energy field"):
        EnergyTable.from_toml(tmp_path / "x.toml")
    with pytest.raises(ConfigError, match="non-negative"):
        EnergyTable(mac_pj=-1)


# -- speed ----------------------------------------------------------------------------------------

def test_mapping_is_fast():
    # targets are 50 ms and 200 ms (benchmarks/mapping_speed.py); a loose bound here
    gemm_cost.cache_clear()
    t = time.perf_counter()
    map_workload(build("deit-tiny"), preset("default"))
    assert time.perf_counter() - t < 0.5
    gemm_cost.cache_clear()
    t = time.perf_counter()
    map_workload(build("bert-large"), preset("default"))
    assert time.perf_counter() - t < 1.0


# -- command line ---------------------------------------------------------------------------------

def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tessera")
    add_map_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["map", *argv])
    try:
        return args.func(args, config_from_args(args))
    except ConfigError:
        return 2


def test_cli_gemm_json(capsys):
    assert _run(["gemm", "128", "768", "768", "--preset", "default", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("cycles", "compute_cycles", "stall_cycles", "macs", "utilization",
                "dram_bytes", "energy_pj"):
        assert key in out
    assert out["cycles"] == plan_gemm(preset("default"), 128, 768, 768).estimate
    assert _run(["gemm", "128", "768", "768", "--ideal-memory", "--json"]) == 0
    ideal = json.loads(capsys.readouterr().out)
    assert ideal["ideal_cycles"] <= ideal["cycles"] < out["cycles"]


def test_cli_model_paper_json_and_table(capsys):
    assert _run(["pvtv2-b0", "--attention", "ecoformer", "--count", "paper", "--json"]) == 0
    t = json.loads(capsys.readouterr().out)["totals"]
    assert {"muls", "adds", "energy_pj", "hardware_energy_pj"} <= set(t)
    assert _run(["deit-tiny", "--preset", "16x16"]) == 0
    out = capsys.readouterr().out
    assert "blocks.qkv" in out and "total" in out and "stall cycles" in out


def test_cli_csv_and_topology(tmp_path, capsys):
    f = tmp_path / "t.csv"
    f.write_text("Layer,M,N,K\nconv1,3136,64,147\n")
    assert _run([str(f), "--preset", "edge", "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("name,kind,shape")
    assert lines[1].startswith("conv1,linear,3136x147x64")
    assert len(lines) == 2   # one row per op, no totals inside the data


@pytest.mark.parametrize("argv, message", [
    (["nope"], "unknown model 'nope'; known models: vit-b16"),
    (["gemm", "3", "0", "4"], "K must be a positive integer, not 0"),
    (["gemm", "3", "4"], "needs three dimensions"),
    (["gemm", "70000", "70000", "70000"], "exceed the 32-bit address space"),
    (["gemm", "64", "64", "64", "--spad-kib", "1", "--rows", "64"], "cannot hold one 64x16"),
    (["deit-tiny", "--seq", "5"], "takes --image-size"),
    (["bert-base", "--energy-table", "/nonexistent.toml"], "does not exist"),
])
def test_cli_bad_input_exits_2(argv, message, capsys):
    assert _run(argv) == 2
    assert message in capsys.readouterr().err


def test_csv_report_is_one_clean_row_per_op_and_the_json_has_the_totals():
    result = map_workload(build("bert-base", seq=32), preset("tiny"))
    rows = list(csv.DictReader(io.StringIO(to_csv(result))))
    assert [r["name"] for r in rows] == [o.name for o in result.ops]
    assert sum(int(r["cycles"]) for r in rows) == json.loads(to_json(result))["totals"]["cycles"]
    # floats as what they are: no representation noise (12 significant digits at most)
    for r in rows:
        for key in ("energy_pj", "utilization"):
            assert len(r[key].replace(".", "").replace("-", "").lstrip("0")) <= 12, r[key]
