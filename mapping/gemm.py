"""A GEMM tiler: any int8 GEMM (M, K, N) as an ISA program and a memory layout.

The schedule blocks the output into groups of ``mb`` x ``nb`` array tiles and K into chunks of
``kc``; a chunk's operands are loaded once into one half of the scratchpads and reused by every
tile of the group while the other half fills (double buffering), and each group accumulates in
one half of the accumulator memory while the other half is stored. Dependency tokens between the
load, compute and store queues make that overlap safe. A small search picks the blocking with
the fewest predicted cycles that fits the scratchpads.

Memory layout (byte addresses, regions aligned to 64 bytes):

- output-stationary: A is stored transposed (K x M, so a column of an A tile is contiguous) and
  B as K x N, both row-major int8;
- weight-stationary: A as M x K and B as K x N, row-major int8;
- C as M x N, int8 (requantized) or little-endian int32;
- Q (requantization parameters), for each block of ``cols`` output channels, three rows of
  ``cols`` int32: bias, multiplier, shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rtl import isa
from rtl.config import ConfigError, EngineConfig
from rtl.isa import Insn, Spad

__all__ = ["GemmLayout", "GemmPlan", "PlanError", "plan_gemm"]


#: blockings scheduled in full and compared with the cycle model
SHORTLIST = 6


class PlanError(ConfigError):
    """A GEMM this engine configuration cannot run; the message says why."""


def _align(x: int, to: int = 64) -> int:
    return -(-x // to) * to


@dataclass(frozen=True)
class GemmLayout:
    """Where the operands and the result live in memory, in bytes."""

    a_addr: int
    lda: int
    a_transposed: bool
    b_addr: int
    ldb: int
    c_addr: int
    ldc: int
    c_elem_bytes: int
    q_addr: int
    size: int


@dataclass
class GemmPlan:
    config: EngineConfig
    m: int
    k: int
    n: int
    requant: bool
    mb: int            # os: array tiles of M per group; ws: rows of A per group (mc)
    nb: int            # tiles of N per group
    kc: int            # K per chunk
    layout: GemmLayout
    program: list[Insn] = field(default_factory=list)
    estimate: int = 0  # predicted cycles (mapping.program.program_cycles)
    zero_point: int = 0
    relu: bool = False

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n


def _layout(cfg: EngineConfig, m: int, k: int, n: int, requant: bool) -> GemmLayout:
    os_ = cfg.dataflow == "os"
    lda = m if os_ else k
    a_size = (k if os_ else m) * lda
    ldb = n
    c_bytes = 1 if requant else 4
    ldc = n * c_bytes
    a_addr = 0
    b_addr = _align(a_addr + a_size)
    c_addr = _align(b_addr + k * ldb)
    q_addr = _align(c_addr + m * ldc)
    nt = -(-n // cfg.cols)
    size = _align(q_addr + (3 * nt * 4 * cfg.cols if requant else 0))
    return GemmLayout(a_addr=a_addr, lda=lda, a_transposed=os_, b_addr=b_addr, ldb=ldb,
                      c_addr=c_addr, ldc=ldc, c_elem_bytes=c_bytes, q_addr=q_addr, size=size)


def _candidates(cfg: EngineConfig, m: int, k: int, n: int):
    g = isa.geometry(cfg)
    r, c = cfg.rows, cfg.cols
    half_a, half_b, half_acc = g.a_rows // 2, g.b_rows // 2, g.acc_rows // 2
    mt, nt = -(-m // r), -(-n // c)
    powers = [1 << i for i in range(12)]
    if cfg.dataflow == "os":
        for mb in [p for p in powers if p <= mt] or [1]:
            for nb in [p for p in powers if p <= nt] or [1]:
                if mb * nb * r > half_acc:
                    continue
                kc_max = min(k, half_a // mb, half_b // nb)
                if kc_max < 1:
                    continue
                yield mb, nb, kc_max
    else:
        kt = -(-k // r)
        for mc in sorted({min(m, x) for x in (16, 32, 64, 128, 256, 512, 1024, 2048)}):
            for nb in [p for p in powers if p <= nt] or [1]:
                if nb * mc > half_acc:
                    continue
                # A chunk: mc rows per K tile; B chunk: nb x R rows per K tile
                kt_max = min(kt, half_a // mc, half_b // (nb * r))
                if kt_max < 1:
                    continue
                yield mc, nb, kt_max * r


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _estimate(cfg: EngineConfig, m: int, k: int, n: int, mb: int, nb: int, kc: int) -> int:
    """Cycles, roughly: each chunk takes the longer of its compute and its memory traffic,
    plus the first chunk's loads, which nothing hides."""
    r, c, w = cfg.rows, cfg.cols, cfg.mem_bytes_per_cycle
    chunks = _cdiv(k, kc)
    if cfg.dataflow == "os":
        groups = _cdiv(_cdiv(m, r), mb) * _cdiv(_cdiv(n, c), nb)
        compute = mb * nb * max(kc, r)
        load = mb * kc * _cdiv(r, w) + nb * kc * _cdiv(c, w)
        store = mb * nb * r * _cdiv(c, w)
    else:
        groups = _cdiv(m, mb) * _cdiv(_cdiv(n, c), nb)
        ktiles = _cdiv(kc, r)
        compute = nb * ktiles * max(mb, 2 * r + c - 1)
        load = ktiles * mb * _cdiv(r, w) + nb * ktiles * r * _cdiv(c, w)
        store = nb * mb * _cdiv(c, w)
    step = max(compute, load + store // chunks)
    return groups * chunks * step + load + r + c + cfg.mem_latency


def check_gemm(cfg: EngineConfig, m: int, k: int, n: int, requant: bool) -> GemmLayout:
    """Refuse a GEMM this engine cannot run (with the reason); else its memory layout."""
    for name, v in (("M", m), ("K", k), ("N", n)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PlanError(f"GEMM dimension {name} must be a positive integer, not {v!r}")
    if cfg.in_bits != 8:
        raise PlanError(f"the engine runs int8 GEMMs; in_bits is {cfg.in_bits}")
    g = isa.geometry(cfg)
    nt = _cdiv(n, cfg.cols)
    if requant and 3 * nt > g.q_rows:
        raise PlanError(f"N = {n} needs {3 * nt} requantization parameter rows; scratchpad Q "
                        f"holds {g.q_rows}")
    layout = _layout(cfg, m, k, n, requant)
    if layout.size > 1 << isa.ADDR_BITS:
        raise PlanError(f"operands of {layout.size} bytes exceed the 32-bit address space")
    return layout


def plan_gemm(cfg: EngineConfig, m: int, k: int, n: int, *, requant: bool = False,
              zero_point: int = 0, relu: bool = False,
              blocking: tuple[int, int, int] | None = None) -> GemmPlan:
    """Schedule ``C[M x N] = A[M x K] @ B[K x N]`` on ``cfg``; returns program and layout.

    ``blocking`` forces (mb, nb, kc) instead of searching (os: mb, nb in array tiles; ws: mb is
    rows of A per group). Raises :class:`PlanError` for shapes this engine cannot hold.
    """
    layout = check_gemm(cfg, m, k, n, requant)
    from .program import program_cycles

    def make(b: tuple[int, int, int]) -> GemmPlan:
        plan = GemmPlan(config=cfg, m=m, k=k, n=n, requant=requant, mb=b[0], nb=b[1], kc=b[2],
                        layout=layout, zero_point=zero_point, relu=relu)
        plan.program = (_program_os if cfg.dataflow == "os" else _program_ws)(plan)
        plan.estimate = program_cycles(cfg, plan.program).cycles
        return plan

    if blocking is not None:
        best = make(blocking)
    else:
        # A quick formula ranks every blocking that fits; the best few are then scheduled
        # for real and the one the cycle model says is fastest wins (ties: fewer instructions).
        options = sorted((_estimate(cfg, m, k, n, *b), b) for b in _candidates(cfg, m, k, n))
        if not options:
            raise PlanError(f"no tiling of a {m}x{k}x{n} GEMM fits {cfg.label}'s scratchpads "
                            f"({cfg.spad_kib} KiB) and accumulator ({cfg.acc_kib} KiB)")
        plans = [make(b) for _, b in options[:SHORTLIST]]
        best = min(plans, key=lambda p: (p.estimate, len(p.program)))
    isa.assemble(best.program, cfg)  # every instruction checked against the engine
    return best


def _prologue(plan: GemmPlan) -> list[Insn]:
    cfg, lay = plan.config, plan.layout
    if not plan.requant:
        return []
    nt = -(-plan.n // cfg.cols)
    return [isa.config(zero_point=plan.zero_point, relu=plan.relu),
            isa.load(Spad.Q, 0, 3 * nt, 4 * cfg.cols, lay.q_addr, 4 * cfg.cols)]


def _mark(insns: list[Insn], first: set[str], last: set[str]) -> list[Insn]:
    """Put the dependency flags of a synchronization unit on its first and last instruction."""
    if not insns:
        return insns
    insns[0] = Insn(insns[0].op, insns[0].args, insns[0].deps | first)
    insns[-1] = Insn(insns[-1].op, insns[-1].args, insns[-1].deps | last)
    return insns


def _pipeline(steps: list[list[list[Insn]]]) -> list[Insn]:
    """Program order with the loads one chunk ahead: L0, L1, C0, S, L2, C1, S, ...

    Each queue still sees its own instructions in chunk order (so the tokens pair up the same),
    but the dispatcher, which feeds the queues in program order, reaches chunk t+1's loads
    before chunk t's computes, so loading overlaps computing.
    """
    prog: list[Insn] = []
    if steps:
        prog += steps[0][0]
    for t, (_loads, computes, stores) in enumerate(steps):
        if t + 1 < len(steps):
            prog += steps[t + 1][0]
        prog += computes + stores
    return prog


def _program_os(plan: GemmPlan) -> list[Insn]:
    cfg, lay = plan.config, plan.layout
    g = isa.geometry(cfg)
    r, c = cfg.rows, cfg.cols
    m, k, n = plan.m, plan.k, plan.n
    mb, nb, kc = plan.mb, plan.nb, plan.kc
    half_a, half_b, half_acc = g.a_rows // 2, g.b_rows // 2, g.acc_rows // 2
    mt, nt = -(-m // r), -(-n // c)
    prog = _prologue(plan)
    steps: list[list[list[Insn]]] = []
    chunk_no = 0
    for group_no, (gm, gn) in enumerate((gm, gn) for gm in range(0, mt, mb)
                                        for gn in range(0, nt, nb)):
        tiles_m = range(gm, min(gm + mb, mt))
        tiles_n = range(gn, min(gn + nb, nt))
        acc_base = (group_no % 2) * half_acc
        chunks = list(range(0, k, kc))
        for ci, k0 in enumerate(chunks):
            kl = min(kc, k - k0)
            a_base = (chunk_no % 2) * half_a
            b_base = (chunk_no % 2) * half_b
            loads = []
            for x, ti in enumerate(tiles_m):
                i0 = ti * r
                loads.append(isa.load(Spad.A, a_base + x * kc, kl, min(r, m - i0),
                                      lay.a_addr + k0 * lay.lda + i0, lay.lda))
            for y, tj in enumerate(tiles_n):
                j0 = tj * c
                loads.append(isa.load(Spad.B, b_base + y * kc, kl, min(c, n - j0),
                                      lay.b_addr + k0 * lay.ldb + j0, lay.ldb))
            loads = _mark(loads, {"pop_next"} if chunk_no >= 2 else set(), {"push_next"})
            computes = []
            for x, _ti in enumerate(tiles_m):
                for y, _tj in enumerate(tiles_n):
                    tile = x * len(tiles_n) + y
                    computes.append(isa.compute(a_base + x * kc, b_base + y * kc,
                                                acc_base + tile * r, kl, ci > 0))
            first = {"pop_prev"} | ({"pop_next"} if ci == 0 and group_no >= 2 else set())
            last = {"push_prev"} | ({"push_next"} if ci == len(chunks) - 1 else set())
            steps.append([loads, _mark(computes, first, last), []])
            chunk_no += 1
        stores = []
        for x, ti in enumerate(tiles_m):
            for y, tj in enumerate(tiles_n):
                tile = x * len(tiles_n) + y
                i0, j0 = ti * r, tj * c
                stores.append(isa.store(acc_base + tile * r, min(r, m - i0), min(c, n - j0),
                                        lay.c_addr + i0 * lay.ldc + j0 * lay.c_elem_bytes,
                                        lay.ldc, plan.requant, 3 * tj))
        steps[-1][2] = _mark(stores, {"pop_prev"}, {"push_prev"})
    return prog + _pipeline(steps)


def _program_ws(plan: GemmPlan) -> list[Insn]:
    cfg, lay = plan.config, plan.layout
    g = isa.geometry(cfg)
    r, c = cfg.rows, cfg.cols
    m, k, n = plan.m, plan.k, plan.n
    mc, nb, kc = plan.mb, plan.nb, plan.kc
    half_a, half_b, half_acc = g.a_rows // 2, g.b_rows // 2, g.acc_rows // 2
    nt = -(-n // c)
    prog = _prologue(plan)
    steps: list[list[list[Insn]]] = []
    chunk_no = 0
    for group_no, (m0, gn) in enumerate((m0, gn) for m0 in range(0, m, mc)
                                        for gn in range(0, nt, nb)):
        ml = min(mc, m - m0)
        tiles_n = range(gn, min(gn + nb, nt))
        acc_base = (group_no % 2) * half_acc
        chunks = list(range(0, k, kc))
        for ci, k0 in enumerate(chunks):
            ktiles = list(range(k0, min(k0 + kc, k), r))
            a_base = (chunk_no % 2) * half_a
            b_base = (chunk_no % 2) * half_b
            loads = []
            for kk, kt0 in enumerate(ktiles):
                loads.append(isa.load(Spad.A, a_base + kk * mc, ml, min(r, k - kt0),
                                      lay.a_addr + m0 * lay.lda + kt0, lay.lda))
            for y, tj in enumerate(tiles_n):
                j0 = tj * c
                for kk, kt0 in enumerate(ktiles):
                    loads.append(isa.load(Spad.B, b_base + (y * len(ktiles) + kk) * r,
                                          min(r, k - kt0), min(c, n - j0),
                                          lay.b_addr + kt0 * lay.ldb + j0, lay.ldb))
            loads = _mark(loads, {"pop_next"} if chunk_no >= 2 else set(), {"push_next"})
            computes = []
            for y, _tj in enumerate(tiles_n):
                for kk, _kt0 in enumerate(ktiles):
                    computes.append(isa.compute(a_base + kk * mc,
                                                b_base + (y * len(ktiles) + kk) * r,
                                                acc_base + y * mc, ml, ci > 0 or kk > 0))
            first = {"pop_prev"} | ({"pop_next"} if ci == 0 and group_no >= 2 else set())
            last = {"push_prev"} | ({"push_next"} if ci == len(chunks) - 1 else set())
            steps.append([loads, _mark(computes, first, last), []])
            chunk_no += 1
        stores = []
        for y, tj in enumerate(tiles_n):
            j0 = tj * c
            stores.append(isa.store(acc_base + y * mc, ml, min(c, n - j0),
                                    lay.c_addr + m0 * lay.ldc + j0 * lay.c_elem_bytes,
                                    lay.ldc, plan.requant, 3 * tj))
        steps[-1][2] = _mark(stores, {"pop_prev"}, {"push_prev"})
    return prog + _pipeline(steps)
