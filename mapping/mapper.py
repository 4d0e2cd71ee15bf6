"""Map a workload onto an engine configuration: cycles, traffic and energy per op and in total.

GEMM-like ops (``linear``, ``conv`` as im2col, ``matmul``, ``sign_matmul``) are costed by
:func:`mapping.gemm_cost.gemm_cost`, which reproduces the GEMM tiler's blocking choice and the
program cycle model (whose per-instruction timing equals the RTL's); these rows are marked
``verified: rtl-model``. Outputs are requantized to int8 when the requantizer's parameter
scratchpad holds N's channels, else stored as int32.

Attention's softmax runs on the engine's softmax stage, fused into the stores of ``Q K^T``
(:mod:`rtl.softmax`, GPT-2's causal mask included; its ``1/sqrt(d)`` scale folds into that
GEMM's requantization): the GEMM row is costed with the stage's three passes by the same program
model, and the scale and softmax rows carry no cycles of their own (``verified: rtl-model``,
``why`` names the GEMM). A softmax whose rows of scores do not fit the accumulator whole stays
modeled.

The rest of the vector unit is not built yet. LayerNorm, GELU, residual adds, EcoFormer's
hashing steps, division and depthwise convolution are given an explicit *modeled* cost (marked
``verified: modeled``): a unit after the accumulator that processes ``cols`` elements per cycle,
``passes`` times over its input (:data:`VECTOR_PASSES`; a depthwise conv does ``taps`` MACs per
element), reading its int8 input from and writing its int8 output to memory, with memory time
overlapping compute (cycles = the longer of the two). Each element operation costs one int32
addition from the energy table (a depthwise tap one MAC).

Ops run one after another: a model's cycles are the sum of its ops' cycles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rtl import isa
from rtl.config import EngineConfig
from rtl.engine import check_engine

from .energy import DEFAULT, PAPER_ADD_PJ, PAPER_MUL_PJ, EnergyTable, paper_counts
from .gemm import PlanError, q_rows
from .gemm_cost import GemmCost, gemm_cost
from .workloads import Op, Workload, WorkloadError

__all__ = ["MapResult", "OpCost", "VECTOR_PASSES", "map_gemm", "map_workload"]

#: passes over the data per element on the modeled vector unit
VECTOR_PASSES = {"softmax": 3, "layernorm": 3, "gelu": 1, "add": 1, "scale": 1, "hash": 1,
                 "divide": 1, "dwconv": 1, "relu": 1, "gather": 1, "reduce": 1}
#: operands read per produced element (residual add reads two tensors)
_VECTOR_INPUTS = {"add": 2}


@dataclass
class OpCost:
    """Cost of one op row (all ``count`` instances). Cycles, bytes, pJ."""

    name: str
    kind: str
    shape: str
    count: int
    cycles: int
    compute_cycles: int
    stall_cycles: int
    macs: int
    dram_bytes: int
    onchip_bytes: int
    energy_pj: float
    utilization: float
    verified: str                     # "rtl-model" (GEMM cycle model) or "modeled"
    blocking: tuple[int, int, int] | None = None
    muls: int = 0                     # paper counting
    adds: int = 0
    stage: str = ""
    #: this engine's energy per the table, pJ (equal to ``energy_pj`` unless counting as paper)
    hardware_energy_pj: float = 0.0
    #: GEMM rows: the blocking search's account of its choice
    why: str = ""
    #: GEMM rows: one instance's problem as the engine runs it (``tessera cosim op``)
    gemm: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MapResult:
    """A whole workload on one configuration."""

    workload: str
    config: EngineConfig
    ops: list[OpCost]
    ideal_memory: bool
    count: str
    params: dict[str, Any] = field(default_factory=dict)
    energy_source: str = ""

    @property
    def cycles(self) -> int:
        return sum(o.cycles for o in self.ops)

    @property
    def macs(self) -> int:
        return sum(o.macs for o in self.ops)

    def totals(self) -> dict[str, Any]:
        """Totals over all ops: cycles, compute and stall cycles, MACs, bytes, pJ, utilization."""
        cycles = self.cycles
        t: dict[str, Any] = {
            "cycles": cycles,
            "compute_cycles": sum(o.compute_cycles for o in self.ops),
            "stall_cycles": sum(o.stall_cycles for o in self.ops),
            "macs": self.macs,
            "gemm_macs": sum(o.macs for o in self.ops if o.verified == "rtl-model"),
            "utilization": self.macs / (self.config.pes * cycles) if cycles else 0.0,
            "dram_bytes": sum(o.dram_bytes for o in self.ops),
            "onchip_bytes": sum(o.onchip_bytes for o in self.ops),
            "energy_pj": sum(o.energy_pj for o in self.ops),
            "hardware_energy_pj": sum(o.hardware_energy_pj for o in self.ops),
            "modeled_cycles": sum(o.cycles for o in self.ops if o.verified == "modeled"),
            "time_ms": cycles / (self.config.clock_mhz * 1e3),
        }
        if self.count == "paper":
            t["muls"] = sum(o.muls for o in self.ops)
            t["adds"] = sum(o.adds for o in self.ops)
        return t

    def to_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "config": self.config.to_dict(),
                "config_label": self.config.label, "params": self.params,
                "ideal_memory": self.ideal_memory, "count": self.count,
                "energy_source": self.energy_source,
                "totals": self.totals(), "ops": [o.to_dict() for o in self.ops]}


def _requant_fits(cfg: EngineConfig, n: int) -> bool:
    return q_rows(cfg, n) <= isa.geometry(cfg).q_rows


def _gemm_energy(g: GemmCost, energy: EnergyTable, sign: bool = False) -> float:
    """pJ of one GEMM: products (sign mode: additions), scratchpad, accumulator, DRAM bytes."""
    return (g.macs * (energy.add_pj if sign else energy.mac_pj)
            + g.spad_read_bytes * energy.spad_read_byte_pj
            + g.spad_write_bytes * energy.spad_write_byte_pj
            + g.acc_read_bytes * energy.acc_read_byte_pj
            + g.acc_write_bytes * energy.acc_write_byte_pj
            + g.dram_bytes * energy.dram_byte_pj)


def _gemm_row(cfg: EngineConfig, op: Op, energy: EnergyTable, ideal: bool,
              softmax: bool = False, causal: bool = False) -> OpCost:
    requant = softmax or _requant_fits(cfg, op.n)
    try:
        g = gemm_cost(cfg, op.m, op.k, op.n, requant=requant, ideal_memory=ideal,
                      softmax=softmax)
    except PlanError as e:
        raise WorkloadError(f"op {op.name} ({op.shape}): {e}") from None
    c = op.count
    onchip = g.spad_read_bytes + g.spad_write_bytes + g.acc_read_bytes + g.acc_write_bytes
    pj = _gemm_energy(g, energy, sign=op.kind == "sign_matmul")
    return OpCost(name=op.name, kind=op.kind, shape=op.shape, count=c, cycles=g.cycles * c,
                  compute_cycles=g.compute_cycles * c, stall_cycles=g.stall_cycles * c,
                  macs=g.macs * c, dram_bytes=g.dram_bytes * c, onchip_bytes=onchip * c,
                  energy_pj=pj * c, utilization=g.macs / (cfg.pes * g.cycles),
                  verified="rtl-model", blocking=g.blocking, stage=op.stage, why=g.why,
                  gemm={"m": op.m, "k": op.k, "n": op.n, "requant": requant,
                        "cycles": g.cycles,
                        **({"softmax_x0": SOFTMAX_X0, "causal": causal} if softmax else {})})


#: the x0 ``tessera cosim op`` runs a fused softmax with (logits at a scale of 1/20: +-6.4)
SOFTMAX_X0 = -20


def _fusable_softmax(ops: list[Op], i: int) -> bool:
    """Whether ``ops[i]`` is attention's ``Q K^T`` followed by its scale and an unmasked
    softmax over exactly its output: the GEMM's stores run the softmax stage and the scale
    folds into its requantization."""
    if i + 2 >= len(ops):
        return False
    qk, scale, soft = ops[i], ops[i + 1], ops[i + 2]
    return (qk.kind == "matmul" and scale.kind == "scale" and soft.kind == "softmax"
            and scale.elements == soft.elements == qk.m * qk.n
            and qk.count == scale.count == soft.count)


def _fused_row(op: Op, into: OpCost, energy: EnergyTable,
               what: str) -> OpCost:
    """A row whose work happens inside ``into``'s program: no cycles of its own."""
    passes = VECTOR_PASSES[op.kind] if op.kind == "softmax" else 0
    pj = op.elements * passes * energy.add_pj * op.count
    return OpCost(name=op.name, kind=op.kind, shape=op.shape, count=op.count, cycles=0,
                  compute_cycles=0, stall_cycles=0, macs=0, dram_bytes=0, onchip_bytes=0,
                  energy_pj=pj, utilization=0.0, verified="rtl-model", stage=op.stage,
                  why=f"{what} {into.name}")


def _vector_row(cfg: EngineConfig, op: Op, energy: EnergyTable, ideal: bool) -> OpCost:
    passes = op.taps if op.kind == "dwconv" else VECTOR_PASSES[op.kind]
    element_ops = op.elements * passes
    compute = -(-element_ops // cfg.cols)
    inputs = _VECTOR_INPUTS.get(op.kind, 1)
    dram = op.elements * (inputs + 1)  # int8 in, int8 out
    memory = 0 if ideal else -(-dram // cfg.mem_bytes_per_cycle) + cfg.mem_latency
    cycles = max(compute, memory)
    onchip = op.elements * (inputs + 1)  # through the accumulator-side buffer
    per_op = energy.mac_pj if op.kind == "dwconv" else energy.add_pj
    pj = (element_ops * per_op + dram * energy.dram_byte_pj
          + onchip * (energy.acc_read_byte_pj + energy.acc_write_byte_pj) / 2)
    c = op.count
    macs = op.macs // c
    return OpCost(name=op.name, kind=op.kind, shape=op.shape, count=c, cycles=cycles * c,
                  compute_cycles=compute * c, stall_cycles=(cycles - compute) * c,
                  macs=macs * c, dram_bytes=dram * c, onchip_bytes=onchip * c,
                  energy_pj=pj * c, utilization=macs / (cfg.pes * cycles),
                  verified="modeled", stage=op.stage)


def map_workload(workload: Workload, cfg: EngineConfig, *, ideal_memory: bool = False,
                 count: str = "hardware", energy: EnergyTable = DEFAULT,
                 fuse: bool = True) -> MapResult:
    """Cost every op of ``workload`` on ``cfg``.

    ``fuse=False`` costs every non-linear on the modeled unit, one op after another (the
    reference the benchmarks measure fusion against).

    ``count="paper"`` adds EcoFormer's multiplication and addition counts to each row and
    prices the rows' ``energy_pj`` at 3.7 pJ per multiplication and 0.9 pJ per addition; the
    engine's own energy (from ``energy``) stays beside it as ``hardware_energy_pj``.
    """
    if count not in ("hardware", "paper"):
        raise WorkloadError(f"count must be hardware or paper, not {count!r}")
    check_engine(cfg)   # a configuration the RTL cannot build is refused here too
    rows = []
    ops = workload.ops
    fused: dict[int, OpCost] = {}
    for i, op in enumerate(ops):
        if i in fused:
            row = fused.pop(i)
        elif fuse and _fusable_softmax(ops, i):
            try:
                row = _gemm_row(cfg, op, energy, ideal_memory, softmax=True,
                                causal=ops[i + 2].causal)
            except WorkloadError:   # whole rows of scores do not fit: the modeled unit
                row = _gemm_row(cfg, op, energy, ideal_memory)
            else:
                fused[i + 1] = _fused_row(ops[i + 1], row, energy,
                                          "folded into the requantization of")
                fused[i + 2] = _fused_row(ops[i + 2], row, energy,
                                          "the softmax stage on the stores of")
        else:
            row = (_gemm_row if op.is_gemm else _vector_row)(cfg, op, energy, ideal_memory)
        row.hardware_energy_pj = row.energy_pj
        if count == "paper":
            row.muls, row.adds = paper_counts(op)
            row.energy_pj = row.muls * PAPER_MUL_PJ + row.adds * PAPER_ADD_PJ
        rows.append(row)
    source = (f"EcoFormer get_energy.py: {PAPER_MUL_PJ} pJ/mul, {PAPER_ADD_PJ} pJ/add"
              if count == "paper" else energy.source)
    return MapResult(workload.name, cfg, rows, ideal_memory, count, dict(workload.params),
                     source)


def map_gemm(cfg: EngineConfig, m: int, k: int, n: int, *, ideal_memory: bool = False,
             energy: EnergyTable = DEFAULT) -> dict[str, Any]:
    """One GEMM (int32 output, as ``tessera cosim gemm`` without ``--requant``) as a dict:
    cycles, compute_cycles, stall_cycles, macs, utilization, dram_bytes, onchip_bytes,
    energy_pj, blocking, ideal_cycles (= ceil(MACs / PEs))."""
    try:
        g = gemm_cost(cfg, m, k, n, requant=False, ideal_memory=ideal_memory)
    except PlanError as e:
        raise WorkloadError(str(e)) from None
    onchip = g.spad_read_bytes + g.spad_write_bytes + g.acc_read_bytes + g.acc_write_bytes
    pj = _gemm_energy(g, energy)
    return {"m": m, "k": k, "n": n, "config": cfg.label, "ideal_memory": ideal_memory,
            "cycles": g.cycles, "compute_cycles": g.compute_cycles,
            "stall_cycles": g.stall_cycles, "macs": g.macs,
            "utilization": g.macs / (cfg.pes * g.cycles), "dram_bytes": g.dram_bytes,
            "onchip_bytes": onchip, "energy_pj": pj, "blocking": list(g.blocking),
            "instructions": g.instructions, "ideal_cycles": -(-g.macs // cfg.pes),
            "time_us": g.cycles / cfg.clock_mhz, "why": g.why}
