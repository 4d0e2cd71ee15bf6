"""The softmax stage on the engine: a GEMM whose rows leave through Shiftmax, on the generated
RTL under Verilator, every element against ``golden.nonlinear.shiftmax_x0`` of the requantized
logits and every cycle against the model. The engine-level cases carry the ``sim`` marker."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from golden import quantize_multiplier, requantize
from golden.nonlinear import shiftmax_x0
from mapping.gemm import PlanError, plan_gemm
from mapping.operands import GemmOperands, memory_image, read_result
from mapping.program import program_cycles
from rtl import isa
from rtl.config import EngineConfig
from rtl.engine import EngineTiming
from rtl.isa import AsmError, ErrorCode
from rtl.softmax import SoftmaxStage
from sim.cosim import Job, cosim_gemms, run_programs

# the small engine of tests/test_engine_sim.py (cols = 5: rows of logits are never a whole
# number of segments by accident); its Verilator builds are shared
OS = EngineConfig(rows=3, cols=5, dataflow="os", spad_kib=4, acc_kib=4, mem_bytes_per_cycle=8,
                  mem_latency=4)
WS = dataclasses.replace(OS, dataflow="ws")


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [OS, WS], ids=["os", "ws"])
def test_softmax_gemms_are_bit_exact_in_the_predicted_cycles(cfg):
    # (m, k, n, seed, requant, stall, x0): rows of 1, of one segment, one past it, of several
    # with a partial last; more rows than the array; a stalling memory
    cases = [(4, 9, 1, 1, True, 0, -1), (3, 16, 5, 2, True, 0, -12), (7, 8, 6, 3, True, 0, -5),
             (5, 24, 14, 4, True, 40, -20), (8, 5, 23, 5, True, 0, -300),
             (2, 40, 11, 6, True, 200, -7),
             # causal: square, more keys than queries, a row of one query
             (11, 16, 11, 7, True, 0, -9, True), (7, 8, 17, 8, True, 90, -30, True),
             (1, 8, 12, 9, True, 0, -4, True)]
    for r in cosim_gemms(cfg, cases):
        assert r["bit_exact"], r
        assert r["cycles"] == r["predicted_cycles"], r


def _logit_program(cfg: EngineConfig, logits: torch.Tensor, x0: int):
    """A softmax GEMM whose requantized logits are ``logits`` exactly: A = I, B = logits,
    multiplier 1."""
    m, n = logits.shape
    mult, shift = quantize_multiplier(1.0)
    ops = GemmOperands(torch.eye(m, dtype=torch.int64), logits.to(torch.int64),
                       bias=torch.zeros(n, dtype=torch.int64),
                       multiplier=torch.full((n,), mult, dtype=torch.int64),
                       shift=torch.full((n,), shift, dtype=torch.int64))
    plan = plan_gemm(cfg, m, m, n, requant=True, softmax_x0=x0)
    acc = ops.a @ ops.b
    assert torch.equal(requantize(acc, ops.multiplier, ops.shift, bias=ops.bias), logits)
    return plan, ops


@pytest.mark.sim
def test_softmax_extremes_on_the_engine():
    gen = torch.Generator().manual_seed(9)
    n = 12
    rows = [torch.zeros(n), torch.full((n,), -128.0), torch.full((n,), 127.0),
            torch.cat([torch.full((n - 1,), -128.0), torch.tensor([127.0])]),
            torch.cat([torch.tensor([127.0]), torch.full((n - 1,), 126.0)]),
            torch.randint(-128, 128, (n,), generator=gen).float(),
            torch.randint(-3, 3, (n,), generator=gen).float()]
    logits = torch.stack(rows).to(torch.int64)
    jobs, expected = [], []
    for x0 in (-1, -40, isa.X0_MIN):
        plan, ops = _logit_program(OS, logits, x0)
        words = isa.assemble(plan.program, OS)
        predicted = program_cycles(OS, plan.program).cycles
        jobs.append((plan, predicted, Job(words, memory_image(plan, ops),
                                          [(plan.layout.c_addr, logits.shape[0] * n)],
                                          timeout_cycles=2 * predicted + 1000)))
        expected.append(shiftmax_x0(logits, x0))
    runs = run_programs(OS, [j[2] for j in jobs])
    for (plan, predicted, _), run, want in zip(jobs, runs, expected, strict=True):
        assert run.error is None
        got = read_result(plan, run.regions[0])
        assert torch.equal(got, want), (got, want)
        assert run.cycles == predicted
    # the extremes mean what they should: uniform rows; one winner that takes everything
    # when the others are far below it (x0 = -1: logits at scale 1)
    for want in expected:
        assert len(set(want[0].tolist())) == 1 and len(set(want[1].tolist())) == 1
        assert int(want.min()) >= 0 and int(want.max()) <= 127
    assert int(expected[0][3, -1]) == 127 and int(expected[0][3, :-1].sum()) == 0


def test_softmax_store_timing_counts_its_three_passes():
    for cfg in (OS, WS):
        t = EngineTiming(cfg).store
        plain = isa.store(0, 3, 5, 0, 64, True, segs=4, seg_stride=3)
        soft = isa.store(0, 3, 5, 0, 64, True, segs=4, seg_stride=3, softmax=True)
        # two passes of 3 rows x 4 segments read ahead, the gap, and the stage's latency
        assert t.request_delay(soft) - t.request_delay(plain) == \
            2 * 12 + SoftmaxStage.gap(cfg) + SoftmaxStage.latency_of(cfg)
        assert t.beats(soft) == t.beats(plain) == 3 * 4
        assert SoftmaxStage.latency_of(cfg) == SoftmaxStage.FRONT + 3 + \
            SoftmaxStage.exp_latency() + SoftmaxStage.BACK   # 5 lanes: a tree of 3 levels


@pytest.mark.parametrize("insn, code, message", [
    (isa.store(0, 1, 5, 0, 5, False, softmax=True), ErrorCode.MODE, "requant must be set"),
    (isa.store(0, 4, 5, 0, 5, True, softmax=True), ErrorCode.MODE, "at most 3 rows"),
    (isa.store(0, 1, 5, 0, 5, True, causal=True), ErrorCode.MODE, "softmax must be set"),
    (isa.config_softmax(0), ErrorCode.RANGE, "outside"),
    (isa.config_softmax(isa.X0_MIN - 1), ErrorCode.RANGE, "outside"),
    (isa.store(0, 3, 5, 0, 9, True, segs=2, seg_stride=3), ErrorCode.STRIDE, "shorter"),
    (isa.store(0, 3, 5, 0, 64, True, segs=3, seg_stride=200), ErrorCode.OVERRUN, "overrun"),
])
def test_bad_softmax_instructions_are_named(insn, code, message):
    with pytest.raises(AsmError, match=message) as err:
        isa.check(insn, OS)
    assert err.value.code == code


@pytest.mark.parametrize("cfg", [OS, WS, dataclasses.replace(OS, rows=4, cols=4)],
                         ids=["os", "ws", "4x4"])
def test_the_piecewise_model_of_a_softmax_gemm_equals_its_whole_program(cfg):
    # the blocking search costs programs piece by piece; plan_gemm's program replays whole
    from mapping.gemm import Schedule

    for m, k, n in [(16, 64, 16), (7, 9, 23), (30, 5, 11), (3, 200, 4)]:
        plan = plan_gemm(cfg, m, k, n, requant=True, softmax_x0=-9)
        assert Schedule(plan).timing().cycles == program_cycles(cfg, plan.program).cycles \
            == plan.estimate


def test_a_softmax_gemm_needs_whole_rows_in_the_accumulator():
    with pytest.raises(PlanError, match="requant must be set"):
        plan_gemm(OS, 4, 4, 4, softmax_x0=-3)
    with pytest.raises(PlanError, match="x0 must be"):
        plan_gemm(OS, 4, 4, 4, requant=True, softmax_x0=0)
    # 4 KiB of accumulator, 5 int32 lanes a row: 204 rows, 102 a half; 35 tiles of 3 rows do
    # not fit in it
    with pytest.raises(PlanError, match="softmax over rows of 175"):
        plan_gemm(OS, 4, 4, 175, requant=True, softmax_x0=-3)
    plan = plan_gemm(OS, 4, 4, 30, requant=True, softmax_x0=-3)
    stores = [i for i in plan.program if i.op == isa.Op.STORE]
    assert all(i.args["softmax"] and i.args["extra_segs"] == 5 for i in stores)


# -- the stage alone, in amaranth.sim -------------------------------------------------------------


def _run_stage(cfg: EngineConfig, logits: torch.Tensor, x0: int, *, gap: int,
               causal: bool = False, mask_row: int = 0):
    """Stream ``logits`` (rows x segs*cols, int8) through a SoftmaxStage as the store unit's
    reader would: three passes, ``gap`` idle cycles before the last. Returns the emitted rows
    (cycle after their entry, values) in order."""
    from amaranth.sim import Simulator

    c = cfg.cols
    rows, width = logits.shape
    segs = -(-width // c)
    last = width - (segs - 1) * c
    padded = torch.zeros(rows, segs * c, dtype=torch.int64)
    padded[:, :width] = logits
    stage = SoftmaxStage(cfg)
    insn = isa.store(0, rows, last, 0, width, True, segs=segs, seg_stride=rows, softmax=True,
                     causal=causal, mask_row=mask_row)
    out = []

    async def tb(ctx):
        ctx.set(stage.o.ready, 1)
        ctx.set(stage.settings, isa.config_layout.const(isa.config_softmax(x0).args))
        ctx.set(stage.settings_en, 1)
        await ctx.tick()
        ctx.set(stage.settings_en, 0)
        ctx.set(stage.start, 1)
        await ctx.tick()
        ctx.set(stage.start, 0)
        ctx.set(stage.cmd, isa.store_layout.const(insn.args))
        feed = []
        for p in range(SoftmaxStage.PASSES):
            if p == SoftmaxStage.PASSES - 1:
                feed += [None] * gap
            for r in range(rows):
                for t in range(segs):
                    feed.append((p, r, t))
        cycle = 0
        entered = {}
        while cycle < len(feed) + SoftmaxStage.latency_of(cfg) + 5:
            item = feed[cycle] if cycle < len(feed) else None
            ctx.set(stage.i.valid, item is not None)
            if item is not None:
                p, r, t = item
                ctx.set(stage.i.payload, {
                    "data": padded[r, t * c:(t + 1) * c].tolist(),
                    "side": {"first": p == r == t == 0, "last": item == (2, rows - 1, segs - 1),
                             "seg_first": t == 0, "seg_last": t == segs - 1, "pass_": p,
                             "emit": p == 2, "row": r, "seg": t}})
                if p == 2:
                    entered[(r, t)] = cycle
            if ctx.get(stage.o.valid):
                o = ctx.get(stage.o.payload)
                key = (int(o.side.row), int(o.side.seg))
                out.append((cycle - entered[key], key, [int(v) for v in o.data]))
            await ctx.tick()
            cycle += 1

    sim = Simulator(stage)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    got = torch.zeros(rows, segs * c, dtype=torch.int64)
    for _, (r, t), values in out:
        got[r, t * c:(t + 1) * c] = torch.tensor(values)
    return out, got[:, :width]


@pytest.mark.parametrize("rows, width, x0, causal", [
    (1, 4, -9, False),     # one row of one segment: the tightest case for the gap
    (4, 4, -9, False),     # the array's rows, one segment each
    (3, 11, -30, False),   # segments with a partial last
    (4, 10, -5, True),     # causal, the mask crossing segments
])
def test_the_stage_alone_takes_its_stated_latency_and_gap(rows, width, x0, causal):
    cfg = EngineConfig(rows=4, cols=4, spad_kib=16, acc_kib=16, mem_bytes_per_cycle=4,
                       mem_latency=8)
    gen = torch.Generator().manual_seed(rows * width)
    logits = torch.randint(-128, 128, (rows, width), generator=gen)
    out, got = _run_stage(cfg, logits, x0, gap=SoftmaxStage.gap(cfg), causal=causal,
                          mask_row=1)
    mask = None
    if causal:
        mask = torch.arange(width)[None, :] <= 1 + torch.arange(rows)[:, None]
    assert torch.equal(got, shiftmax_x0(logits, x0, mask=mask))
    segs = -(-width // cfg.cols)
    assert len(out) == rows * segs
    assert {lat for lat, _, _ in out} == {SoftmaxStage.latency_of(cfg)}


def test_a_gap_shorter_than_stated_gives_wrong_rows():
    # the stated gap is what the stage needs: one cycle less and the first row's factor is
    # not written before its first element reaches the product
    cfg = EngineConfig(rows=4, cols=4, spad_kib=16, acc_kib=16, mem_bytes_per_cycle=4,
                       mem_latency=8)
    logits = torch.randint(-128, 128, (1, 4), generator=torch.Generator().manual_seed(1))
    _, got = _run_stage(cfg, logits, -9, gap=SoftmaxStage.gap(cfg) - 1)
    assert not torch.equal(got, shiftmax_x0(logits, -9))


def _merged_stores(program: list[isa.Insn], segs: int, seg_stride: int) -> list[isa.Insn]:
    """The program with each run of ``segs`` plain STOREs of one row block (accumulator rows
    ``seg_stride`` apart, side by side in memory) as one STORE of ``segs`` segments."""
    out, run = [], []
    for insn in program + [None]:
        if insn is not None and insn.op == isa.Op.STORE:
            run.append(insn)
            if len(run) == segs:
                a = dict(run[0].args)
                a.update(cols=run[-1].args["cols"], extra_segs=segs - 1, seg_stride=seg_stride)
                out.append(isa.Insn(isa.Op.STORE, a, frozenset().union(*(s.deps for s in run))))
                run = []
            continue
        assert not run, "a row block's stores are interrupted"
        if insn is not None:
            out.append(insn)
    return out


@pytest.mark.sim
@pytest.mark.parametrize("requant", [False, True], ids=["int32", "int8"])
def test_plain_stores_of_several_segments(requant):
    """Rows of several segments without the softmax: a GEMM whose row blocks are each stored
    by one STORE, raw int32 or requantized, equal to the golden C in the predicted cycles."""
    from mapping.operands import golden_result, make_operands

    m, k, n = 7, 12, 13
    nt = -(-n // OS.cols)
    ops = make_operands(m, k, n, seed=3, requant=requant)
    if requant:   # one channel block serves every segment: one scale for all channels
        for t in (ops.multiplier, ops.shift, ops.bias):
            t.fill_(int(t[0]))
    plan = plan_gemm(OS, m, k, n, requant=requant, zero_point=ops.zero_point,
                     blocking=(1, nt, k))
    program = _merged_stores(plan.program, nt, OS.rows)
    assert sum(i.op == isa.Op.STORE for i in program) == -(-m // OS.rows)
    predicted = program_cycles(OS, program).cycles
    job = Job(isa.assemble(program, OS), memory_image(plan, ops),
              [(plan.layout.c_addr, m * plan.layout.ldc)], timeout_cycles=2 * predicted + 1000)
    run, = run_programs(OS, [job])
    assert run.error is None
    assert torch.equal(read_result(plan, run.regions[0]), golden_result(OS, ops, requant))
    assert run.cycles == predicted
