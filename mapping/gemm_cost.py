"""Fast GEMM cost: the tiler's blocking choice and its cycle model, replayed chunk by chunk.

:func:`mapping.gemm.plan_gemm` builds the whole ISA program for each of a few blockings and
replays it instruction by instruction (:func:`mapping.program.program_cycles`); for a large GEMM
on a small array that is millions of instructions. :func:`gemm_cost` gives the same answer from
the same rules without building anything:

- the same candidate blockings (:func:`mapping.gemm._candidates`), ranked by the same quick
  formula (:func:`mapping.gemm._estimate`), the best :data:`mapping.gemm.SHORTLIST` of them
  costed and the fastest kept;
- each candidate costed by replaying the program at the granularity of *chunks* rather than
  instructions: a chunk's loads run back to back on the load unit, its computes back to back on
  the array (``max(K, rows)`` beats per tile for ``os``, ``max(M, 2 rows + cols - 1)`` for
  ``ws``), a group's stores back to back on the store unit, and the dependency tokens between
  them (double-buffered scratchpads and accumulator) exactly as the program sets them;
- the dispatcher feeding the queues in program order, one instruction per cycle, waiting while
  the target queue holds ``queue_depth`` instructions not yet started;
- runs of identical groups (and identical rows of groups) are not replayed one by one: once the
  state advances by the same amount per group twice in a row, the rest of the run is
  extrapolated, so the cost is independent of the GEMM's size.

Within a unit it assumes each instruction after the first reaches its unit before the unit is
free for it (true when every instruction keeps its unit busy for at least one cycle, which they
all do). ``tests/test_mapper.py`` compares the result with ``plan_gemm(...).estimate`` on random
shapes and configurations.

Units: cycles, bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

from rtl.config import EngineConfig
from rtl.engine import EngineTiming

from .gemm import SHORTLIST, PlanError, _candidates, _estimate, check_gemm

__all__ = ["GemmCost", "gemm_cost"]

_DISPATCH = EngineTiming.dispatch_latency
_ISSUE = EngineTiming.compute_issue_latency
_STORE_FIXED = EngineTiming.store_setup + 3
_STORE_REQUANT = EngineTiming.store_params + EngineTiming.requant_latency
QUEUE_DEPTH = EngineTiming.queue_depth


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


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

    @property
    def stall_cycles(self) -> int:
        """Cycles the array does not take a beat (fill, drain, memory waits), in cycles."""
        return self.cycles - self.compute_cycles

    @property
    def dram_bytes(self) -> int:
        """Bytes moved to and from external memory."""
        return self.dram_read_bytes + self.dram_write_bytes


class _State:
    """The replay's clock readings; all times in cycles from the program's start.

    Besides each unit's next free cycle and the dependency tokens in flight, it keeps the start
    cycles of the last :data:`QUEUE_DEPTH` instructions of each queue: the dispatcher, which
    feeds the queues in program order, waits while the target queue is full.
    """

    __slots__ = ("disp", "load_free", "compute_free", "beat_free", "prev_last",
                 "weights_free", "b_next", "store_free", "end", "c2l", "l2c", "s2c", "c2s",
                 "lq", "cq", "sq", "insns", "chunks_loaded", "chunks_computed", "groups_done")

    def __init__(self) -> None:
        self.disp = 0                      # first cycle the dispatcher may take the next one
        self.load_free = 0
        self.compute_free = 0
        self.beat_free = 0
        self.prev_last = -10**9
        self.weights_free = 0
        self.b_next = 0
        self.store_free = 0
        self.end = 0
        self.c2l = 0                       # latest "operands free" token (from a compute)
        self.l2c: list[int] = []           # "operands loaded" tokens not yet taken
        self.s2c: list[int] = [0, 0]       # last two groups' "accumulator free" tokens
        self.c2s = 0
        self.lq: list[int] = []            # start cycles of the last instructions per queue
        self.cq: list[int] = []
        self.sq: list[int] = []
        self.insns = 0
        self.chunks_loaded = 0
        self.chunks_computed = 0
        self.groups_done = 0

    _TIMES = ("disp", "load_free", "compute_free", "beat_free", "prev_last", "weights_free",
              "b_next", "store_free", "end", "c2l", "c2s")
    _COUNTS = ("insns", "chunks_loaded", "chunks_computed", "groups_done")

    def vector(self) -> list[int]:
        return ([getattr(self, a) for a in self._TIMES + self._COUNTS]
                + self.l2c + self.s2c + self.lq + self.cq + self.sq)

    def shift(self, delta: list[int], times: int) -> None:
        names = self._TIMES + self._COUNTS
        for i, name in enumerate(names):
            setattr(self, name, getattr(self, name) + delta[i] * times)
        j = len(names)
        for name in ("l2c", "s2c", "lq", "cq", "sq"):
            values = getattr(self, name)
            setattr(self, name, [t + delta[j + i] * times for i, t in enumerate(values)])
            j += len(values)


def _dispatch(state: _State, queue: list[int], n: int) -> int:
    """Cycle the dispatcher hands over the first of ``n`` instructions bound for ``queue``."""
    first = state.disp
    if len(queue) >= QUEUE_DEPTH:
        first = max(first, queue[-QUEUE_DEPTH] + 1)
    return first


def _retire(state: _State, queue: list[int], starts: list[int], first: int) -> list[int]:
    """Record a unit's start cycles; the dispatcher moves past its last instruction."""
    n = len(starts)
    last = first + n - 1
    combined = queue + starts
    back = len(combined) - 1 - QUEUE_DEPTH
    if back >= 0 and back >= len(queue) - QUEUE_DEPTH:
        last = max(last, combined[back] + 1)
    state.disp = last + 1
    state.insns += n
    return combined[-QUEUE_DEPTH:]


@dataclass(frozen=True)
class _Group:
    """One group of output tiles: its chunks' loads, computes and its stores."""

    chunks: tuple[tuple[tuple[int, ...], int, int], ...]  # (load beats, n computes, extent)
    stores: tuple[int, ...]                               # store spans, cycles


def _repeat(state: _State, step, count: int) -> None:
    """Run ``step(state)`` ``count`` times, extrapolating once the state moves periodically."""
    history: list[list[int]] = [state.vector()]
    done = 0
    while done < count:
        step(state)
        done += 1
        history.append(state.vector())
        for period in (1, 2):
            if len(history) < 2 * period + 2 or done + period > count:
                continue
            a, b, c = history[-1 - 2 * period], history[-1 - period], history[-1]
            if not len(a) == len(b) == len(c):
                continue
            d1 = [y - x for x, y in zip(a, b, strict=True)]
            d2 = [y - x for x, y in zip(b, c, strict=True)]
            if d1 == d2:
                times = (count - done) // period
                if times:
                    state.shift(d2, times)
                    done += times * period
                    history = [state.vector()]
                break


class _Replay:
    """Replays a GEMM program unit by unit (a unit: one chunk's loads or computes, one group's
    stores), in program order: L0, then for each chunk t: L(t+1), C(t), S (after a group)."""

    def __init__(self, cfg: EngineConfig, ideal: bool):
        self.cfg = cfg
        self.lat = max(1, cfg.mem_latency)
        self.ideal = ideal

    def loads(self, st: _State, beats: tuple[int, ...]) -> None:
        token = st.c2l if st.chunks_loaded >= 2 else 0
        st.chunks_loaded += 1
        if self.ideal:
            st.l2c.append(token)
            st.insns += len(beats)
            return
        first = _dispatch(st, st.lq, len(beats))
        start = max(first + _DISPATCH, st.load_free, token)
        starts = list(accumulate((b + 1 for b in beats[:-1]), initial=start))
        st.load_free = starts[-1] + beats[-1] + 1
        l2c = st.load_free + self.lat
        st.end = max(st.end, l2c)
        st.l2c.append(l2c)
        st.lq = _retire(st, st.lq, starts, first)

    def computes(self, st: _State, ncomp: int, extent: int, first_of_group: bool,
                 last_of_group: bool) -> None:
        cfg = self.cfg
        r, c = cfg.rows, cfg.cols
        first_d = _dispatch(st, st.cq, ncomp)
        s = max(first_d + _DISPATCH, st.compute_free, st.l2c.pop(0))
        if first_of_group and st.groups_done >= 2:
            s = max(s, st.s2c[-2])
        st.compute_free = s + ncomp
        if cfg.dataflow == "os":
            first = max(s + _ISSUE, st.beat_free)
            last0 = max(first + extent - 1, st.prev_last + r)
            last = last0 + (ncomp - 1) * max(extent, r)
            st.prev_last = last
            st.beat_free = last + 1
            done = last + (r + c + 1) + r - 1 + 1
        else:
            first = max(s + _ISSUE, st.beat_free)
            load_w = max(st.b_next, st.weights_free, s + _ISSUE)
            b_next = load_w + r
            first = max(first, b_next)
            if ncomp > 1:
                period = max(extent, 2 * r + c - 1)
                f_last = first + (ncomp - 1) * period
                b_next = f_last - period + r + c - 1 + r
            else:
                f_last = first
            st.b_next = b_next
            st.weights_free = f_last + r + c - 1
            last = f_last + extent - 1
            st.beat_free = last + 1
            done = last + (r + c) + 1
        token = done + 1
        st.end = max(st.end, token)
        st.c2l = token
        if last_of_group:
            st.c2s = token
        st.chunks_computed += 1
        st.cq = _retire(st, st.cq, list(range(s, s + ncomp)), first_d)

    def stores(self, st: _State, spans: tuple[int, ...]) -> None:
        if self.ideal:
            s2c = st.c2s
            st.insns += len(spans)
        else:
            first = _dispatch(st, st.sq, len(spans))
            start = max(first + _DISPATCH, st.store_free, st.c2s)
            starts = list(accumulate(spans[:-1], initial=start))
            st.store_free = starts[-1] + spans[-1]
            s2c = st.store_free
            st.end = max(st.end, s2c)
            st.sq = _retire(st, st.sq, starts, first)
        st.s2c = [st.s2c[-1], s2c]
        st.groups_done += 1

    def group(self, st: _State, g: _Group, following: _Group | None) -> None:
        """Computes and stores of ``g``, with each chunk's successor loading ahead of it."""
        n = len(g.chunks)

        def chunk(s: _State, ci: int) -> None:
            _beats, ncomp, extent = g.chunks[ci]
            nxt = g.chunks[ci + 1][0] if ci + 1 < n else (
                following.chunks[0][0] if following is not None else None)
            if nxt is not None:
                self.loads(s, nxt)
            self.computes(s, ncomp, extent, ci == 0, ci == n - 1)

        ci = 0
        while ci < n:
            # chunks 1 .. n-3 are alike (same K, same successor): replay them as a run
            if ci == 1 and n >= 5:
                _repeat(st, lambda s: chunk(s, 1), n - 3)
                ci = n - 2
                continue
            chunk(st, ci)
            ci += 1
        self.stores(st, g.stores)


def _simulate(cfg: EngineConfig, m: int, k: int, n: int, blocking: tuple[int, int, int],
              requant: bool, ideal: bool) -> tuple[int, int]:
    """(cycles, instructions) of the program plan_gemm would build for this blocking."""
    r, c, w = cfg.rows, cfg.cols, cfg.mem_bytes_per_cycle
    lat = max(1, cfg.mem_latency)
    mb, nb, kc = blocking
    os_ = cfg.dataflow == "os"
    nt = _cdiv(n, c)
    elem = 1 if requant else 4
    store_extra = _STORE_FIXED + (_STORE_REQUANT if requant else 0)
    ks = [min(kc, k - k0) for k0 in range(0, k, kc)]

    def group(rows: list[int], ncols: list[int]) -> _Group:
        """rows: os: M rows per tile of the group; ws: [rows of A]. ncols: N per tile."""
        chunks = []
        for kl in ks:
            if os_:
                beats = tuple([kl * _cdiv(x, w) for x in rows] + [kl * _cdiv(y, w) for y in ncols])
                chunks.append((beats, len(rows) * len(ncols), kl))
            else:
                ml = rows[0]
                kt = [min(r, kl - x) for x in range(0, kl, r)]
                beats = tuple([ml * _cdiv(x, w) for x in kt]
                              + [x * _cdiv(y, w) for y in ncols for x in kt])
                chunks.append((beats, len(ncols) * len(kt), ml))
        if os_:
            stores = tuple(x * _cdiv(y * elem, w) + store_extra for x in rows for y in ncols)
        else:
            stores = tuple(rows[0] * _cdiv(y * elem, w) + store_extra for y in ncols)
        return _Group(tuple(chunks), stores)

    def tile_sizes(total: int, size: int) -> list[int]:
        return [min(size, total - i) for i in range(0, total, size)]

    n_tiles = tile_sizes(n, c)
    if os_:
        m_units = tile_sizes(m, r)             # tiles of M
        m_groups = [m_units[i:i + mb] for i in range(0, len(m_units), mb)]
    else:
        m_groups = [[x] for x in tile_sizes(m, mb)]
    n_groups = [n_tiles[i:i + nb] for i in range(0, nt, nb)]

    def runs(mg: list[int]) -> list[tuple[_Group, int]]:
        out: list[tuple[_Group, int]] = []
        for ng in n_groups:
            if out and ng == n_groups[0] and out[-1][1] > 0 and len(out) == 1:
                out[-1] = (out[-1][0], out[-1][1] + 1)
            else:
                out.append((group(mg, ng), 1))
        return out

    rows = [(runs(mg), mg) for mg in m_groups]
    replay = _Replay(cfg, ideal)
    state = _State()
    if requant:
        state.disp = 2                         # CONFIG, then the Q load
        state.insns = 2
        state.store_free = _DISPATCH + 1
        state.sq = [_DISPATCH]
        if not ideal:
            q_start = 1 + _DISPATCH
            state.load_free = q_start + 3 * nt * _cdiv(4 * c, w) + 1
            state.end = state.load_free + lat
            state.lq = [q_start]
    replay.loads(state, rows[0][0][0][0].chunks[0][0])

    def run_row(st: _State, row: list[tuple[_Group, int]], following: _Group | None) -> None:
        for i, (g, count) in enumerate(row):
            after = row[i + 1][0] if i + 1 < len(row) else following
            if count > 1:
                _repeat(st, lambda s, g=g: replay.group(s, g, g), count - 1)
            replay.group(st, g, after)

    i = 0
    while i < len(rows):
        j = i
        while j + 1 < len(rows) and rows[j + 1][1] == rows[i][1]:
            j += 1
        row = rows[i][0]
        after_run = rows[j + 1][0][0][0] if j + 1 < len(rows) else None
        if j > i:
            _repeat(state, lambda s, row=row: run_row(s, row, row[0][0]), j - i)
        run_row(state, row, after_run)
        i = j + 1
    return state.end + 1, state.insns


def _traffic(cfg: EngineConfig, m: int, k: int, n: int, blocking: tuple[int, int, int],
             requant: bool) -> dict[str, int]:
    r, c = cfg.rows, cfg.cols
    mb, nb, _kc = blocking
    mt, nt = _cdiv(m, r), _cdiv(n, c)
    n_groups = _cdiv(nt, nb)
    m_groups = _cdiv(mt, mb) if cfg.dataflow == "os" else _cdiv(m, mb)
    elem = 1 if requant else 4
    read = m * k * n_groups + k * n * m_groups + (3 * nt * 4 * c if requant else 0)
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
    return {"compute": beats, "dram_read": read, "dram_write": write, "spad_read": spad_read,
            "spad_write": read, "acc_read": acc_read, "acc_write": acc_write}


@lru_cache(maxsize=4096)
def gemm_cost(cfg: EngineConfig, m: int, k: int, n: int, *, requant: bool = False,
              ideal_memory: bool = False) -> GemmCost:
    """The cost of the GEMM as :func:`mapping.gemm.plan_gemm` would schedule it (memoized).

    With ``ideal_memory`` loads and stores take no time (unbounded bandwidth, no latency): the
    array and its fill and drain alone. Raises :class:`~mapping.gemm.PlanError` for a shape
    this configuration cannot hold.
    """
    check_gemm(cfg, m, k, n, requant)
    options = sorted((_estimate(cfg, m, k, n, *b), b) for b in _candidates(cfg, m, k, n))
    if not options:
        raise PlanError(f"no tiling of a {m}x{k}x{n} GEMM fits {cfg.label}'s scratchpads "
                        f"({cfg.spad_kib} KiB) and accumulator ({cfg.acc_kib} KiB)")
    best = None
    for _, b in options[:SHORTLIST]:
        cycles, insns = _simulate(cfg, m, k, n, b, requant, False)
        key = (cycles, insns)
        if best is None or key < best[0]:
            best = (key, b)
    assert best is not None
    (cycles, insns), blocking = best
    if ideal_memory:
        cycles, _ = _simulate(cfg, m, k, n, blocking, requant, True)
    t = _traffic(cfg, m, k, n, blocking, requant)
    return GemmCost(m=m, k=k, n=n, blocking=blocking, cycles=cycles,
                    compute_cycles=t["compute"], macs=m * k * n,
                    dram_read_bytes=t["dram_read"], dram_write_bytes=t["dram_write"],
                    spad_read_bytes=t["spad_read"], spad_write_bytes=t["spad_write"],
                    acc_read_bytes=t["acc_read"], acc_write_bytes=t["acc_write"],
                    instructions=insns)
