"""The programmable engine under Verilator: GEMMs of any shape bit-exact, stalls, bad programs,
and the mapper's cycle model against the cycles the RTL takes. Marker ``sim``."""

import random

import pytest

from mapping.program import instruction_cycles, program_cycles
from rtl import isa
from rtl.config import EngineConfig
from rtl.isa import Op, Spad
from sim.cosim import Job, cosim_gemms, run_programs

pytestmark = pytest.mark.sim


def small(rows, cols, dataflow, **kw):
    base = dict(spad_kib=4, acc_kib=4, mem_bytes_per_cycle=8, mem_latency=4)
    base.update(kw)
    return EngineConfig(rows=rows, cols=cols, dataflow=dataflow, **base)


CONFIGS = [
    small(3, 5, "os"), small(3, 5, "ws"),
    small(4, 4, "os", mem_bytes_per_cycle=4, mem_latency=9),
    small(4, 4, "ws", mem_bytes_per_cycle=16, mem_latency=1),
    small(1, 1, "os", mem_bytes_per_cycle=2), small(2, 7, "ws", mem_bytes_per_cycle=2),
    # odd shapes and ports: a row, a column, a one-byte port and a three-byte one
    small(1, 6, "ws", mem_bytes_per_cycle=1, mem_latency=0),
    small(5, 1, "os", mem_bytes_per_cycle=3, mem_latency=2),
]


def ids(cfg):
    return f"{cfg.rows}x{cfg.cols}-{cfg.dataflow}-w{cfg.mem_bytes_per_cycle}"


@pytest.mark.parametrize("cfg", CONFIGS, ids=ids)
def test_gemms_of_any_shape_are_exact(cfg):
    r, c = cfg.rows, cfg.cols
    cases = [
        (1, 1, 1, 0, False, 0),                      # the smallest GEMM
        (max(1, r - 1), 2, max(1, c - 1), 1, True, 0),  # smaller than the array
        (11, 17, 13, 2, False, 0),                   # primes
        (2 * r, 3 * r, 2 * c, 3, True, 0),          # exact multiples of the array
        (37, 53, 29, 4, True, 0),                    # many partial tiles, several chunks
        (13, 40, 7, 5, False, 128),                  # memory refuses half the requests
        (9, 31, 12, 6, True, 200),                   # ... or most of them
    ]
    rng = random.Random(f"{ids(cfg)}")
    cases += [(rng.randint(1, 40), rng.randint(1, 70), rng.randint(1, 40), 100 + i,
               rng.random() < 0.5, rng.choice([0, 0, 64, 128, 200])) for i in range(6)]
    results = cosim_gemms(cfg, cases)
    for case, res in zip(cases, results, strict=True):
        assert res["error"] is None, (case, res["error"])
        assert res["bit_exact"], f"{case}: {res['mismatches']} of {res['elements']} differ"
        # Nothing lost or duplicated: the array took exactly the beats the program asked for.
        assert res["counters"]["compute"] == res["array_beats"]
        # The whole-program model (dispatcher, queues, tokens, the array and the memory port
        # loads and stores share, with the memory's stall pattern) predicts the RTL's cycles
        # exactly, with memory stalls too.
        assert res["predicted_cycles"] == res["cycles"], res


def _single(cfg):
    return [
        isa.load(Spad.A, 0, 1, cfg.rows, 3, cfg.rows),
        isa.load(Spad.B, 2, 9, cfg.cols, 5, 11),
        isa.load(Spad.Q, 0, 4, 4 * cfg.cols, 8, 4 * cfg.cols),
        isa.compute(0, 0, 0, 1, False),
        isa.compute(0, 0, 0, cfg.rows + 2, True),
        isa.compute(3, 1, 2, 2 * cfg.rows + 5, False),
        isa.store(0, 1, cfg.cols, 0x100, 64, False),
        isa.store(0, 3, 1, 0x100, 64, False),
        isa.store(0, 5, cfg.cols, 0x100, 64, True),
        isa.config(zero_point=3),
    ]


@pytest.mark.parametrize("cfg", CONFIGS[:4], ids=ids)
def test_each_instruction_takes_the_cycles_the_mapper_predicts(cfg):
    image = bytes((i * 37) % 256 for i in range(4096))
    program = _single(cfg)
    runs = run_programs(cfg, [Job(isa.assemble([insn], cfg), image, [(0, 4)])
                              for insn in program])
    for insn, run in zip(program, runs, strict=True):
        assert run.error is None
        assert run.cycles == instruction_cycles(cfg, insn), str(insn)


def test_illegal_instructions_are_flagged_not_hung():
    cfg = CONFIGS[0]
    g = isa.geometry(cfg)
    good = isa.load(Spad.A, 0, 1, 3, 0, 3)
    raw = {
        "OPCODE": 5 | (1 << 40),  # opcode 5 does not exist
        "OVERRUN": isa._pack(isa.Insn(Op.LOAD, {**good.args, "row": g.a_rows - 1, "rows": 2})),
        "EXTENT": isa._pack(isa.compute(0, 0, 0, 0, False)),
        "SPAD": isa._pack(isa.Insn(Op.LOAD, {**good.args, "spad": 3})),
    }
    jobs = [Job([isa.encode(good, cfg), word, isa.encode(good, cfg)], bytes(64), [(0, 4)],
                timeout_cycles=2000) for word in raw.values()]
    runs = run_programs(cfg, jobs)
    for (code, _), run in zip(raw.items(), runs, strict=True):
        assert run.error == f"illegal instruction ({code})"
        assert run.counters["insns"] == 2  # the good one, then the bad one; nothing after it
    # and a program whose tokens never arrive is caught by the mapper before it runs
    with pytest.raises(ValueError, match="deadlocks"):
        program_cycles(cfg, [isa.compute(0, 0, 0, 1, False, "pop_prev")])


@pytest.mark.parametrize("model, op, extra", [
    ("bert-base", "layer.attn.qk", ["--seq", "16"]),                        # a matmul
    ("deit-tiny", "blocks.attn.hg", ["--attention", "ecoformer", "--image-size", "32"]),  # codes
])
def test_a_models_op_runs_on_the_rtl_as_the_mapper_schedules_it(model, op, extra, capsys):
    import json

    from tessera.cli import main

    cfg = CONFIGS[0]
    flags = ["--rows", str(cfg.rows), "--cols", str(cfg.cols), "--dataflow", cfg.dataflow,
             "--spad-kib", str(cfg.spad_kib), "--acc-kib", str(cfg.acc_kib),
             "--mem-bytes-per-cycle", str(cfg.mem_bytes_per_cycle),
             "--mem-latency", str(cfg.mem_latency)]
    assert main(["cosim", "op", model, op, *extra, *flags, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bit_exact"] and out["op"] == op
    # the cycles the mapper puts in its table for one instance are the RTL's
    assert out["mapper_cycles"] == out["cycles"] == out["predicted_cycles"]
