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
- Q (requantization parameters), for each block of ``cols`` output channels, the rows of
  :data:`rtl.isa.Q_BLOCK` (bias, multiplier, shift), ``cols`` int32 each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from rtl import isa
from rtl.config import ConfigError, EngineConfig
from rtl.engine import EngineTiming, check_engine
from rtl.isa import Q_BLOCK_ROWS, Insn, Spad, q_block_row

from .program import (
    ProgramTiming,
    Rec,
    compute_record,
    load_record,
    mark,
    record,
    store_record,
)

__all__ = ["Choice", "GemmLayout", "GemmPlan", "PlanError", "Schedule", "plan_gemm",
           "search_blocking"]


#: blockings scheduled in full and compared with the cycle model
SHORTLIST = 6
#: groups with at least this many K chunks are replayed chunk by chunk
CHUNK_PIECES = 4


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
    #: Shiftmax's x0 when the stores run a softmax over each whole row of C (None: none)
    softmax_x0: int | None = None
    #: the softmax masks element j of row i unless j <= i (causal attention)
    softmax_causal: bool = False

    @property
    def softmax(self) -> bool:
        return self.softmax_x0 is not None

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
    size = _align(q_addr + (q_bytes(cfg, n) if requant else 0))
    return GemmLayout(a_addr=a_addr, lda=lda, a_transposed=os_, b_addr=b_addr, ldb=ldb,
                      c_addr=c_addr, ldc=ldc, c_elem_bytes=c_bytes, q_addr=q_addr, size=size)


def q_bytes(cfg: EngineConfig, n: int) -> int:
    """Bytes of requantization parameters for ``n`` output channels: a Q block per
    ``cols`` of them."""
    return q_rows(cfg, n) * 4 * cfg.cols


def q_rows(cfg: EngineConfig, n: int) -> int:
    """Scratchpad Q rows the parameters of ``n`` output channels take."""
    return Q_BLOCK_ROWS * -(-n // cfg.cols)


@lru_cache(maxsize=256)
def _store_delay(cfg: EngineConfig, requant: bool) -> int:
    """A STORE's cycles from being taken to its first beat (:class:`rtl.store.StoreTiming`)."""
    return EngineTiming(cfg).store.request_delay(isa.store(0, 1, 1, 0, 0, requant))


def _candidates(cfg: EngineConfig, m: int, k: int, n: int, softmax: bool = False):
    """Every blocking that fits; with ``softmax`` only those whose groups hold whole rows of
    C (all of N), which a softmax store needs."""
    g = isa.geometry(cfg)
    r, c = cfg.rows, cfg.cols
    half_a, half_b, half_acc = g.a_rows // 2, g.b_rows // 2, g.acc_rows // 2
    mt, nt = -(-m // r), -(-n // c)
    powers = [1 << i for i in range(12)]
    nbs = [nt] if softmax else [p for p in powers if p <= nt] or [1]
    if cfg.dataflow == "os":
        for mb in [p for p in powers if p <= mt] or [1]:
            for nb in nbs:
                if mb * nb * r > half_acc:
                    continue
                kc_max = min(k, half_a // mb, half_b // nb)
                if kc_max < 1:
                    continue
                yield mb, nb, kc_max
    else:
        kt = -(-k // r)
        for mc in sorted({min(m, x) for x in (16, 32, 64, 128, 256, 512, 1024, 2048)}):
            for nb in nbs:
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
    check_engine(cfg)   # what the RTL cannot build, refused as the generator refuses it
    g = isa.geometry(cfg)
    if requant and q_rows(cfg, n) > g.q_rows:
        raise PlanError(f"N = {n} needs {q_rows(cfg, n)} requantization parameter rows; "
                        f"scratchpad Q holds {g.q_rows}")
    layout = _layout(cfg, m, k, n, requant)
    if layout.size > 1 << isa.ADDR_BITS:
        raise PlanError(f"operands of {layout.size} bytes exceed the 32-bit address space")
    return layout


def plan_gemm(cfg: EngineConfig, m: int, k: int, n: int, *, requant: bool = False,
              zero_point: int = 0, relu: bool = False,
              blocking: tuple[int, int, int] | None = None,
              softmax_x0: int | None = None, softmax_causal: bool = False) -> GemmPlan:
    """Schedule ``C[M x N] = A[M x K] @ B[K x N]`` on ``cfg``; returns program and layout.

    ``blocking`` forces (mb, nb, kc) instead of searching (os: mb, nb in array tiles; ws: mb is
    rows of A per group). ``softmax_x0``: C's rows leave through the softmax stage (Shiftmax of
    the requantized logits with this x0; ``requant`` must be set, and a group holds whole rows);
    ``softmax_causal``: element j of row i takes part only if j <= i.
    Raises :class:`PlanError` for shapes this engine cannot hold.
    """
    from .program import program_cycles

    softmax = softmax_x0 is not None
    if softmax:
        if not requant:
            raise PlanError("a softmax GEMM requantizes its logits to int8: requant must be set")
        if isinstance(softmax_x0, bool) or not isinstance(softmax_x0, int) \
                or not isa.X0_MIN <= softmax_x0 <= -1:
            raise PlanError(f"softmax x0 must be an integer in [{isa.X0_MIN}, -1], not "
                            f"{softmax_x0!r}")
    if softmax_causal and not softmax:
        raise PlanError("a causal mask is for a softmax: give softmax_x0 too")
    if blocking is None:
        blocking = search_blocking(cfg, m, k, n, requant, softmax=softmax).blocking
    layout = check_gemm(cfg, m, k, n, requant)
    plan = GemmPlan(config=cfg, m=m, k=k, n=n, requant=requant, mb=blocking[0],
                    nb=blocking[1], kc=blocking[2], layout=layout, zero_point=zero_point,
                    relu=relu, softmax_x0=softmax_x0, softmax_causal=softmax_causal)
    if softmax and plan.nb != -(-n // cfg.cols):
        raise PlanError(f"a softmax GEMM's groups must hold whole rows: nb must be "
                        f"{-(-n // cfg.cols)} tiles, not {plan.nb}")
    plan.program = Schedule(plan).program()
    isa.assemble(plan.program, cfg)  # every instruction checked against the engine
    plan.estimate = program_cycles(cfg, plan.program).cycles
    return plan


@dataclass(frozen=True)
class Choice:
    """The blocking the search picked, the cycles of each blocking it costed, and why."""

    blocking: tuple[int, int, int]
    cycles: int
    compute_cycles: int
    instructions: int
    #: (blocking, quick estimate, outcome), best quick estimate first; outcome is the cycles,
    #: ``-1`` for a replay stopped once it was sure to be slower, None if not replayed
    considered: tuple[tuple[tuple[int, int, int], int, int | None], ...]

    def explain(self, cfg: EngineConfig) -> str:
        """One line on the choice: what was compared and by how much this one won."""
        replayed = [(b, c) for b, _, c in self.considered if c is not None]
        unit = "tiles" if cfg.dataflow == "os" else "rows"
        what = f"mb={self.blocking[0]} {unit}, nb={self.blocking[1]} tiles, kc={self.blocking[2]}"
        if len(self.considered) < 2:
            return f"{what}: the only blocking that fits"
        text = (f"{what}: fastest of {len(replayed)} blockings replayed (best {len(replayed)} "
                f"of {len(self.considered)} that fit, by a quick estimate)")
        full = [(c, b) for b, c in replayed if c is not None and c >= 0 and b != self.blocking]
        if full:
            c, b = min(full)
            text += f"; next best {b} takes {100 * (c - self.cycles) / self.cycles:+.1f}% cycles"
        stopped = sum(1 for _, c in replayed if c == -1)
        if stopped:
            text += f"; {stopped} stopped early, sure to be slower"
        return text


def search_blocking(cfg: EngineConfig, m: int, k: int, n: int, requant: bool,
                    shortlist: int = SHORTLIST, *, softmax: bool = False) -> Choice:
    """Rank every blocking that fits by a quick formula, replay the best few through the
    cycle model (:meth:`Schedule.timing`, exact) and keep the fastest (ties: fewer
    instructions). Deterministic. ``softmax``: only blockings whose groups hold whole rows."""
    layout = check_gemm(cfg, m, k, n, requant)
    options = sorted((_estimate(cfg, m, k, n, *b), b)
                     for b in _candidates(cfg, m, k, n, softmax))
    if softmax and not options:
        raise PlanError(f"a softmax over rows of {n} needs {-(-n // cfg.cols)} tiles of "
                        f"{cfg.rows} rows in half of {cfg.label}'s accumulator "
                        f"({cfg.acc_kib} KiB), with room in the scratchpads: they do not fit")
    if not options:
        raise PlanError(f"no tiling of a {m}x{k}x{n} GEMM fits {cfg.label}'s scratchpads "
                        f"({cfg.spad_kib} KiB) and accumulator ({cfg.acc_kib} KiB)")
    # Best first: always advance the replay with the lowest bound on its cycles; a replay
    # whose bound passes the cycles of a finished one cannot win and is dropped. The result is
    # the fastest of the shortlist (ties: fewer instructions, then the better quick estimate),
    # found without replaying every candidate to the end.
    shortlisted = [b for _, b in options[:shortlist]]
    runs = {}
    for b in shortlisted:
        plan = GemmPlan(config=cfg, m=m, k=k, n=n, requant=requant, mb=b[0], nb=b[1],
                        kc=b[2], layout=layout, softmax_x0=-1 if softmax else None)
        runs[b] = [0, Schedule(plan).steps()]
    finished: dict[tuple[int, int, int], ProgramTiming] = {}
    costed: dict[tuple[int, int, int], int | None] = {}
    best_cycles = None
    while runs:
        b = min(runs, key=lambda x: (runs[x][0], shortlisted.index(x)))
        try:
            runs[b][0] = next(runs[b][1])
        except StopIteration as done:
            del runs[b]
            finished[b] = done.value
            costed[b] = done.value.cycles
            if best_cycles is None or done.value.cycles < best_cycles:
                best_cycles = done.value.cycles
        if best_cycles is not None:
            for x in [x for x in runs if runs[x][0] > best_cycles]:
                del runs[x]
                costed[x] = None
    best = min(((t.cycles, t.instructions), shortlisted.index(b), b, t)
               for b, t in finished.items())
    best = (best[0], best[2], best[3])
    (cycles, insns), b, t = best
    return Choice(blocking=b, cycles=cycles, compute_cycles=t.compute_cycles,
                  instructions=insns,
                  considered=tuple((ob, est, -1 if ob in costed and costed[ob] is None
                                    else costed.get(ob)) for est, ob in options))


def _prologue(plan: GemmPlan) -> list[Insn]:
    cfg, lay = plan.config, plan.layout
    if not plan.requant:
        return []
    head = [isa.config(zero_point=plan.zero_point, relu=plan.relu)]
    if plan.softmax:
        head.append(isa.config_softmax(plan.softmax_x0))
    return head + [isa.load(Spad.Q, 0, q_rows(cfg, plan.n), 4 * cfg.cols, lay.q_addr,
                            4 * cfg.cols)]


class Schedule:
    """The program of a plan as pieces: K chunks of groups of output tiles, in program order.

    The program is ``head + piece(0) + piece(1) + ...``: the head is the requantization
    prologue and the first chunk's loads; for each chunk t a piece holds the *next* chunk's
    loads followed by chunk t's computes (so the dispatcher reaches chunk t+1's loads before
    chunk t's computes and loading overlaps computing) and, after a group's last chunk, the
    group's stores. A piece is one chunk or, for groups of few chunks, a whole group. Each
    queue still sees its own instructions in chunk order, so the tokens pair up. Every piece
    after the first opens its loads with one that waits for a token (``pop_next``), and every
    group's stores open with one that does (``pop_prev``): the promise that lets the cycle
    model settle the memory port between pieces.

    :meth:`key` says what a piece's timing depends on; pieces with equal keys differ only in
    addresses, which lets the cycle model skip repeating runs of them.
    """

    def __init__(self, plan: GemmPlan):
        self.plan = plan
        cfg = plan.config
        r, c = cfg.rows, cfg.cols
        m, k, n = plan.m, plan.k, plan.n
        self.os = cfg.dataflow == "os"
        g = isa.geometry(cfg)
        self.halves = (g.a_rows // 2, g.b_rows // 2, g.acc_rows // 2)
        mt, nt = -(-m // r), -(-n // c)
        n_groups = list(range(0, nt, plan.nb))
        if self.os:
            m_groups = list(range(0, mt, plan.mb))
        else:
            m_groups = list(range(0, m, plan.mb))
        self.m_groups, self.n_groups = m_groups, n_groups
        self.groups = [(gm, gn) for gm in m_groups for gn in n_groups]
        #: groups per row of the output: a natural period of the pieces
        self.row = len(n_groups)
        self.chunks = list(range(0, k, plan.kc))
        # a group's tile sizes depend only on whether it is the last of its row or column
        self._shapes = {(lm, ln): self._shape(m_groups[-1 if lm else 0],
                                              n_groups[-1 if ln else 0])
                        for lm in (False, True) for ln in (False, True)}
        self._ks = [min(plan.kc, k - k0) for k0 in self.chunks]
        #: a piece is one K chunk of a group when groups have many chunks, else a whole group
        #: (fewer, larger pieces replay faster when there is little to skip inside a group)
        self.per_piece = 1 if len(self.chunks) >= CHUNK_PIECES else len(self.chunks)
        self.pieces = len(self.groups) * len(self.chunks) // self.per_piece

    def shape(self, i: int) -> tuple:
        """Group ``i``'s tile sizes: (rows of each M tile or the A rows, columns of each
        N tile)."""
        gm, gn = divmod(i, self.row)
        return self._shapes[gm == len(self.m_groups) - 1, gn == self.row - 1]

    def key(self, i: int) -> tuple:
        """What piece ``i``'s timing depends on: its group's tile sizes, its chunks' K, where
        they sit in the group, the chunk whose loads it carries last, and whether it is among
        the first chunks and groups (whose tokens differ). Pieces with equal keys differ only
        in addresses."""
        chunks, per = len(self.chunks), self.per_piece
        first = i * per
        g, ci = divmod(first, chunks)
        nxt = first + per
        if nxt < len(self.groups) * chunks:
            ng, nci = divmod(nxt, chunks)
            following = (self.shape(ng), self._ks[nci], min(nxt, 2))
        else:
            following = None
        return (self.shape(g), tuple(self._ks[ci:ci + per]), ci == 0,
                ci + per == chunks, min(g, 2), following)

    def _shape(self, gm: int, gn: int) -> tuple:
        plan, cfg = self.plan, self.plan.config
        nt = -(-plan.n // cfg.cols)
        cols = tuple(min(cfg.cols, plan.n - tj * cfg.cols)
                     for tj in range(gn, min(gn + plan.nb, nt)))
        if self.os:
            mt = -(-plan.m // cfg.rows)
            rows = tuple(min(cfg.rows, plan.m - ti * cfg.rows)
                         for ti in range(gm, min(gm + plan.mb, mt)))
        else:
            rows = (min(plan.mb, plan.m - gm),)
        return rows, cols

    def work(self) -> tuple[int, int]:
        """(array cycles, memory beats) the whole program needs at the least: each compute
        holds the array for at least its extent (``os``: and a tile's drain, ``rows``), and
        the memory port takes one beat per cycle. For :meth:`timing`'s bound."""
        cfg, plan = self.plan.config, self.plan
        r, w = cfg.rows, cfg.mem_bytes_per_cycle
        elem = 1 if plan.requant else 4
        ks = [min(plan.kc, plan.k - k0) for k0 in self.chunks]
        per_shape: dict[tuple, tuple[int, int]] = {}
        array = beats = 0
        if plan.requant:
            beats += q_rows(cfg, plan.n) * (-(-4 * cfg.cols // w))
        last_m, last_n = len(self.m_groups) - 1, self.row - 1
        counts = {(False, False): last_m * last_n, (False, True): last_m,
                  (True, False): last_n, (True, True): 1}
        for where, shape in self._shapes.items():
            times = counts[where]
            if not times:
                continue
            if shape not in per_shape:
                rows, cols = shape
                a = b = 0
                for kl in ks:
                    if self.os:
                        a += len(rows) * len(cols) * max(kl, r)
                        b += sum(kl * -(-x // w) for x in rows)
                        b += sum(kl * -(-y // w) for y in cols)
                    else:
                        kt = [min(r, kl - x) for x in range(0, kl, r)]
                        a += len(cols) * len(kt) * rows[0]
                        b += sum(rows[0] * -(-x // w) for x in kt)
                        b += sum(x * -(-y // w) for y in cols for x in kt)
                if self.os:
                    b += sum(x * -(-(y * elem) // w) for x in rows for y in cols)
                else:
                    b += sum(rows[0] * -(-(y * elem) // w) for y in cols)
                per_shape[shape] = (a, b)
            a, b = per_shape[shape]
            array += a * times
            beats += b * times
        return array, beats

    def head(self) -> list[Insn]:
        return _prologue(self.plan) + self._loads(0, 0)

    def piece(self, i: int) -> list[Insn]:
        """Piece ``i``: for each of its chunks, the next chunk's loads and this chunk's
        computes; after a group's last chunk, the group's stores."""
        chunks = len(self.chunks)
        total = len(self.groups) * chunks
        out: list[Insn] = []
        for t in range(i * self.per_piece, (i + 1) * self.per_piece):
            g, ci = divmod(t, chunks)
            if t + 1 < total:
                out += self._loads(*divmod(t + 1, chunks))
            out += self._computes(g, ci)
            if ci == chunks - 1:
                out += self._stores(g)
        return out

    def program(self) -> list[Insn]:
        prog = self.head()
        for i in range(self.pieces):
            prog += self.piece(i)
        return prog

    # -- one chunk's loads and computes, one group's stores ---------------------------------

    # -- the same pieces as timing records only (no addresses): what the cycle model reads --

    def records(self, i: int) -> tuple[list[Rec], list[int]]:
        """Piece ``i`` as :class:`~mapping.program.Replay` records and its count per queue:
        the instructions :meth:`piece` makes, less what their timing does not depend on
        (tests check that both replay to the same cycles)."""
        chunks = len(self.chunks)
        total = len(self.groups) * chunks
        recs: list[Rec] = []
        for t in range(i * self.per_piece, (i + 1) * self.per_piece):
            g, ci = divmod(t, chunks)
            if t + 1 < total:
                recs += self._load_records(*divmod(t + 1, chunks))
            recs += self._compute_records(g, ci)
            if ci == chunks - 1:
                recs += self._store_records(g)
        per_queue = [0, 0, 0]
        for rec in recs:
            per_queue[rec.queue] += 1
        return recs, per_queue

    def _load_records(self, group_no: int, ci: int) -> list[Rec]:
        cfg = self.plan.config
        r, w = cfg.rows, cfg.mem_bytes_per_cycle
        rows, cols = self.shape(group_no)
        kl = self._ks[ci]
        if self.os:
            beats = [kl * -(-x // w) for x in rows] + [kl * -(-y // w) for y in cols]
        else:
            kt = [min(r, kl - x) for x in range(0, kl, r)]
            beats = [rows[0] * -(-x // w) for x in kt] + [x * -(-y // w) for y in cols
                                                          for x in kt]
        first, last = self._load_flags(group_no * len(self.chunks) + ci)
        return mark([load_record(b) for b in beats], first, last)

    def _compute_records(self, group_no: int, ci: int) -> list[Rec]:
        rows, cols = self.shape(group_no)
        kl = self._ks[ci]
        if self.os:
            n, extent = len(rows) * len(cols), kl
        else:
            n, extent = len(cols) * -(-kl // self.plan.config.rows), rows[0]
        first, last = self._compute_flags(group_no, ci)
        return mark([compute_record(extent)] * n, first, last)

    def _store_records(self, group_no: int) -> list[Rec]:
        cfg, plan = self.plan.config, self.plan
        if plan.softmax:   # each store's delay depends on its rows and segments
            return [record(cfg, insn) for insn in self._stores(group_no)]
        w = cfg.mem_bytes_per_cycle
        elem = 1 if plan.requant else 4
        rows, cols = self.shape(group_no)
        if self.os:
            beats = [x * -(-(y * elem) // w) for x in rows for y in cols]
        else:
            beats = [rows[0] * -(-(y * elem) // w) for y in cols]
        d = _store_delay(cfg, plan.requant)
        return mark([store_record(b, d) for b in beats], *self._store_flags())

    # -- the dependency flags of each synchronization unit, for instructions and records ----

    def _load_flags(self, chunk_no: int) -> tuple[set[str], set[str]]:
        """A chunk's loads wait for the buffer two chunks back to be free, and say when their
        rows are in."""
        return {"pop_next"} if chunk_no >= 2 else set(), {"push_next"}

    def _compute_flags(self, group_no: int, ci: int) -> tuple[set[str], set[str]]:
        """A chunk's computes wait for its operands (and, opening a group, for the accumulator
        half two groups back to be stored); they free the operands, and the group's last chunk
        says its results are in."""
        first = {"pop_prev"} | ({"pop_next"} if ci == 0 and group_no >= 2 else set())
        last = {"push_prev"} | ({"push_next"} if ci == len(self.chunks) - 1 else set())
        return first, last

    def _store_flags(self) -> tuple[set[str], set[str]]:
        """A group's stores wait for its results and free its accumulator half."""
        return {"pop_prev"}, {"push_prev"}

    def _tiles_n(self, gn: int) -> range:
        nt = -(-self.plan.n // self.plan.config.cols)
        return range(gn, min(gn + self.plan.nb, nt))

    def _loads(self, group_no: int, ci: int) -> list[Insn]:
        plan, cfg, lay = self.plan, self.plan.config, self.plan.layout
        r, c = cfg.rows, cfg.cols
        m, k, n, kc = plan.m, plan.k, plan.n, plan.kc
        half_a, half_b, _ = self.halves
        chunk_no = group_no * len(self.chunks) + ci
        k0 = self.chunks[ci]
        a_base, b_base = (chunk_no % 2) * half_a, (chunk_no % 2) * half_b
        gm, gn = self.groups[group_no]
        loads = []
        if self.os:
            kl = min(kc, k - k0)
            mt = -(-m // r)
            for x, ti in enumerate(range(gm, min(gm + plan.mb, mt))):
                i0 = ti * r
                loads.append(isa.load(Spad.A, a_base + x * kc, kl, min(r, m - i0),
                                      lay.a_addr + k0 * lay.lda + i0, lay.lda))
            for y, tj in enumerate(self._tiles_n(gn)):
                j0 = tj * c
                loads.append(isa.load(Spad.B, b_base + y * kc, kl, min(c, n - j0),
                                      lay.b_addr + k0 * lay.ldb + j0, lay.ldb))
        else:
            mc = plan.mb
            ml = min(mc, m - gm)
            ktiles = list(range(k0, min(k0 + kc, k), r))
            for kk, kt0 in enumerate(ktiles):
                loads.append(isa.load(Spad.A, a_base + kk * mc, ml, min(r, k - kt0),
                                      lay.a_addr + gm * lay.lda + kt0, lay.lda))
            for y, tj in enumerate(self._tiles_n(gn)):
                j0 = tj * c
                for kk, kt0 in enumerate(ktiles):
                    loads.append(isa.load(Spad.B, b_base + (y * len(ktiles) + kk) * r,
                                          min(r, k - kt0), min(c, n - j0),
                                          lay.b_addr + kt0 * lay.ldb + j0, lay.ldb))
        return mark(loads, *self._load_flags(chunk_no))

    def _computes(self, group_no: int, ci: int) -> list[Insn]:
        plan, cfg = self.plan, self.plan.config
        r = cfg.rows
        m, k, kc = plan.m, plan.k, plan.kc
        half_a, half_b, half_acc = self.halves
        chunk_no = group_no * len(self.chunks) + ci
        k0 = self.chunks[ci]
        a_base, b_base = (chunk_no % 2) * half_a, (chunk_no % 2) * half_b
        acc_base = (group_no % 2) * half_acc
        gm, gn = self.groups[group_no]
        tiles_n = self._tiles_n(gn)
        computes = []
        if self.os:
            kl = min(kc, k - k0)
            mt = -(-m // r)
            tiles_m = range(gm, min(gm + plan.mb, mt))
            for x, _ti in enumerate(tiles_m):
                for y, _tj in enumerate(tiles_n):
                    tile = x * len(tiles_n) + y
                    computes.append(isa.compute(a_base + x * kc, b_base + y * kc,
                                                acc_base + tile * r, kl, ci > 0))
        else:
            mc = plan.mb
            ml = min(mc, m - gm)
            ktiles = list(range(k0, min(k0 + kc, k), r))
            for y, _tj in enumerate(tiles_n):
                for kk, _kt0 in enumerate(ktiles):
                    computes.append(isa.compute(a_base + kk * mc,
                                                b_base + (y * len(ktiles) + kk) * r,
                                                acc_base + y * mc, ml, ci > 0 or kk > 0))
        return mark(computes, *self._compute_flags(group_no, ci))

    def _stores(self, group_no: int) -> list[Insn]:
        plan, cfg, lay = self.plan, self.plan.config, self.plan.layout
        r, c = cfg.rows, cfg.cols
        m, n = plan.m, plan.n
        acc_base = (group_no % 2) * self.halves[2]
        gm, gn = self.groups[group_no]
        stores = []
        if plan.softmax:
            return mark(self._softmax_stores(group_no), *self._store_flags())
        if self.os:
            mt = -(-m // r)
            tiles_n = self._tiles_n(gn)
            for x, ti in enumerate(range(gm, min(gm + plan.mb, mt))):
                for y, tj in enumerate(tiles_n):
                    tile = x * len(tiles_n) + y
                    i0, j0 = ti * r, tj * c
                    stores.append(isa.store(acc_base + tile * r, min(r, m - i0),
                                            min(c, n - j0),
                                            lay.c_addr + i0 * lay.ldc + j0 * lay.c_elem_bytes,
                                            lay.ldc, plan.requant,
                                            q_row=q_block_row(tj, "bias")))
        else:
            ml = min(plan.mb, m - gm)
            for y, tj in enumerate(self._tiles_n(gn)):
                j0 = tj * c
                stores.append(isa.store(acc_base + y * plan.mb, ml, min(c, n - j0),
                                        lay.c_addr + gm * lay.ldc + j0 * lay.c_elem_bytes,
                                        lay.ldc, plan.requant,
                                        q_row=q_block_row(tj, "bias")))
        return mark(stores, *self._store_flags())

    def _softmax_stores(self, group_no: int) -> list[Insn]:
        """A group's stores when C's rows leave through the softmax stage: one STORE per
        ``rows`` rows of C, each stored row its ``nt`` tiles side by side (segments)."""
        plan, cfg, lay = self.plan, self.plan.config, self.plan.layout
        r, c = cfg.rows, cfg.cols
        m, n = plan.m, plan.n
        acc_base = (group_no % 2) * self.halves[2]
        gm, gn = self.groups[group_no]
        nt = len(self._tiles_n(gn))
        last = n - (nt - 1) * c
        q_row = q_block_row(0, "bias")
        stores = []
        if self.os:
            for x, ti in enumerate(range(gm, min(gm + plan.mb, -(-m // r)))):
                i0 = ti * r
                stores.append(isa.store(acc_base + x * nt * r, min(r, m - i0), last,
                                        lay.c_addr + i0 * lay.ldc, lay.ldc, True, q_row=q_row,
                                        segs=nt, seg_stride=r, softmax=True,
                                        causal=plan.softmax_causal, mask_row=i0))
        else:
            ml = min(plan.mb, m - gm)
            for i in range(0, ml, r):
                stores.append(isa.store(acc_base + i, min(r, ml - i), last,
                                        lay.c_addr + (gm + i) * lay.ldc, lay.ldc, True,
                                        q_row=q_row, segs=nt, seg_stride=plan.mb,
                                        softmax=True, causal=plan.softmax_causal,
                                        mask_row=gm + i))
        return stores

    def timing(self, ideal_memory: bool = False):
        """The program's :class:`~mapping.program.ProgramTiming`, skipping repeated groups.

        ``ideal_memory``: loads and stores finish the cycle they start (compute alone)."""
        from .program import stream_cycles

        return stream_cycles(self.plan.config, self.head(), self.pieces, self.key, self.piece,
                             self._periods(), ideal_memory=ideal_memory, promise=(True, True),
                             records=self.records)

    def steps(self):
        """:func:`mapping.program.stream_steps` of the program: yields lower bounds on its
        cycles as it goes, returns its timing."""
        from .program import stream_steps

        return stream_steps(self.plan.config, self.head(), self.pieces, self.key, self.piece,
                            self._periods(), work=self.work(), promise=(True, True),
                            records=self.records)

    def _periods(self) -> list[int]:
        c = len(self.chunks) // self.per_piece   # pieces per group
        return sorted({1, 2, c, 2 * c, c * self.row, 2 * c * self.row})
