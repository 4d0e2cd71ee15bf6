"""GEMM cost for the mapper: the tiler's blocking choice, its cycles and its traffic.

:func:`gemm_cost` asks the tiler's search (:func:`mapping.gemm.search_blocking`) for the
blocking :func:`mapping.gemm.plan_gemm` would use and the cycles of its program, which the
search gets from the engine's event model (:func:`mapping.program.stream_cycles`: dispatcher,
queues, tokens, the array and the memory port shared by loads and stores) replayed group by
group, skipping runs of identical groups once the state repeats. So the mapper's cycles are the
cycles of the program ``tessera cosim`` would run, without building it; the cost of a GEMM
does not grow with its size once its groups repeat. Bytes follow from the blocking in closed
form.

Units: cycles, bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from rtl.config import EngineConfig

from .gemm import GemmPlan, Schedule, _cdiv, check_gemm, q_bytes, search_blocking

__all__ = ["GemmCost", "gemm_cost"]


@dataclass(frozen=True)
class GemmCost:
    """Predicted cost of ``C[M x N] = A[M x K] @ B[K x N]`` on one engine configuration.

    ``cycles`` from start to done; ``compute_cycles`` are cycles the array takes operand beats;
    ``stall_cycles = cycles - compute_cycles``. Bytes: ``dram_read_bytes`` / ``dram_write_bytes``
    to and from memory, ``spad_write_bytes`` (= bytes loaded), ``spad_read_bytes`` (operands the
    array reads), ``acc_read_bytes`` / ``acc_write_bytes`` (accumulator traffic, 4-byte sums).
    """

    m: int
    k: int
    n: int
    blocking: tuple[int, int, int]
    cycles: int
    compute_cycles: int
    macs: int
    dram_read_bytes: int
    dram_write_bytes: int
    spad_read_bytes: int
    spad_write_bytes: int
    acc_read_bytes: int
    acc_write_bytes: int
    instructions: int
    #: why this blocking: what the search compared (:meth:`mapping.gemm.Choice.explain`)
    why: str = ""

    @property
    def stall_cycles(self) -> int:
        """Cycles the array does not take a beat (fill, drain, memory waits), in cycles."""
        return self.cycles - self.compute_cycles

    @property
    def dram_bytes(self) -> int:
        """Bytes moved to and from external memory."""
        return self.dram_read_bytes + self.dram_write_bytes


def _traffic(cfg: EngineConfig, m: int, k: int, n: int, blocking: tuple[int, int, int],
             requant: bool, softmax: bool = False) -> dict[str, int]:
    r, c = cfg.rows, cfg.cols
    mb, nb, _kc = blocking
    mt, nt = _cdiv(m, r), _cdiv(n, c)
    n_groups = _cdiv(nt, nb)
    m_groups = _cdiv(mt, mb) if cfg.dataflow == "os" else _cdiv(m, mb)
    elem = 1 if requant else 4
    read = m * k * n_groups + k * n * m_groups + (q_bytes(cfg, n) if requant else 0)
    write = m * n * elem
    if cfg.dataflow == "os":
        beats = mt * nt * k
        spad_read = beats * (r + c)
        acc_tiles = mt * nt * _cdiv(k, blocking[2])
        acc_write = acc_tiles * r * c * 4
        acc_read = (acc_tiles - mt * nt) * r * c * 4 + mt * nt * r * c * 4
    else:
        kt = _cdiv(k, r)
        beats = m * nt * kt
        spad_read = beats * r + _cdiv(m, mb) * nt * kt * r * c
        acc_write = beats * c * 4
        acc_read = (beats - m * nt) * c * 4 + m * nt * c * 4
    if softmax:   # the softmax stage reads every accumulator row three times
        acc_read += 2 * m * _cdiv(n, c) * c * 4
    return {"compute": beats, "dram_read": read, "dram_write": write, "spad_read": spad_read,
            "spad_write": read, "acc_read": acc_read, "acc_write": acc_write}


def gemm_cost(cfg: EngineConfig, m: int, k: int, n: int, *, requant: bool = False,
              ideal_memory: bool = False, softmax: bool = False) -> GemmCost:
    """The cost of the GEMM as :func:`mapping.gemm.plan_gemm` would schedule it (memoized).

    With ``ideal_memory`` loads and stores take no time (unbounded bandwidth, no latency): the
    array and its fill and drain alone, with the same blocking. ``softmax``: C's rows leave
    through the softmax stage (attention logits; ``requant`` must be set). Raises
    :class:`~mapping.gemm.PlanError` for a shape this configuration cannot hold.
    """
    # Cycles do not depend on the clock or the hash length: configurations that differ only
    # there (a sweep over clocks) share the memo.
    timing = cfg.replace(clock_mhz=100.0, hash_bits=16)
    return _gemm_cost(timing, m, k, n, requant, ideal_memory, softmax)


def _clear_memo() -> None:
    _gemm_cost.cache_clear()


#: forget every memoized cost (benchmarks time cold runs)
gemm_cost.cache_clear = _clear_memo  # type: ignore[attr-defined]


@lru_cache(maxsize=4096)
def _gemm_cost(cfg: EngineConfig, m: int, k: int, n: int, requant: bool,
               ideal_memory: bool, softmax: bool = False) -> GemmCost:
    choice = search_blocking(cfg, m, k, n, requant, softmax=softmax)
    cycles = choice.cycles
    blocking = choice.blocking
    if ideal_memory:
        plan = GemmPlan(config=cfg, m=m, k=k, n=n, requant=requant, mb=blocking[0],
                        nb=blocking[1], kc=blocking[2], layout=check_gemm(cfg, m, k, n, requant),
                        softmax_x0=-1 if softmax else None)
        cycles = Schedule(plan).timing(ideal_memory=True).cycles
    t = _traffic(cfg, m, k, n, blocking, requant, softmax)
    return GemmCost(m=m, k=k, n=n, blocking=blocking, cycles=cycles,
                    compute_cycles=t["compute"], macs=m * k * n,
                    dram_read_bytes=t["dram_read"], dram_write_bytes=t["dram_write"],
                    spad_read_bytes=t["spad_read"], spad_write_bytes=t["spad_write"],
                    acc_read_bytes=t["acc_read"], acc_write_bytes=t["acc_write"],
                    instructions=choice.instructions, why=choice.explain(cfg))
