"""The native simulator (a plain Verilator C++ main) against cocotb's: the same harness, so
every output, cycle and counter must agree, also for memory stalls, requantized results, a bad
instruction and a program that never finishes. Marker ``sim``."""

import pytest

from mapping.gemm import plan_gemm
from mapping.operands import golden_result, make_operands, memory_image, read_result
from mapping.program import program_cycles
from rtl import isa
from rtl.config import EngineConfig
from rtl.isa import Spad
from sim.build import build
from sim.cosim import Job, cosim_gemms, run_programs
from sim.fuzz import MAX_CASE_BYTES
from sim.native import run_native

pytestmark = pytest.mark.sim

# the small engine of tests/test_engine_sim.py: its Verilator builds are shared
CFG = EngineConfig(rows=3, cols=5, dataflow="os", spad_kib=4, acc_kib=4, mem_bytes_per_cycle=8,
                   mem_latency=4)


@pytest.mark.xdist_group("native-vs-cocotb")
def test_native_and_cocotb_agree_on_every_output_cycle_and_counter():
    cases = [(7, 13, 9, 1, False, 0), (5, 20, 11, 2, True, 0), (9, 8, 6, 3, True, 90),
             (1, 1, 1, 4, False, 200)]
    native = cosim_gemms(CFG, cases, backend="native")
    cocotb = cosim_gemms(CFG, cases, backend="cocotb")
    for a, b in zip(native, cocotb, strict=True):
        assert a["bit_exact"] and b["bit_exact"]
        for key in ("cycles", "predicted_cycles", "counters", "mem_read_beats",
                    "mem_write_beats", "instructions", "error"):
            assert a[key] == b[key], key
        assert a["cycles"] == a["predicted_cycles"]


@pytest.mark.xdist_group("native-vs-cocotb")
def test_native_and_cocotb_stop_at_the_same_illegal_instruction():
    g = isa.geometry(CFG)
    good = isa.load(Spad.A, 0, 1, 3, 0, 3)
    bad = isa._pack(isa.Insn(isa.Op.LOAD, {**good.args, "row": g.a_rows - 1, "rows": 2}))
    job = Job([isa.encode(good, CFG), bad, isa.encode(good, CFG)], bytes(range(64)), [(0, 16)],
              timeout_cycles=2000)
    native, = run_programs(CFG, [job], backend="native")
    cocotb, = run_programs(CFG, [job], backend="cocotb")
    assert native.error == cocotb.error == "illegal instruction (OVERRUN)"
    assert (native.cycles, native.counters, native.regions) == \
        (cocotb.cycles, cocotb.counters, cocotb.regions)


def test_a_program_that_never_finishes_is_reported_with_its_cycle_budget():
    # a compute waiting on a token no load will ever give
    words = [isa.encode(isa.compute(0, 0, 0, 1, False, "pop_prev"), CFG)]
    with pytest.raises(RuntimeError, match=r"did not finish program 0 within 500 cycles"):
        run_programs(CFG, [Job(words, bytes(64), [(0, 4)], timeout_cycles=500)])


def test_an_unknown_backend_is_named():
    with pytest.raises(ValueError, match="backend is one of native, cocotb"):
        run_programs(CFG, [Job([], bytes(8), [])], backend="icarus")


def test_progress_lines_report_the_cycles_so_far_and_the_prediction(tmp_path):
    m, k, n = 30, 2048, 50          # long enough for several 64k-cycle checkpoints
    ops = make_operands(m, k, n, seed=5, requant=False)
    plan = plan_gemm(CFG, m, k, n, requant=False, zero_point=ops.zero_point)
    predicted = program_cycles(CFG, plan.program).cycles
    assert predicted > 3 * 65536
    job = Job(isa.assemble(plan.program, CFG), memory_image(plan, ops),
              [(plan.layout.c_addr, m * plan.layout.ldc)], timeout_cycles=2 * predicted,
              predicted_cycles=predicted)
    # the build tests/test_fuzz.py uses
    sim = build(CFG, kind="native", depth=8192,
                mem_words=MAX_CASE_BYTES // CFG.mem_bytes_per_cycle)
    seen = []
    out, = run_native(sim, [job], tmp_path, report_ms=0,
                      progress=lambda *report: seen.append(report))
    assert out["finished"] and out["error"] is None and out["cycles"] == predicted
    assert seen == [(0, c, predicted) for c in range(65536, out["cycles"], 65536)]
    got = read_result(plan, out["regions"][0])
    assert (got == golden_result(CFG, ops, False)).all()
