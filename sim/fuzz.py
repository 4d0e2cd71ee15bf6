"""Random programs on the RTL, every element against the golden and every cycle against the model.

A campaign draws :class:`Case` s from one seed: GEMMs of random shape (from 1x1x1 to several
tiles past the array, K up to a few thousand) scheduled by the tiler with its own blocking or
one drawn from every blocking that fits, int32 or requantized (zero point, ReLU, per-channel
parameters drawn to the ends of their ranges), operands random or at the int8 extremes, and
memory that refuses requests at random; and programs with an illegal instruction planted
among the tiler's (each kind the engine refuses), which must stop with the assembler's error
code after exactly the instructions before it, not hang. Cases run in batches, one simulator
process per batch (:func:`sim.cosim.run_programs`, native), on a process pool or a Dask
cluster. A case that fails is written as a reproducer, a small JSON file (the configuration,
the case, the program as text) that ``tessera cosim program FILE`` replays.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from golden.requant import requantize
from mapping.gemm import PlanError, check_gemm, plan_gemm
from mapping.gemm import _candidates as blockings
from mapping.operands import GemmOperands, golden_result, make_operands, memory_image, read_result
from mapping.program import program_cycles
from rtl import isa
from rtl.config import EngineConfig
from rtl.isa import AsmError, ErrorCode, Op, Spad

__all__ = ["Case", "Outcome", "draw_cases", "load_reproducer", "run_cases", "write_reproducer"]

#: the largest memory image a fuzz case may need (keeps every batch on a small build)
MAX_CASE_BYTES = 1 << 18
#: what a reproducer file says it is
FORMAT = "tessera-fuzz-case/1"
ILLEGAL = ("OPCODE", "SPAD", "OVERRUN", "EXTENT", "DEPS", "RANGE", "ALIGN", "STRIDE", "MODE")


@dataclass(frozen=True)
class Case:
    """One random program, regenerated exactly from these fields."""

    m: int
    k: int
    n: int
    seed: int
    requant: bool = False
    relu: bool = False
    stall: int = 0
    blocking: tuple[int, int, int] | None = None   # None: the tiler's own choice
    operands: str = "random"       # random | min | max | alternating | params (extreme requant)
    illegal: str | None = None     # an ErrorCode name: this instruction kind is planted ...
    illegal_at: int = 0            # ... at this index of the program
    softmax_x0: int | None = None  # C's rows leave through the softmax stage with this x0
    causal: bool = False           # ... masked causally (element j of row i only if j <= i)


@dataclass
class Outcome:
    case: Case
    ok: bool
    instructions: int = 0
    elements: int = 0
    mismatches: int = 0
    cycles: int = 0
    predicted: int | None = None
    seconds: float = 0.0
    message: str = ""
    program: list[str] = field(default_factory=list)


def _operands(case: Case) -> GemmOperands:
    ops = make_operands(case.m, case.k, case.n, seed=case.seed, requant=case.requant,
                        softmax=case.softmax_x0 is not None)
    gen = torch.Generator().manual_seed(case.seed + 1)
    if case.operands == "min":
        ops.a.fill_(-128)
        ops.b.fill_(-128)
    elif case.operands == "max":
        ops.a.fill_(127)
        ops.b.fill_(-128)
    elif case.operands == "alternating":
        ops.a.copy_(torch.where(torch.arange(ops.a.numel()).reshape(ops.a.shape) % 2 == 0,
                                -128, 127))
        ops.b.fill_(127)
    elif case.operands == "params" and case.requant:
        n = case.n
        # any int32 multiplier (both ends included), shifts over their whole domain
        # [-31, 31], bias anywhere in int32, zero point at the ends of int8
        ops.multiplier = torch.randint(-2 ** 31, 2 ** 31, (n,), generator=gen,
                                       dtype=torch.int64)
        ops.multiplier[0] = 2 ** 31 - 1
        ops.multiplier[-1] = -2 ** 31
        ops.shift = torch.randint(-31, 32, (n,), generator=gen, dtype=torch.int64)
        ops.bias = torch.randint(-2 ** 31, 2 ** 31, (n,), generator=gen, dtype=torch.int64)
        ops.zero_point = int(torch.tensor([-128, 127, 0, -1])[case.seed % 4])
    return ops


def _golden(cfg: EngineConfig, case: Case, ops: GemmOperands) -> torch.Tensor:
    if case.requant and case.relu:
        acc = golden_result(cfg, ops, False)
        return requantize(acc, ops.multiplier, ops.shift, bias=ops.bias,
                          zero_point=ops.zero_point, relu=True)
    return golden_result(cfg, ops, case.requant, case.softmax_x0, case.causal)


def _illegal_word(cfg: EngineConfig, kind: str, rng: random.Random) -> int:
    """An instruction word the engine must refuse with ErrorCode ``kind``."""
    g = isa.geometry(cfg)
    load = isa.load(Spad.A, 0, 1, 1, 0, 1)
    store = isa.store(0, 1, 1, 0, 4 * cfg.cols, False)
    if kind == "OPCODE":
        return rng.randrange(4, 8) | (rng.getrandbits(48) << 7)
    insn = {
        "SPAD": isa.Insn(Op.LOAD, {**load.args, "spad": 3}),
        "OVERRUN": rng.choice([isa.Insn(Op.LOAD, {**load.args, "row": g.a_rows - 1, "rows": 2}),
                               isa.Insn(Op.STORE, {**store.args, "acc_row": g.acc_rows - 1,
                                                   "rows": 2})]),
        "EXTENT": rng.choice([isa.compute(0, 0, 0, 0, False),
                              isa.Insn(Op.LOAD, {**load.args, "length": g.a_row_bytes + 1}),
                              isa.Insn(Op.STORE, {**store.args, "cols": cfg.cols + 1})]),
        "DEPS": isa.Insn(Op.LOAD, load.args, frozenset({"push_prev"})),
        "RANGE": rng.choice([isa.config(0, 5, -5), isa.config_softmax(isa.X0_MIN - 1),
                             isa.Insn(Op.CONFIG, {**isa.config_softmax(-1).args, "x0": 0})]),
        "ALIGN": isa.Insn(Op.LOAD, {**load.args, "spad": Spad.Q.value, "addr": 2,
                                    "length": 4}),
        "STRIDE": rng.choice([isa.Insn(Op.STORE, {**store.args, "rows": 2, "cols": cfg.cols,
                                                  "requant": 1, "stride": cfg.cols - 1}),
                              isa.Insn(Op.STORE, {**store.args, "rows": 2, "cols": 1,
                                                  "requant": 1, "extra_segs": 1,
                                                  "stride": cfg.cols})]),
        "MODE": rng.choice([isa.Insn(Op.STORE, {**store.args, "softmax": 1}),
                            isa.Insn(Op.STORE, {**store.args, "softmax": 1, "requant": 1,
                                                "rows": min(cfg.rows + 1, g.acc_rows)})]),
    }[kind]
    return isa._pack(insn)


def _expected_code(cfg: EngineConfig, word: int) -> ErrorCode:
    try:
        isa.check(isa.decode(word), cfg)
    except AsmError as e:
        return e.code
    except ValueError:
        return ErrorCode.OPCODE
    raise AssertionError(f"an illegal word the assembler accepts: {word:#x}")


def draw_cases(cfg: EngineConfig, count: int, seed: int = 0, *,
               softmax_only: bool = False) -> list[Case]:
    """``count`` cases for ``cfg``, the same ones for the same seed; ``softmax_only``: every
    one a GEMM whose rows leave through the softmax stage."""
    rng = random.Random(seed)
    r, c = cfg.rows, cfg.cols
    cases = []
    while len(cases) < count:
        def dim(tile: int) -> int:
            pick = rng.random()
            if pick < 0.2:
                return rng.randint(1, tile)
            if pick < 0.5:   # at and next to multiples of the tile
                return max(1, rng.randint(1, 4) * tile + rng.choice([-1, 0, 1]))
            return rng.randint(1, 5 * tile + 3)
        m, n = dim(r), dim(c)
        k = rng.choice([rng.randint(1, 8), rng.randint(1, 3 * max(r, c) + 5),
                        rng.randint(1, 200), rng.randint(200, 2000)])
        requant = softmax_only or rng.random() < 0.5
        # a quarter of the requantized GEMMs run a softmax over C's rows (its logits use one
        # scale; the extreme per-channel parameters do not apply)
        softmax = softmax_only or requant and rng.random() < 0.25
        x0 = rng.choice([-1, isa.X0_MIN, rng.randint(-400, -1), rng.randint(-40, -2)]) \
            if softmax else None
        case = Case(m, k, n, seed=rng.getrandbits(31), requant=requant,
                    relu=requant and not softmax and rng.random() < 0.3,
                    stall=0 if rng.random() < 0.4 else rng.randint(1, 230),
                    operands=rng.choices(["random", "min", "max", "alternating", "params"],
                                         [70, 5, 5, 5, 15 if requant and not softmax
                                          else 0])[0],
                    softmax_x0=x0, causal=softmax and rng.random() < 0.5)
        try:
            layout = check_gemm(cfg, m, k, n, requant)
        except PlanError:
            continue
        if layout.size + 2 * cfg.mem_bytes_per_cycle > MAX_CASE_BYTES or m * k * n > 2_000_000:
            continue
        if softmax and not any(True for _ in blockings(cfg, m, k, n, True)):
            continue   # whole rows of C do not fit the accumulator
        if rng.random() < 0.5:
            options = sorted(blockings(cfg, m, k, n, softmax))
            if options:
                case = replace(case, blocking=rng.choice(options))
        if rng.random() < 0.05:
            program = _plan(cfg, case)[1].program
            case = replace(case, illegal=rng.choice(ILLEGAL),
                           illegal_at=rng.randrange(len(program)))
        cases.append(case)
    return cases


def _plan(cfg: EngineConfig, case: Case):
    ops = _operands(case)
    plan = plan_gemm(cfg, case.m, case.k, case.n, requant=case.requant, relu=case.relu,
                     zero_point=ops.zero_point, blocking=case.blocking,
                     softmax_x0=case.softmax_x0, softmax_causal=case.causal)
    return ops, plan


def prepare(cfg: EngineConfig, case: Case):
    """The job, what the golden model says and what the cycle model predicts, for ``case``."""
    from .cosim import Job

    ops, plan = _plan(cfg, case)
    words = isa.assemble(plan.program, cfg)
    if case.illegal is None:
        predicted = program_cycles(cfg, plan.program, stall=case.stall).cycles
        want = _golden(cfg, case, ops)
        timeout = 2 * predicted + 10_000
    else:
        rng = random.Random(case.seed)
        words[case.illegal_at] = _illegal_word(cfg, case.illegal, rng)
        predicted, want = None, None
        timeout = 2 * program_cycles(cfg, plan.program, stall=case.stall).cycles + 10_000
    job = Job(words, memory_image(plan, ops), [(plan.layout.c_addr, case.m * plan.layout.ldc)],
              case.stall, timeout_cycles=timeout, predicted_cycles=predicted or 0)
    return plan, job, want, predicted


def _judge(cfg: EngineConfig, case: Case, plan, job, want, predicted, run) -> Outcome:
    out = Outcome(case, ok=True, instructions=len(job.words), cycles=run.cycles,
                  predicted=predicted, seconds=run.sim_seconds)
    problems = []
    if case.illegal is None:
        if run.error is not None:
            problems.append(f"the engine raised {run.error}")
        else:
            got = read_result(plan, run.regions[0])
            out.elements = want.numel()
            out.mismatches = int((got != want).sum())
            if out.mismatches:
                problems.append(f"{out.mismatches} of {out.elements} elements differ")
        if run.cycles != predicted:
            problems.append(f"{run.cycles:,} cycles, the model predicted {predicted:,}")
    else:
        code = _expected_code(cfg, job.words[case.illegal_at])
        if run.error != f"illegal instruction ({code.name})":
            problems.append(f"expected illegal instruction ({code.name}) at instruction "
                            f"{case.illegal_at}, got {run.error or 'no error'}")
        elif run.counters.get("insns") != case.illegal_at + 1:
            problems.append(f"stopped after {run.counters.get('insns')} instructions, not "
                            f"{case.illegal_at + 1}")
    if problems:
        out.ok = False
        out.message = "; ".join(problems)
    return out


def run_cases_covered(cases: list[Case], cfg: EngineConfig) -> tuple[list[Outcome], dict]:
    """:func:`run_cases` on the coverage build; also returns the coverage counts."""
    import tempfile

    from .coverage import read

    with tempfile.TemporaryDirectory() as tmp:
        dat = Path(tmp) / "coverage.dat"
        outcomes = run_cases(cases, cfg, coverage=dat)
        return outcomes, read(dat) if dat.is_file() else {}


def run_cases(cases: list[Case], cfg: EngineConfig, build_root: str | None = None,
              coverage: Path | None = None) -> list[Outcome]:
    """Run ``cases`` on ``cfg``'s RTL in one simulator process; a case that hangs or crashes
    the batch is retried alone, so each gets its own verdict."""
    from .cosim import run_programs

    root = Path(build_root) if build_root else None
    prepared = [prepare(cfg, case) for case in cases]
    try:
        runs = run_programs(cfg, [p[1] for p in prepared], build_root=root,
                            min_mem_words=MAX_CASE_BYTES // cfg.mem_bytes_per_cycle,
                            coverage=coverage)
    except RuntimeError:
        if len(cases) == 1:
            raise
        outcomes = []
        for case in cases:
            try:
                outcomes += run_cases([case], cfg, build_root)
            except RuntimeError as e:
                outcomes.append(Outcome(case, ok=False, message=str(e)))
        return outcomes
    return [_judge(cfg, case, *p, run) for case, p, run in zip(cases, prepared, runs,
                                                               strict=True)]


def write_reproducer(path: Path, cfg: EngineConfig, outcome: Outcome) -> Path:
    """A failing case as a small JSON file that ``tessera cosim program FILE`` replays."""
    plan, job, _, _ = prepare(cfg, outcome.case)
    body = {
        "format": FORMAT, "config": cfg.to_dict(), "case": asdict(outcome.case),
        "failure": outcome.message,
        "program": isa.disassemble(job.words).splitlines(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1) + "\n")
    return path


def load_reproducer(path: Path) -> tuple[EngineConfig, Case]:
    """The configuration and case of a reproducer file; ValueError naming what is wrong."""
    try:
        body = json.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tessera fuzz reproducer (no \"format\": "
                         f"\"{FORMAT}\")")
    try:
        cfg = EngineConfig.from_dict(body["config"])
        fields = dict(body["case"])
        if fields.get("blocking") is not None:
            fields["blocking"] = tuple(fields["blocking"])
        case = Case(**fields)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: malformed reproducer ({e})") from None
    return cfg, case


def summarize(outcomes: list[Outcome], wall: float) -> dict[str, Any]:
    """The campaign's table: counts, and simulated cycles per second of simulation."""
    gemms = [o for o in outcomes if o.case.illegal is None]
    seconds = sum(o.seconds for o in outcomes)
    cycles = sum(o.cycles for o in outcomes)
    return {
        "programs": len(outcomes),
        "instructions": sum(o.instructions for o in outcomes),
        "elements_compared": sum(o.elements for o in outcomes),
        "mismatches": sum(o.mismatches for o in outcomes),
        "cycle_disagreements": sum(1 for o in gemms if o.predicted is not None
                                   and o.cycles != o.predicted),
        "illegal_programs": len(outcomes) - len(gemms),
        "failed_programs": sum(1 for o in outcomes if not o.ok),
        "simulated_cycles": cycles,
        "cycles_per_second": cycles / seconds if seconds else 0.0,
        "wall_seconds": wall,
        "programs_per_minute": 60 * len(outcomes) / wall if wall else 0.0,
    }


def campaign(cfg: EngineConfig, programs: int, *, seed: int = 0, jobs: int = 1,
             scheduler: Any = None, batch: int = 50, out: Path | None = None,
             progress=None, coverage: bool = False,
             softmax_only: bool = False) -> tuple[dict[str, Any], list[Path]]:
    """Draw ``programs`` cases, run them, write reproducers of the failures into ``out``.
    Returns the summary and the reproducer paths. ``coverage``: run on the coverage build
    (slower; one batch per job) and add ``coverage``, per unit, to the summary.
    ``softmax_only``: every program a GEMM with the softmax stage on its rows."""
    from tessera.parallel import run_batches

    from .build import build
    from .coverage import summarize as summarize_coverage

    cases = draw_cases(cfg, programs, seed, softmax_only=softmax_only)
    outcomes: list[Outcome] = []
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    # build once here, not in every worker at the same time
    sim = build(cfg, kind="native", depth=8192, coverage=coverage,
                mem_words=MAX_CASE_BYTES // cfg.mem_bytes_per_cycle)
    if coverage:
        batch = -(-len(cases) // max(1, jobs))
    batches = [cases[i:i + batch] for i in range(0, len(cases), batch)]

    def done(result) -> None:
        if coverage:
            result, batch_counts = result
            for key, n in batch_counts.items():
                counts[key] = counts.get(key, 0) + n
        outcomes.extend(result)
        if progress is not None:
            progress(len(result))

    run_batches(run_cases_covered if coverage else run_cases, batches, done, cfg, jobs=jobs,
                scheduler=scheduler)
    wall = time.perf_counter() - t0
    paths = []
    for n, o in enumerate(o for o in outcomes if not o.ok):
        if out is not None:
            paths.append(write_reproducer(Path(out) / f"case{n}-seed{o.case.seed}.json", cfg, o))
    summary = summarize(outcomes, wall)
    if coverage:
        summary["coverage"] = [
            {"unit": u.unit, **{f"{k}_covered": u.covered[k] for k in u.covered},
             **{f"{k}_points": u.total[k] for k in u.total}, "uncovered": u.uncovered}
            for u in summarize_coverage(counts, sim.directory / "tessera_top.v")]
    return summary, paths
