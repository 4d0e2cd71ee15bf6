"""Cycle model of ISA programs on the engine, instruction by instruction.

Every number here comes from the engine's stated timing (:class:`rtl.engine.EngineTiming`,
which gathers each unit's: dispatcher, load, compute with its array, store with its post-op
stages, token counters) and the memory's latency; the model composes them. For one instruction
alone it equals the RTL exactly; for whole programs :func:`program_cycles` replays the
dispatcher, the three queues with their dependency tokens, the array (:class:`ArrayModel`) and
the memory port that loads and stores share (round robin), as an event model. With a memory
that refuses requests at random (``stall``, the simulation memory's LFSR) the port grants beats
only in the cycles the memory takes them, which the model knows too.

Times are cycles from the first cycle the engine sees the program (cycle 0).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from rtl import isa
from rtl.config import EngineConfig
from rtl.engine import EngineTiming
from rtl.isa import Insn, Op
from rtl.memory import stall_pattern

from .timing import NEVER, ArrayModel, tile_stream_cycles

__all__ = ["Calendar", "ProgramTiming", "Rec", "Replay", "compute_record", "config_record",
           "instruction_cycles", "load_record", "program_cycles", "record", "store_record",
           "stream_cycles", "stream_steps"]


class Rec(NamedTuple):
    """One instruction as the model sees it (addresses do not matter to its timing).

    ``size``: memory beats (LOAD, STORE) or extent (COMPUTE); ``delay``: a STORE's cycles from
    being taken to its first beat. The flags are the ISA's (:data:`rtl.isa.POPS`,
    :data:`rtl.isa.PUSHES`): LOAD pops c2l with ``pop_next`` and pushes l2c with
    ``push_next``; COMPUTE pops l2c / s2c and pushes c2l / c2s; STORE pops c2s with
    ``pop_prev`` and pushes s2c with ``push_prev``.
    """

    op: Op
    queue: int
    size: int
    delay: int
    pop_prev: bool
    pop_next: bool
    push_prev: bool
    push_next: bool
    insn: Insn | None = None
    seq: int = -1

    @property
    def timing_key(self) -> tuple:
        """What the record's timing depends on (everything but the instruction and its place)."""
        return self[:8]


_Q = {queue: queue.value for queue in isa.Queue}
_QUEUE = {op: _Q[queue] for op, queue in isa.QUEUE_OF.items()}


_LOAD_Q, _COMPUTE_Q, _STORE_Q = _QUEUE[Op.LOAD], _QUEUE[Op.COMPUTE], _QUEUE[Op.STORE]

# (the record makers are memoized: records are values, and a GEMM's pieces repeat a few kinds)


@lru_cache(maxsize=4096)
def load_record(beats: int, *, pop_next: bool = False, push_next: bool = False) -> Rec:
    return Rec(Op.LOAD, _LOAD_Q, beats, 0, False, pop_next, False, push_next)


@lru_cache(maxsize=4096)
def compute_record(extent: int, *, pop_prev: bool = False, pop_next: bool = False,
                   push_prev: bool = False, push_next: bool = False) -> Rec:
    return Rec(Op.COMPUTE, _COMPUTE_Q, extent, 0, pop_prev, pop_next, push_prev, push_next)


@lru_cache(maxsize=4096)
def store_record(beats: int, delay: int, *, pop_prev: bool = False,
                 push_prev: bool = False) -> Rec:
    return Rec(Op.STORE, _STORE_Q, beats, delay, pop_prev, False, push_prev, False)


@lru_cache(maxsize=4096)
def config_record() -> Rec:
    return Rec(Op.CONFIG, _STORE_Q, 0, 0, False, False, False, False)


@lru_cache(maxsize=256)
def _timing(cfg: EngineConfig) -> EngineTiming:
    return EngineTiming(cfg)


def record(cfg: EngineConfig, insn: Insn, seq: int = -1) -> Rec:
    """The record of one instruction."""
    t = _timing(cfg)
    d = insn.deps
    flags = {name: name in d for name in ("pop_prev", "pop_next", "push_prev", "push_next")}
    if insn.op == Op.LOAD:
        size, delay = t.load.beats(insn.args["rows"], insn.args["length"]), 0
    elif insn.op == Op.COMPUTE:
        size, delay = insn.args["extent"], 0
    elif insn.op == Op.STORE:
        size, delay = t.store.beats(insn), t.store.request_delay(insn)
    else:
        size, delay = 0, 0
        flags = dict.fromkeys(flags, False)   # a CONFIG moves no tokens
    return Rec(insn.op, _QUEUE[insn.op], size, delay, flags["pop_prev"], flags["pop_next"],
               flags["push_prev"], flags["push_next"], insn, seq)


def instruction_cycles(cfg: EngineConfig, insn: Insn) -> int:
    """Cycles a program of this one instruction takes, from start to ``done`` (exact).

    The dispatch latency, the unit's span (LOAD: its beats, the memory's latency, the write;
    COMPUTE: the sources, the tile on the array, the writeback; STORE: set-up, the read, its
    post-op stages, one cycle per beat, the release; CONFIG one cycle), and the cycle ``done``
    is seen in.
    """
    t = EngineTiming(cfg)
    if insn.op == Op.LOAD:
        span = t.load.span(t.load.beats(insn.args["rows"], insn.args["length"])) \
            + t.tokens.latency
    elif insn.op == Op.COMPUTE:
        span = (t.compute.issue_latency + tile_stream_cycles(cfg, [insn.args["extent"]]).cycles
                + t.compute.writeback_latency)
    else:
        span = t.store.span(insn)
    return t.dispatch.latency + span + t.done_latency


@dataclass
class ProgramTiming:
    """Predicted cycles of a program and where the units spent them."""

    cycles: int
    compute_cycles: int          # cycles the array accepts operand beats
    load_beats: int
    store_beats: int
    #: beats one unit was granted while the other had a beat waiting for the memory port
    port_wait_cycles: int = 0
    instructions: int = 0
    per_insn: list[tuple[int, int]] = field(default_factory=list)  # (start, finish) per insn


class Calendar:
    """The cycles a memory that refuses requests at random takes one, from cycle 0 on.

    ``ready`` is one period of the pattern (the memory's LFSR); :meth:`nth` and :meth:`count`
    answer in constant time for any cycle.
    """

    __slots__ = ("period", "at", "per", "before")

    def __init__(self, ready: Sequence[bool]):
        self.period = len(ready)
        self.at = [i for i, r in enumerate(ready) if r]
        self.per = len(self.at)
        if not self.per:
            raise ValueError("a memory that never takes a request cannot run a program")
        self.before = [0]
        for r in ready:
            self.before.append(self.before[-1] + r)

    def _index(self, t: int) -> int:
        """Ready cycles before cycle ``t``."""
        q, r = divmod(t, self.period)
        return q * self.per + self.before[r]

    def count(self, t0: int, t1: int) -> int:
        """Ready cycles in ``[t0, t1)``."""
        return self._index(t1) - self._index(t0) if t1 > t0 else 0

    def nth(self, t: int, k: int) -> int:
        """The ``k``-th (from 1) ready cycle at or after ``t``."""
        q, r = divmod(self._index(t) + k - 1, self.per)
        return q * self.period + self.at[r]

    def next_ready(self, t: int) -> int:
        return self.nth(t, 1)


@lru_cache(maxsize=64)
def _calendar(stall: int) -> Calendar | None:
    return Calendar(stall_pattern(stall)) if stall else None


class _Port:
    """The memory port's round-robin arbiter between the load unit and the store unit.

    Each unit, while it has beats to send, asks every cycle from its ``ready`` cycle on; the
    port grants one beat per cycle the memory takes one (every cycle, or those of
    ``calendar``). When both ask, the unit that was not served last wins, so their beats
    alternate; when one asks alone it gets every grant. After reset loads win.
    """

    __slots__ = ("free", "last_load", "wait", "cal")

    def __init__(self, calendar: Calendar | None = None) -> None:
        self.free = 0            # next cycle the port can grant
        self.last_load = False   # whether the last granted beat was a load's
        self.wait = 0            # beats granted while the other unit waited
        self.cal = calendar

    def _count(self, t0: int, t1: int) -> int:
        if self.cal is None:
            return max(0, t1 - t0)
        return self.cal.count(t0, t1)

    def run(self, load: list | None, store: list | None,
            horizon: int | None = None) -> tuple[str | None, int]:
        """Grant beats until one unit's instruction has all its beats accepted.

        ``load``/``store`` are ``[ready, beats_left, record]`` (updated in place) or ``None``
        for a unit with nothing to send. Returns which unit finished and the cycle of its last
        beat. With one unit and a ``horizon``, grants no cycle from the horizon on: if the
        instruction is not done by then, returns ``(None, 0)``.
        """
        if store is None:
            return self._alone("load", load, horizon)
        if load is None:
            return self._alone("store", store, horizon)
        free = self.free
        t_l = free if free > load[0] else load[0]
        t_s = free if free > store[0] else store[0]
        if self.cal is None:
            load_alone, store_alone = t_l + load[1] <= t_s, t_s + store[1] <= t_l
        else:
            load_alone = self.cal.nth(t_l, load[1]) < t_s
            store_alone = self.cal.nth(t_s, store[1]) < t_l
        if load_alone:
            return self._alone("load", load)
        if store_alone:
            return self._alone("store", store)
        # Both ask before either is done: the earlier one runs alone until the other asks.
        t = max(t_l, t_s)
        if t_l < t_s:
            alone = self._count(t_l, t_s)   # (none, if the memory took no request meanwhile)
            if alone:
                load[1] -= alone
                self.last_load = True
        elif t_s < t_l:
            alone = self._count(t_s, t_l)
            if alone:
                store[1] -= alone
                self.last_load = False
        first, second = (store, load) if self.last_load else (load, store)
        names = ("store", "load") if self.last_load else ("load", "store")
        n1, n2 = first[1], second[1]
        if n1 <= n2:
            # first's beats in the 1st, 3rd, ... grant from t; second's in the 2nd, 4th, ...
            last = t + 2 * n1 - 2 if self.cal is None else self.cal.nth(t, 2 * n1 - 1)
            second[1] = n2 - (n1 - 1)
            second[0] = last + 1
            self.free = last + 1
            self.last_load = names[0] == "load"
            self.wait += 2 * n1 - 1
            return names[0], last
        last = t + 2 * n2 - 1 if self.cal is None else self.cal.nth(t, 2 * n2)
        first[1] = n1 - n2
        first[0] = last + 1
        self.free = last + 1
        self.last_load = names[1] == "load"
        self.wait += 2 * n2
        return names[1], last

    def _alone(self, name: str, req: list,
               horizon: int | None = None) -> tuple[str | None, int]:
        first = self.free if self.free > req[0] else req[0]
        last = first + req[1] - 1 if self.cal is None else self.cal.nth(first, req[1])
        if horizon is not None and last >= horizon:
            # grant only the cycles before the horizon; the unit keeps asking from there
            granted = self._count(first, horizon)
            if granted:
                req[1] -= granted
                self.free = horizon
                self.last_load = name == "load"
            return None, 0
        self.free = last + 1
        self.last_load = name == "load"
        return name, last


def _split(values: Iterable[int], struct: list, times: list) -> None:
    """Times into ``times``; which of them are NEVER (which never shifts) into ``struct``."""
    for v in values:
        if v == NEVER:
            struct.append(None)
        else:
            struct.append(True)
            times.append(v)


@lru_cache(maxsize=256)
def _constants(cfg: EngineConfig) -> tuple[int, ...]:
    """The numbers :meth:`Replay.run` adds, from the engine's stated timing (read once per
    configuration: ``run`` is the mapper's inner loop)."""
    t = EngineTiming(cfg)
    dt, lt, ct, st = t.dispatch, t.load, t.compute, t.store
    token = t.tokens.latency
    return (dt.queue_depth, dt.decode_latency, dt.check_latency, dt.queue_latency,
            dt.room_latency, lt.request_delay, lt.release,
            cfg.read_latency + lt.write_latency + token,   # a load's last grant to its token
            st.release, st.push_delay + token, st.config_cycles,
            ct.descriptor_latency, ct.writeback_latency + token,   # a tile's last row to token
            ct.source_depth, ct.writeback_depth, ct.room_latency,
            st.request_delay(isa.store(0, 1, 1, 0, 0, False)))


class Replay:
    """The event model of the engine running a program, fed in pieces.

    Each instruction's start is resolved as soon as everything it waits for is known: its
    dispatch (program order, one per cycle through the decode FIFO, waiting while its queue is
    full: :class:`rtl.dispatch.DispatchTiming`), its unit being free, the tokens it pops, and
    for a COMPUTE room in its sources' and the writeback's descriptor FIFOs. The compute
    unit's timing then follows from :class:`ArrayModel`; loads and stores also need the
    memory port, which :class:`_Port` settles in time order, one finished instruction at a time.

    :meth:`feed` appends instructions and :meth:`run` advances as far as the instructions fed
    so far decide (with ``final``, to the end). Between pieces, :meth:`snapshot` describes the
    state relative to time and :meth:`shift` moves it forward, which is how
    :func:`stream_cycles` skips runs of identical pieces once the state repeats. Every time in
    the state is a cycle number and the model only adds constants and takes maxima, so a state
    that repeats shifted by D cycles after a piece repeats so again after the same piece. (With
    memory stalls the port's grants follow a pattern that does not shift, so no piece is
    skipped.) (``run`` is written as one loop over local variables: it is the mapper's inner
    loop.)
    """

    def __init__(self, cfg: EngineConfig, *, record: bool = False, ideal_memory: bool = False,
                 stall: int = 0):
        self.cfg = cfg
        self.t = t = _timing(cfg)
        self.k = _constants(cfg)
        self.ideal = ideal_memory
        self.lat = cfg.read_latency
        self.array = ArrayModel(cfg)
        self.os = cfg.dataflow == "os"
        self.stall = stall
        self.fed: deque = deque()                     # records not yet dispatched
        self.fed_per_queue = [0, 0, 0]
        self.pending = [deque(), deque(), deque()]    # [ready, record], dispatched, not started
        qd = t.dispatch.queue_depth
        self.history = [deque(maxlen=qd) for _ in range(3)]  # starts of the started ones
        self.tokens = {name: deque() for name in isa.TOKENS}
        self.free = [0, 0, 0]                         # load, compute, store
        # [ready, beats left, record] while the load / store unit has beats for the port
        self.busy: list[list | None] = [None, None]
        self.port = _Port(_calendar(stall))
        # the dispatcher: d of the last instruction into the decode FIFO, w of the last
        # decode_depth ones into their queues
        self.d_last = 0
        if t.dispatch.decode_depth != 2:
            raise NotImplementedError("the model's dispatcher is written for a decode FIFO of "
                                      f"two entries, not {t.dispatch.decode_depth}")
        self.w_last = (NEVER, NEVER)   # the last two queue writes
        # the compute unit: its sources' descriptor takes and its tiles' last rows out, for
        # their FIFOs' room
        self.taus_a = deque(maxlen=t.compute.source_depth)
        self.taus_b = deque(maxlen=t.compute.source_depth)
        self.outs = deque(maxlen=t.compute.writeback_depth)
        self.end = 0
        self.counts = [0, 0, 0, 0]  # instructions, array beats, load beats, store beats
        self.array_work = 0         # cycles the computes issued hold the array, at the least
        self.seq = 0
        self.record: dict[int, tuple[int, int]] | None = {} if record else None
        self._starts: dict[int, int] = {}
        #: (load, store): the program promises that the unit's next instruction not yet fed
        #: waits for a token (c2l, c2s), so the other unit may use the port until it could ask
        self.promise = (False, False)

    def feed(self, insns: Iterable[Insn]) -> None:
        cfg, fed, per_queue = self.cfg, self.fed, self.fed_per_queue
        seq = self.seq
        for insn in insns:
            rec = record(cfg, insn, seq)
            fed.append(rec)
            per_queue[rec.queue] += 1
            seq += 1
        self.seq = seq

    def feed_records(self, records: Sequence[Rec], per_queue: Sequence[int]) -> None:
        """Append instructions already made into records (their ``seq`` is not kept)."""
        self.fed.extend(records)
        for q in range(3):
            self.fed_per_queue[q] += per_queue[q]
        self.seq += len(records)

    def records(self, insns: Iterable[Insn]) -> tuple[list[Rec], list[int]]:
        """Records of ``insns`` and how many go to each queue, for :meth:`feed_records`."""
        recs = [record(self.cfg, insn) for insn in insns]
        per_queue = [0, 0, 0]
        for rec in recs:
            per_queue[rec.queue] += 1
        return recs, per_queue

    def timing(self) -> ProgramTiming:
        per_insn = []
        if self.record is not None:
            per_insn = [self.record[i] for i in range(self.seq)]
        insns, beats, loads, stores = self.counts
        return ProgramTiming(cycles=self.end + self.t.done_latency, compute_cycles=beats,
                             load_beats=loads, store_beats=stores,
                             port_wait_cycles=self.port.wait, instructions=insns,
                             per_insn=per_insn)

    def run(self, final: bool = False) -> None:
        """Advance until the next memory beat would depend on instructions not fed yet."""
        (qd, decode_latency, check_latency, queue_latency, room, load_delay, load_release,
         load_done, store_release, store_push, config_cycles, desc_latency, wb_done,
         src_depth, wb_depth, fifo_room, raw_store_delay) = self.k
        os_ = self.os
        ideal = self.ideal
        array = self.array
        issue = array.issue
        min_tile = array.min_tile
        fed, per_queue = self.fed, self.fed_per_queue
        pend = self.pending
        pend_l, pend_c, pend_s = pend
        hist = self.history
        hist_l, hist_c, hist_s = hist
        t_l2c, t_c2l = self.tokens["l2c"], self.tokens["c2l"]
        t_c2s, t_s2c = self.tokens["c2s"], self.tokens["s2c"]
        taus_a, taus_b, outs = self.taus_a, self.taus_b, self.outs
        free = self.free
        busy = self.busy
        port = self.port
        cal = port.cal
        counts = self.counts
        record = self.record
        starts = self._starts
        d_last = self.d_last
        w_last = self.w_last
        w_back, w_prev = w_last   # the decode FIFO's two entries: (decode_depth == 2)
        end = self.end
        array_work = self.array_work

        def finished(seq: int, finish: int) -> None:
            record[seq] = (starts.pop(seq), finish)

        while True:
            progress = True
            while progress:
                progress = False
                # the dispatcher: program order, one per cycle through the decode FIFO, into
                # its queue once the queue has room
                while fed:
                    rec = fed[0]
                    q = rec.queue
                    waiting = len(pend[q])
                    if waiting >= qd:
                        break
                    d = d_last + decode_latency
                    if w_back >= d:   # the decode FIFO's entry decode_depth back frees
                        d = w_back + 1
                    w = d + check_latency
                    if w_prev >= w:
                        w = w_prev + 1
                    back = qd - waiting
                    h = hist[q]
                    if len(h) >= back and h[-back] + room > w:
                        w = h[-back] + room
                    fed.popleft()
                    per_queue[q] -= 1
                    d_last = d
                    w_back, w_prev = w_prev, w
                    pend[q].append([w + queue_latency, rec])
                    progress = True
                # the compute unit: its timing depends on tokens and its own FIFOs, never on
                # the port
                while pend_c:
                    ready, rec = pend_c[0]
                    if (rec.pop_prev and not t_l2c) or (rec.pop_next and not t_s2c):
                        break
                    pend_c.popleft()
                    start = ready if ready > free[1] else free[1]
                    if rec.pop_prev:
                        token = t_l2c.popleft()
                        if token > start:
                            start = token
                    if rec.pop_next:
                        token = t_s2c.popleft()
                        if token > start:
                            start = token
                    # room in the descriptor FIFOs: their entries source_depth back taken
                    if len(taus_a) == src_depth:
                        room_at = taus_a[0] + fifo_room
                        if not os_ and taus_b[0] > taus_a[0]:
                            room_at = taus_b[0] + fifo_room
                        if room_at > start:
                            start = room_at
                    if len(outs) == wb_depth and outs[0] + fifo_room > start:
                        start = outs[0] + fifo_room
                    free[1] = start + 1
                    extent = rec.size
                    tau_a, tau_b, _, last, out = issue(start + desc_latency, extent)
                    taus_a.append(tau_a)
                    if not os_:   # (os: one source, so B's takes are A's)
                        taus_b.append(tau_b)
                    outs.append(out)
                    array_work += max(extent, min_tile) if os_ else extent
                    done = out + wb_done   # in the accumulator, its tokens there
                    counts[1] += extent
                    if rec.push_prev:
                        t_c2l.append(done)
                    if rec.push_next:
                        t_c2s.append(done)
                    hist_c.append(start)
                    counts[0] += 1
                    if done > end:
                        end = done
                    if record is not None:
                        starts[rec.seq] = start
                        finished(rec.seq, done)
                    progress = True
                # the load and store units take their next instruction once idle
                for u, pq, h, q in ((0, pend_l, hist_l, 0), (1, pend_s, hist_s, 2)):
                    while busy[u] is None and pq:
                        ready, rec = pq[0]
                        pop = rec.pop_next if u == 0 else rec.pop_prev
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
                            starts[rec.seq] = start
                        progress = True
                        if rec.op is Op.CONFIG:
                            free[q] = start + config_cycles
                            end = max(end, start + config_cycles)
                            if record is not None:
                                finished(rec.seq, start + config_cycles)
                            continue
                        counts[2 if u == 0 else 3] += rec.size
                        if ideal:
                            # unbounded bandwidth, no latency: the data is there when asked for
                            free[q] = start + 1
                            if rec.push_next if u == 0 else rec.push_prev:
                                (t_l2c if u == 0 else t_s2c).append(start + 1)
                            end = max(end, start + 1)
                            if record is not None:
                                finished(rec.seq, start + 1)
                            continue
                        if u == 0:
                            busy[0] = [start + load_delay, rec.size, rec]
                        else:
                            busy[1] = [start + rec.delay, rec.size, rec]
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
                    horizon = max(token, free[2 * u], w_prev + len(fed) + 1 + queue_latency) \
                        + (load_delay if u == 0 else raw_store_delay)
                elif pend_c and (not t_l2c and pend_c[0][1].pop_prev if u == 1
                                 else not t_s2c and pend_c[0][1].pop_next):
                    # The token it waits for comes from a compute not yet issued, and the
                    # next compute waits for a token only the running unit can give (at the
                    # end of this or a later instruction): the idle unit cannot ask for the
                    # port before the running one is done, which may run alone to its end.
                    horizon = None
                else:   # the token comes from a compute not yet issued: at the soonest
                    token = array.earliest_out() + wb_done
                    horizon = max(token, free[2 * u], w_prev + len(fed) + 1 + queue_latency) \
                        + (load_delay if u == 0 else raw_store_delay)
            if horizon is None and (load is None or store is None) and cal is None:
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
                free[0] = last + load_release
                finish = last + load_done
                if rec.push_next:
                    t_l2c.append(finish)
            else:
                rec = store[2]
                busy[1] = None
                free[2] = last + store_release
                finish = last + store_push
                if rec.push_prev:
                    t_s2c.append(finish)
                finish = max(finish, free[2])
            if finish > end:
                end = finish
            if record is not None:
                finished(rec.seq, finish)

        self.d_last = d_last
        self.w_last = (w_back, w_prev)
        self.end = end
        self.array_work = array_work
        if final and (fed or any(pend)):
            rec = fed[0] if fed else next(p[1] for q in pend for p in q)
            raise ValueError(f"program deadlocks: instruction {rec.seq} ({rec.op.name}) waits "
                             f"for a token that is never pushed")

    def bound(self, array_work: int, port_beats: int) -> int:
        """A lower bound on the program's cycles, given its total array cycles and memory
        beats (as :meth:`mapping.gemm.Schedule.work` counts them): the array still has the
        computes not yet issued to run, then its latency; the port the beats not yet granted,
        then at least a store's release."""
        done, wb_done, store_release = self.t.done_latency, self.k[12], self.k[8]
        left = array_work - self.array_work
        a = self.array
        last_beat = a.pf + a.source_latency
        array = last_beat + left + a.out_delay + wb_done + done
        port = self.port.free + port_beats - self.counts[2] - self.counts[3]
        for b in self.busy:
            if b is not None:
                port += b[1]
        return max(self.end + done, array, port + store_release)

    # -- repeating states ------------------------------------------------------------------

    def snapshot(self) -> tuple[tuple, list[int], list[int]]:
        """(structure, times, counters) of the state. Two states with equal structure whose
        times differ by one constant evolve alike under the same instructions."""
        w_prev = self.w_last[-1]
        # (rec[:8] is Rec.timing_key, inline: this is on the mapper's hot path)
        struct: list = [self.port.last_load, tuple(rec[:8] for rec in self.fed)]
        times = [self.d_last, self.end]
        if NEVER in self.w_last:
            _split(self.w_last, struct, times)
        else:
            times += self.w_last
        a = self.array
        if self.os:   # (its B times stay NEVER: one source)
            _split((a.pf,), struct, times)
            deques = (self.taus_a, self.outs)
        else:
            _split((a.pf, a.pbf, a.pa0), struct, times)
            deques = (self.taus_a, self.taus_b, self.outs)
        for dq in deques:
            struct.append(len(dq))
            times.extend(dq)
        times += self.free
        times.append(self.port.free)
        qd = self.k[0]
        for q in range(3):
            pq = self.pending[q]
            struct.append(tuple(p[1][:8] for p in pq))
            times.extend(p[0] for p in pq)
            # the dispatcher will look at no start older than the last ``depth - waiting``,
            # nor be held by one at or before its last queue write
            h = self.history[q]
            recent = list(h)[max(0, len(h) - (qd - len(pq))):]
            struct.append((len(h), tuple(s > w_prev for s in recent)))
            times.extend(s for s in recent if s > w_prev)
        for name in isa.TOKENS:
            tq = self.tokens[name]
            struct.append(len(tq))
            times.extend(tq)
        for b in self.busy:
            if b is None:
                struct.append(None)
            else:
                struct.append((b[1], b[2][:8]))
                times.append(b[0])
        return tuple(struct), times, self.counts + [self.port.wait, self.array_work]

    def shift(self, delta: int, counts: list[int]) -> None:
        """Move every time forward by ``delta`` cycles and add ``counts`` to the counters."""
        def moved(v: int) -> int:
            return v if v == NEVER else v + delta

        self.d_last += delta
        self.end += delta
        self.w_last = tuple(moved(w) for w in self.w_last)
        for name in ArrayModel.TIMES:
            setattr(self.array, name, moved(getattr(self.array, name)))
        for attr in ("taus_a", "taus_b", "outs"):
            dq = getattr(self, attr)
            setattr(self, attr, deque((v + delta for v in dq), maxlen=dq.maxlen))
        self.free = [f + delta for f in self.free]
        self.port.free += delta
        for q in range(3):
            for p in self.pending[q]:
                p[0] += delta
            h = self.history[q]
            self.history[q] = deque((s + delta for s in h), maxlen=h.maxlen)
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


def program_cycles(cfg: EngineConfig, program: Sequence[Insn], *,
                   stall: int = 0) -> ProgramTiming:
    """Replay the program through the dispatcher, the three units and the memory port.

    ``stall``: the simulation memory refuses requests with this chance out of 256 (its LFSR's
    pattern, restarted with the program). Raises ``ValueError`` for a program whose tokens
    deadlock.
    """
    replay = Replay(cfg, record=True, stall=stall)
    replay.feed(program)
    replay.run(final=True)
    return replay.timing()


def stream_cycles(cfg: EngineConfig, prologue: Sequence[Insn], n: int,
                  key: Callable[[int], Hashable], piece: Callable[[int], Sequence[Insn]],
                  periods: Sequence[int] = (1, 2), *, ideal_memory: bool = False,
                  promise: tuple[bool, bool] = (False, False),
                  records: Callable[[int], tuple[list[Rec], list[int]]] | None = None,
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
                 records: Callable[[int], tuple[list[Rec], list[int]]] | None = None):
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
    made: dict[Hashable, tuple[list[Rec], list[int]]] = {}
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


def mark(items: list, first: Iterable[str], last: Iterable[str]) -> list:
    """Put dependency flags on the first and the last of a group of instructions or records
    (a synchronization unit: the group waits for tokens once and gives them once)."""
    if not items:
        return items
    for i, flags in ((0, frozenset(first)), (-1, frozenset(last))):
        if not flags:
            continue
        item = items[i]
        if isinstance(item, Rec):
            items[i] = _flagged(item, flags)
        else:
            items[i] = Insn(item.op, item.args, item.deps | flags)
    return items


@lru_cache(maxsize=4096)
def _flagged(rec: Rec, flags: frozenset[str]) -> Rec:
    return rec._replace(**dict.fromkeys(flags, True))
