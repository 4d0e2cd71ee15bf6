"""Cycle model of ISA programs on the engine, instruction by instruction.

Each unit's timing is written as formulas from the engine's parameters and the latencies its
blocks state (``TileTiming``, ``Requantizer.latency``, the memory latency). For one instruction
alone the model equals the RTL exactly; for whole programs :func:`program_cycles` replays the
dispatcher, the three queues with their dependency tokens, and the memory port that loads and
stores share (round robin), as an event model.

Times are cycles from the first cycle the engine sees the program (cycle 0).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from rtl import isa
from rtl.config import EngineConfig
from rtl.engine import EngineTiming
from rtl.isa import Insn, Op
from rtl.tile import TileTiming

from .timing import tile_stream_cycles

__all__ = ["DISPATCH_LATENCY", "ProgramTiming", "Replay", "instruction_cycles", "program_cycles",
           "stream_cycles",
           "stream_steps"]

DISPATCH_LATENCY = EngineTiming.dispatch_latency
COMPUTE_ISSUE_LATENCY = EngineTiming.compute_issue_latency
STORE_SETUP = EngineTiming.store_setup
LOAD_WRITE = EngineTiming.load_write_latency
STORE_READ = EngineTiming.store_read_latency
STORE_PARAMS = EngineTiming.store_params
QUEUE_DEPTH = EngineTiming.queue_depth
REQUANT_LATENCY = EngineTiming.requant_latency
#: writeback cycles beyond the first (the formulas below count one writeback cycle)
WRITEBACK_EXTRA = EngineTiming.writeback_latency - 1


def _beats(length: int, w: int) -> int:
    return -(-length // w)


def _mem_latency(cfg: EngineConfig) -> int:
    return max(1, cfg.mem_latency)


def load_beats(cfg: EngineConfig, insn: Insn) -> int:
    return insn.args["rows"] * _beats(insn.args["length"], cfg.mem_bytes_per_cycle)


def store_beats(cfg: EngineConfig, insn: Insn) -> int:
    a = insn.args
    row = a["cols"] * (1 if a["requant"] else 4)
    return a["rows"] * _beats(row, cfg.mem_bytes_per_cycle)


def instruction_cycles(cfg: EngineConfig, insn: Insn) -> int:
    """Cycles a program of this one instruction takes, from start to ``done`` (exact).

    That is the dispatch latency, the unit's own span, and one cycle for the engine to report
    idle. Spans: LOAD ``beats + mem_latency + load_write_latency``; COMPUTE the tile's stream
    time plus issue latency and writeback; STORE setup, parameter reads and the requantizer if
    it requantizes, then one cycle per memory beat; CONFIG one cycle.
    """
    return DISPATCH_LATENCY + _span(cfg, insn) + 1


def _span(cfg: EngineConfig, insn: Insn) -> int:
    a = insn.args
    if insn.op == Op.LOAD:
        return load_beats(cfg, insn) + _mem_latency(cfg) + LOAD_WRITE
    if insn.op == Op.COMPUTE:
        return (tile_stream_cycles(cfg, [a["extent"]]).cycles + COMPUTE_ISSUE_LATENCY
                + EngineTiming.writeback_latency)
    if insn.op == Op.STORE:
        params = STORE_PARAMS + REQUANT_LATENCY if a["requant"] else 0
        return STORE_SETUP + STORE_READ + 2 + params + store_beats(cfg, insn)
    return 1


@dataclass
class ProgramTiming:
    """Predicted cycles of a program and where the units spent them."""

    cycles: int
    compute_cycles: int          # cycles the array accepts operand beats
    load_beats: int
    store_beats: int
    #: cycles a load or store had a beat ready but the memory port served the other unit
    port_wait_cycles: int = 0
    instructions: int = 0
    per_insn: list[tuple[int, int]] = field(default_factory=list)  # (start, finish) per insn


#: first cycle a started LOAD requests memory, after the cycle it takes the instruction
LOAD_REQUEST_DELAY = 1
#: the unit is free again this many cycles after its last memory beat is accepted
LOAD_RELEASE = 1
STORE_RELEASE = 2


def store_delay(requant: bool) -> int:
    """:func:`store_request_delay` of a STORE that does (or does not) requantize."""
    return STORE_SETUP + STORE_READ + 1 + (STORE_PARAMS + REQUANT_LATENCY if requant else 0)


def store_request_delay(insn: Insn) -> int:
    """Cycles from a STORE being taken to its first beat asking for the memory port.

    The FSM step, the accumulator's read and the row's register before it leaves
    (``store_setup + store_read_latency + 1``), plus the parameter reads and the requantizer's
    pipeline when it requantizes.
    """
    return store_delay(bool(insn.args["requant"]))


class _Port:
    """The memory port's round-robin arbiter between the load unit and the store unit.

    Each unit, while it has beats to send, asks every cycle from its ``ready`` cycle on; the
    port grants one beat per cycle. When both ask, the unit that was not served last wins, so
    their beats alternate; when one asks alone it gets every cycle. After reset loads win.
    """

    __slots__ = ("free", "last_load", "wait")

    def __init__(self) -> None:
        self.free = 0            # next cycle the port can grant
        self.last_load = False   # whether the last granted beat was a load's
        self.wait = 0            # cycles both units asked (one of them waited)

    def run(self, load: list[int] | None, store: list[int] | None,
            horizon: int | None = None) -> tuple[str | None, int]:
        """Grant beats until one unit's instruction has all its beats accepted.

        ``load``/``store`` are ``[ready, beats_left]`` (updated in place) or ``None`` for a unit
        with nothing to send. Returns which unit finished and the cycle of its last beat. With
        one unit and a ``horizon``, grants no cycle from the horizon on: if the instruction is
        not done by then, returns ``(None, 0)``.
        """
        if store is None:
            return self._alone("load", load, horizon)
        if load is None:
            return self._alone("store", store, horizon)
        if max(self.free, load[0]) + load[1] <= max(self.free, store[0]):
            return self._alone("load", load)
        if max(self.free, store[0]) + store[1] <= max(self.free, load[0]):
            return self._alone("store", store)
        # Both ask before either is done: the earlier one runs alone until the other asks.
        t_l, t_s = max(self.free, load[0]), max(self.free, store[0])
        t = max(t_l, t_s)
        if t_l < t_s:
            load[1] -= t_s - t_l
            self.last_load = True
        elif t_s < t_l:
            store[1] -= t_l - t_s
            self.last_load = False
        first, second = (store, load) if self.last_load else (load, store)
        names = ("store", "load") if self.last_load else ("load", "store")
        n1, n2 = first[1], second[1]
        if n1 <= n2:
            # first's beats at t, t+2, ...; second's at t+1, t+3, ...
            last = t + 2 * (n1 - 1)
            second[1] = n2 - (n1 - 1)
            second[0] = last + 1
            self.free = last + 1
            self.last_load = names[0] == "load"
            self.wait += 2 * n1 - 1
            return names[0], last
        last = t + 2 * n2 - 1
        first[1] = n1 - n2
        first[0] = last + 1
        self.free = last + 1
        self.last_load = names[1] == "load"
        self.wait += 2 * n2
        return names[1], last

    def _alone(self, name: str, req: list[int],
               horizon: int | None = None) -> tuple[str | None, int]:
        first = max(self.free, req[0])
        last = first + req[1] - 1
        if horizon is not None and last >= horizon:
            # grant only the cycles before the horizon; the unit keeps asking from there
            granted = max(0, horizon - first)
            if granted:
                req[1] -= granted
                self.free = horizon
                self.last_load = name == "load"
            return None, 0
        self.free = last + 1
        self.last_load = name == "load"
        return name, last


NEVER = -(1 << 62)   # a time that never binds a max



# Instruction records, made once when an instruction is fed:
# (kind, size, delay, pop1, pop2, push1, push2, insn, seq). kind: 0 LOAD, 1 COMPUTE, 2 STORE,
# 3 CONFIG; size: memory beats (LOAD, STORE) or extent (COMPUTE); delay: a STORE's cycles to
# its first beat; the flags, per kind: LOAD pops c2l / pushes l2c; COMPUTE pops l2c, s2c /
# pushes c2l, c2s; STORE pops c2s / pushes s2c; CONFIG takes no tokens (the RTL ignores them).
_KIND = {Op.LOAD: 0, Op.COMPUTE: 1, Op.STORE: 2, Op.CONFIG: 3}
_QUEUE = (0, 1, 2, 2)


def _record(cfg: EngineConfig, insn: Insn, seq: int) -> tuple:
    d = insn.deps
    kind = _KIND[insn.op]
    if kind == 0:
        return (0, load_beats(cfg, insn), 0, "pop_next" in d, False, "push_next" in d, False,
                insn, seq)
    if kind == 1:
        return (1, insn.args["extent"], 0, "pop_prev" in d, "pop_next" in d, "push_prev" in d,
                "push_next" in d, insn, seq)
    if kind == 2:
        return (2, store_beats(cfg, insn), store_request_delay(insn), "pop_prev" in d, False,
                "push_prev" in d, False, insn, seq)
    return (3, 0, 0, False, False, False, False, insn, seq)


class Replay:
    """The event model of the engine running a program, fed in pieces.

    Each instruction's start is resolved as soon as everything it waits for is known: its
    dispatch (program order, one per cycle, waiting while its queue holds ``queue_depth``
    instructions not yet started), its unit being free, the tokens it pops. The compute unit's
    timing then follows from formulas; loads and stores also need the memory port, which
    :class:`_Port` settles in time order, one finished instruction at a time.

    :meth:`feed` appends instructions and :meth:`run` advances as far as the instructions fed
    so far decide (with ``final``, to the end). Between pieces, :meth:`snapshot` describes the
    state relative to time and :meth:`shift` moves it forward, which is how
    :func:`stream_cycles` skips runs of identical pieces once the state repeats. Every time in
    the state is a cycle number and the model only adds constants and takes maxima, so a state
    that repeats shifted by D cycles after a piece repeats so again after the same piece.
    (``run`` is written as one loop over local variables: it is the mapper's inner loop.)
    """

    def __init__(self, cfg: EngineConfig, *, record: bool = False, ideal_memory: bool = False):
        self.cfg = cfg
        self.ideal = ideal_memory
        self.lat = _mem_latency(cfg)
        self.tile = TileTiming(cfg)
        #: a result row's latency through the tile engine and the writeback's extra stages:
        #: every completion time the replay computes starts from it
        self.result_latency = self.tile.latency + WRITEBACK_EXTRA
        self.os = cfg.dataflow == "os"
        self.fed: deque = deque()                     # records not yet dispatched
        self.fed_per_queue = [0, 0, 0]
        self.pending = [deque(), deque(), deque()]    # [ready, record], dispatched, not started
        self.history = [deque(maxlen=QUEUE_DEPTH) for _ in range(3)]  # starts of started ones
        self.tokens = {name: deque() for name in ("l2c", "c2l", "c2s", "s2c")}
        self.free = [0, 0, 0]                         # load, compute, store
        # [ready, beats left, record] while the load / store unit has beats for the port
        self.busy: list[list | None] = [None, None]
        self.port = _Port()
        self.last_dispatch = -1
        self.beat_free = 0      # next cycle the array may take a beat
        self.prev_last = NEVER  # os: cycle the previous tile's last beat was taken
        self.weights_free = 0   # ws: first cycle the next weights may load
        self.b_next = 0         # ws: next cycle the weight stream can deliver
        self.end = 0
        self.counts = [0, 0, 0, 0]  # instructions, array beats, load beats, store beats
        self.array_work = 0         # cycles the computes issued hold the array, at the least
        self.seq = 0
        self.record: dict[int, tuple[int, int]] | None = {} if record else None
        self._starts: dict[int, int] = {}
        #: (load, store): the program promises that the unit's next instruction not yet fed
        #: waits for a token (c2l, c2s), so the other unit may use the port until it could ask
        self.promise = (False, False)

    def feed(self, insns) -> None:
        cfg, fed, per_queue = self.cfg, self.fed, self.fed_per_queue
        seq = self.seq
        for insn in insns:
            rec = _record(cfg, insn, seq)
            fed.append(rec)
            per_queue[_QUEUE[rec[0]]] += 1
            seq += 1
        self.seq = seq

    def feed_records(self, records: Sequence[tuple], per_queue: Sequence[int]) -> None:
        """Append instructions already made into records (their ``seq`` is not kept)."""
        self.fed.extend(records)
        for q in range(3):
            self.fed_per_queue[q] += per_queue[q]
        self.seq += len(records)

    def records(self, insns) -> tuple[list[tuple], list[int]]:
        """Records of ``insns`` and how many go to each queue, for :meth:`feed_records`."""
        recs = [_record(self.cfg, insn, -1) for insn in insns]
        per_queue = [0, 0, 0]
        for rec in recs:
            per_queue[_QUEUE[rec[0]]] += 1
        return recs, per_queue

    def timing(self) -> ProgramTiming:
        per_insn = []
        if self.record is not None:
            per_insn = [self.record[i] for i in range(self.seq)]
        insns, beats, loads, stores = self.counts
        return ProgramTiming(cycles=self.end + 1, compute_cycles=beats, load_beats=loads,
                             store_beats=stores, port_wait_cycles=self.port.wait,
                             instructions=insns, per_insn=per_insn)

    def run(self, final: bool = False) -> None:
        """Advance until the next memory beat would depend on instructions not fed yet."""
        cfg = self.cfg
        r = cfg.rows
        lat = self.lat
        os_ = self.os
        ideal = self.ideal
        min_tile = self.tile.min_tile_cycles
        result_latency = self.result_latency
        swap = self.tile.weight_swap_cycles
        fed, per_queue = self.fed, self.fed_per_queue
        pend = self.pending
        pend_l, pend_c, pend_s = pend
        hist = self.history
        hist_l, hist_c, hist_s = hist
        t_l2c, t_c2l = self.tokens["l2c"], self.tokens["c2l"]
        t_c2s, t_s2c = self.tokens["c2s"], self.tokens["s2c"]
        free = self.free
        busy = self.busy
        port = self.port
        counts = self.counts
        record = self.record
        starts = self._starts
        last_dispatch = self.last_dispatch
        beat_free, prev_last = self.beat_free, self.prev_last
        weights_free, b_next = self.weights_free, self.b_next
        end = self.end
        array_work = self.array_work

        def finished(seq: int, finish: int) -> None:
            record[seq] = (starts.pop(seq), finish)

        while True:
            progress = True
            while progress:
                progress = False
                # the dispatcher: program order, one per cycle, waiting while the queue is full
                while fed:
                    rec = fed[0]
                    q = _QUEUE[rec[0]]
                    waiting = len(pend[q])
                    if waiting >= QUEUE_DEPTH:
                        break
                    t = last_dispatch + 1
                    back = QUEUE_DEPTH - waiting
                    h = hist[q]
                    if len(h) >= back and h[-back] >= t:
                        t = h[-back] + 1
                    fed.popleft()
                    per_queue[q] -= 1
                    last_dispatch = t
                    pend[q].append([t + DISPATCH_LATENCY, rec])
                    progress = True
                # the compute unit: its timing depends on tokens only, never on the port
                while pend_c:
                    ready, rec = pend_c[0]
                    _, extent, _, pop_l2c, pop_s2c, push_c2l, push_c2s, _, seq = rec
                    if (pop_l2c and not t_l2c) or (pop_s2c and not t_s2c):
                        break
                    pend_c.popleft()
                    start = max(ready, free[1])
                    if pop_l2c:
                        start = max(start, t_l2c.popleft())
                    if pop_s2c:
                        start = max(start, t_s2c.popleft())
                    free[1] = start + 1
                    first = max(start + COMPUTE_ISSUE_LATENCY, beat_free)
                    if os_:
                        last = max(first + extent - 1, prev_last + min_tile)
                        prev_last = last
                        beat_free = last + 1
                        done = last + result_latency + r  # written into the accumulator
                        array_work += max(extent, min_tile)
                    else:
                        load_w = max(b_next, weights_free, start + COMPUTE_ISSUE_LATENCY)
                        b_next = load_w + r
                        if b_next > first:
                            first = b_next
                        weights_free = first + swap
                        last = first + extent - 1
                        beat_free = last + 1
                        done = last + result_latency + 1
                        array_work += extent
                    counts[1] += extent
                    if push_c2l:
                        t_c2l.append(done + 1)
                    if push_c2s:
                        t_c2s.append(done + 1)
                    hist_c.append(start)
                    counts[0] += 1
                    if done + 1 > end:
                        end = done + 1
                    if record is not None:
                        starts[seq] = start
                        finished(seq, done + 1)
                    progress = True
                # the load and store units take their next instruction once idle
                for u, pq, h, q in ((0, pend_l, hist_l, 0), (1, pend_s, hist_s, 2)):
                    while busy[u] is None and pq:
                        ready, rec = pq[0]
                        kind, size, delay, pop, _, push, _, _, seq = rec
                        tokens = t_c2l if u == 0 else t_c2s
                        if pop and not tokens:
                            break
                        pq.popleft()
                        start = max(ready, free[q])
                        if pop:
                            start = max(start, tokens.popleft())
                        h.append(start)
                        counts[0] += 1
                        if record is not None:
                            starts[seq] = start
                        progress = True
                        if kind == 3:   # CONFIG
                            free[q] = start + 1
                            end = max(end, start + 1)
                            if record is not None:
                                finished(seq, start + 1)
                            continue
                        counts[2 if kind == 0 else 3] += size
                        if ideal:
                            # unbounded bandwidth, no latency: the data is there when asked for
                            free[q] = start + 1
                            if push:
                                (t_l2c if kind == 0 else t_s2c).append(start + 1)
                            end = max(end, start + 1)
                            if record is not None:
                                finished(seq, start + 1)
                            continue
                        if kind == 0:
                            busy[0] = [start + LOAD_REQUEST_DELAY, size, rec]
                        else:
                            busy[1] = [start + delay, size, rec]
            load, store = busy
            if load is None and store is None:
                break
            horizon = None
            starved = (load is None and not pend_l and not per_queue[0],
                       store is None and not pend_s and not per_queue[2])
            if not final and (starved[0] or starved[1]):
                # An idle unit may yet get an instruction that competes for the port. If the
                # program promises that its next one waits for a token, the other unit may
                # run alone until the first cycle that instruction could ask for the port.
                u = 0 if starved[0] else 1
                if not self.promise[u]:
                    break
                tq = t_c2l if u == 0 else t_c2s
                if tq:
                    token = tq[0]
                elif os_:   # the next token comes from a compute not yet issued
                    token = prev_last + min_tile + result_latency + r + 1
                else:
                    token = beat_free + result_latency + 2
                start = max(token, free[2 * u], last_dispatch + len(fed) + 1 + DISPATCH_LATENCY)
                horizon = start + (LOAD_REQUEST_DELAY if u == 0 else STORE_SETUP + STORE_READ + 1)
            if horizon is None and (load is None or store is None):
                # one unit alone, nothing to stop it: its beats run back to back (inlined
                # _Port._alone, the common case)
                req = load if store is None else store
                first = port.free if port.free > req[0] else req[0]
                last = first + req[1] - 1
                port.free = last + 1
                port.last_load = store is None
                unit = "load" if store is None else "store"
            else:
                unit, last = port.run(load, store, horizon)
            if unit is None:
                break   # ran alone up to the horizon; what comes next decides the rest
            # the memory accepted the last beat of the unit's instruction at cycle ``last``
            if unit == "load":
                rec = load[2]
                busy[0] = None
                free[0] = last + LOAD_RELEASE
                finish = last + lat + LOAD_WRITE
                if rec[5]:
                    t_l2c.append(finish)
            else:
                rec = store[2]
                busy[1] = None
                free[2] = finish = last + STORE_RELEASE
                if rec[5]:
                    t_s2c.append(finish)
            if finish > end:
                end = finish
            if record is not None:
                finished(rec[8], finish)

        self.last_dispatch = last_dispatch
        self.beat_free, self.prev_last = beat_free, prev_last
        self.weights_free, self.b_next = weights_free, b_next
        self.end = end
        self.array_work = array_work
        if final and (fed or any(pend)):
            rec = fed[0] if fed else next(p[1] for q in pend for p in q)
            kind = ("LOAD", "COMPUTE", "STORE", "CONFIG")[rec[0]]
            raise ValueError(f"program deadlocks: instruction {rec[8]} ({kind}) waits for a "
                             f"token that is never pushed")

    def bound(self, array_work: int, port_beats: int) -> int:
        """A lower bound on the program's cycles, given its total array cycles and memory
        beats (as :meth:`mapping.gemm.Schedule.work` counts them): the array still has the
        computes not yet issued to run, then its latency; the port the beats not yet granted,
        then at least a store's release."""
        left = array_work - self.array_work
        latency = self.result_latency
        if self.os:
            array = self.prev_last + left + latency + self.cfg.rows + 2
        else:
            array = self.beat_free - 1 + left + latency + 3
        port = self.port.free + port_beats - self.counts[2] - self.counts[3]
        for b in self.busy:
            if b is not None:
                port += b[1]
        return max(self.end + 1, array, port + 2)

    # -- repeating states ------------------------------------------------------------------

    def _time_fields(self) -> list[str]:
        extra = ["prev_last"] if self.os else ["weights_free", "b_next"]
        return ["last_dispatch", "beat_free", "end"] + extra

    def snapshot(self) -> tuple[tuple, list[int], list[int]]:
        """(structure, times, counters) of the state. Two states with equal structure whose
        times differ by one constant evolve alike under the same instructions."""
        last_dispatch = self.last_dispatch
        struct: list = [self.port.last_load, tuple(rec[:7] for rec in self.fed)]
        times = [getattr(self, f) for f in self._time_fields()]
        times += self.free
        times.append(self.port.free)
        for q in range(3):
            pq = self.pending[q]
            struct.append(tuple(p[1][:7] for p in pq))
            times.extend(p[0] for p in pq)
            # the dispatcher will look at no start older than the last ``depth - waiting``,
            # nor be held by one at or before its last dispatch
            h = self.history[q]
            recent = list(h)[max(0, len(h) - (QUEUE_DEPTH - len(pq))):]
            struct.append((len(h), tuple(s > last_dispatch for s in recent)))
            times.extend(s for s in recent if s > last_dispatch)
        for name in ("l2c", "c2l", "c2s", "s2c"):
            tq = self.tokens[name]
            struct.append(len(tq))
            times.extend(tq)
        for b in self.busy:
            if b is None:
                struct.append(None)
            else:
                struct.append((b[1], b[2][:7]))
                times.append(b[0])
        return tuple(struct), times, self.counts + [self.port.wait, self.array_work]

    def shift(self, delta: int, counts: list[int]) -> None:
        """Move every time forward by ``delta`` cycles and add ``counts`` to the counters."""
        for f in self._time_fields():
            setattr(self, f, getattr(self, f) + delta)
        self.free = [f + delta for f in self.free]
        self.port.free += delta
        for q in range(3):
            for p in self.pending[q]:
                p[0] += delta
            self.history[q] = deque((s + delta for s in self.history[q]), maxlen=QUEUE_DEPTH)
        for name in self.tokens:
            self.tokens[name] = deque(t + delta for t in self.tokens[name])
        for b in self.busy:
            if b is not None:
                b[0] += delta
        for i in range(4):
            self.counts[i] += counts[i]
        self.port.wait += counts[4]
        self.array_work += counts[5]


class _Keys:
    """Piece keys, computed once each, on demand."""

    def __init__(self, key: Callable[[int], Hashable]):
        self.key = key
        self.known: dict[int, Hashable] = {}

    def __getitem__(self, i: int) -> Hashable:
        k = self.known.get(i)
        if k is None:
            k = self.known[i] = self.key(i)
        return k


def program_cycles(cfg: EngineConfig, program: Sequence[Insn]) -> ProgramTiming:
    """Replay the program through the dispatcher, the three units and the memory port.

    Raises ``ValueError`` for a program whose tokens deadlock.
    """
    replay = Replay(cfg, record=True)
    replay.feed(program)
    replay.run(final=True)
    return replay.timing()


def stream_cycles(cfg: EngineConfig, prologue: Sequence[Insn], n: int,
                  key: Callable[[int], Hashable], piece: Callable[[int], Sequence[Insn]],
                  periods: Sequence[int] = (1, 2), *, ideal_memory: bool = False,
                  promise: tuple[bool, bool] = (False, False),
                  records: Callable[[int], tuple[list[tuple], list[int]]] | None = None,
                  ) -> ProgramTiming:
    """:func:`program_cycles` of ``prologue + piece(0) + ... + piece(n - 1)``, without building
    runs of pieces that repeat (see :func:`stream_steps`)."""
    steps = stream_steps(cfg, prologue, n, key, piece, periods, ideal_memory=ideal_memory,
                         promise=promise, records=records)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def stream_steps(cfg: EngineConfig, prologue: Sequence[Insn], n: int,
                 key: Callable[[int], Hashable], piece: Callable[[int], Sequence[Insn]],
                 periods: Sequence[int] = (1, 2), *, ideal_memory: bool = False,
                 work: tuple[int, int] | None = None,
                 promise: tuple[bool, bool] = (False, False),
                 records: Callable[[int], tuple[list[tuple], list[int]]] | None = None):
    """Replay ``prologue + piece(0) + ... + piece(n - 1)`` piece by piece, skipping runs of
    pieces that repeat; a generator that returns the :class:`ProgramTiming`.

    ``key(i)`` names piece ``i``'s timing: equal keys must mean pieces whose instructions
    differ in addresses only. After each piece the state is compared with the state ``p``
    pieces earlier (for each period ``p``); when it is the same shifted by D cycles and the
    coming pieces repeat the last ``p`` keys, those pieces are skipped and the state shifted
    by D for each period skipped. Exact: it returns the cycles the full replay would.
    ``ideal_memory``: loads and stores finish the cycle they start.

    After each piece it yields a lower bound on the program's cycles (:meth:`Replay.bound`,
    given ``work``, the program's total array cycles and memory beats; 0 without), so a
    search can advance the most promising of several programs and drop the sure losers.

    ``promise`` (load, store): that every load (store) in piece 1 and later is preceded in
    its queue by one that pops its token (c2l, c2s); it lets the replay settle the memory port
    between pieces that carry no loads (stores). ``records(i)``, if given, makes piece ``i``
    as :class:`Replay` records directly (faster than making its instructions).
    """
    replay = Replay(cfg, ideal_memory=ideal_memory)
    replay.feed(prologue)
    keys = _Keys(key)
    snaps: dict[int, tuple] = {}
    j = 0
    made: dict[Hashable, tuple[list[tuple], list[int]]] = {}
    if work is not None:
        yield replay.bound(*work)   # before anything runs: the work alone
    while j < n:
        # pieces with equal keys time alike: make each kind of piece once
        k = keys[j]
        if k not in made:
            made[k] = records(j) if records is not None else replay.records(piece(j))
        replay.feed_records(*made[k])
        if j == 0:
            replay.promise = promise
        if j == n - 1:
            break
        replay.run()
        # a state is worth keeping only where a run of repeating pieces could start or end
        if any((j + 1 - p >= 0 and keys[j + 1] == keys[j + 1 - p])
               or (j + 1 + p < n and keys[j + 1 + p] == keys[j + 1]) for p in periods):
            snap = snaps[j] = replay.snapshot()
            for p in periods:
                old = snaps.get(j - p)
                if old is None or old[0] != snap[0]:
                    continue
                d = snap[1][0] - old[1][0]
                if any(b - a != d for a, b in zip(old[1], snap[1], strict=True)):
                    continue
                stop = j + 1
                while stop < n - 1 and keys[stop] == keys[stop - p]:
                    stop += 1
                times = (stop - j - 1) // p
                if times:
                    counts = [(b - a) * times for a, b in zip(old[2], snap[2], strict=True)]
                    replay.shift(d * times, counts)
                    j += times * p
                    snaps[j] = replay.snapshot()
                    break
        yield replay.bound(*work) if work is not None else 0
        j += 1
    replay.run(final=True)
    return replay.timing()


def check_program(cfg: EngineConfig, program: Sequence[Insn]) -> None:
    """Assemble (which checks every instruction) and replay (which finds token deadlocks)."""
    isa.assemble(program, cfg)
    program_cycles(cfg, program)
