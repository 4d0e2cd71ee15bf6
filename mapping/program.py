"""Cycle model of ISA programs on the engine, instruction by instruction.

Each unit's timing is written as formulas from the engine's parameters and the latencies its
blocks state (``TileTiming``, ``Requantizer.latency``, the memory latency). For one instruction
alone the model equals the RTL exactly; for whole programs :func:`program_cycles` replays the three
queues with their dependency tokens as an event model (memory contention between loads and
stores is the one effect it approximates).

Times are cycles from the first cycle the engine sees the program (cycle 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rtl import isa
from rtl.config import EngineConfig
from rtl.engine import EngineTiming
from rtl.isa import Insn, Op
from rtl.tile import TileTiming

from .timing import tile_stream_cycles

__all__ = ["DISPATCH_LATENCY", "ProgramTiming", "instruction_cycles", "program_cycles"]

DISPATCH_LATENCY = EngineTiming.dispatch_latency
COMPUTE_ISSUE_LATENCY = EngineTiming.compute_issue_latency
STORE_SETUP = EngineTiming.store_setup
STORE_PARAMS = EngineTiming.store_params
QUEUE_DEPTH = EngineTiming.queue_depth
REQUANT_LATENCY = EngineTiming.requant_latency


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
    idle. Spans: LOAD ``beats + mem_latency + 1``; COMPUTE the tile's stream time plus issue
    latency and writeback; STORE setup, parameter reads and the requantizer if it requantizes,
    then one cycle per memory beat; CONFIG one cycle.
    """
    return DISPATCH_LATENCY + _span(cfg, insn) + 1


def _span(cfg: EngineConfig, insn: Insn) -> int:
    a = insn.args
    if insn.op == Op.LOAD:
        return load_beats(cfg, insn) + _mem_latency(cfg) + 1
    if insn.op == Op.COMPUTE:
        return tile_stream_cycles(cfg, [a["extent"]]).cycles + COMPUTE_ISSUE_LATENCY + 1
    if insn.op == Op.STORE:
        params = STORE_PARAMS + REQUANT_LATENCY if a["requant"] else 0
        return STORE_SETUP + 3 + params + store_beats(cfg, insn)
    return 1


@dataclass
class ProgramTiming:
    """Predicted cycles of a program and where the units spent them."""

    cycles: int
    compute_cycles: int          # cycles the array accepts operand beats
    load_beats: int
    store_beats: int
    per_insn: list[tuple[int, int]] = field(default_factory=list)  # (start, end) per insn


def program_cycles(cfg: EngineConfig, program: Sequence[Insn]) -> ProgramTiming:
    """Replay the program through the three queues; returns the predicted cycle count."""
    r = cfg.rows
    lat = _mem_latency(cfg)
    tile = TileTiming(cfg)
    os_ = cfg.dataflow == "os"

    # tokens: lists of the cycles at which each token becomes visible
    pushed = {"l2c": [], "c2l": [], "c2s": [], "s2c": []}
    popped = {"l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}

    queue_of = {Op.LOAD: "load", Op.COMPUTE: "compute", Op.STORE: "store", Op.CONFIG: "store"}
    taken: dict[str, list[int]] = {"load": [], "compute": [], "store": []}
    dispatch = -1
    load_free = 0          # next cycle the load unit may take an instruction
    store_free = 0
    compute_free = 0       # next cycle the compute front end may take an instruction
    beat_free = 0          # next cycle the array may take a beat
    prev_last = -10**9     # os: cycle the previous tile's last beat was taken
    weights_free = 0       # ws: first cycle the next weights may load
    b_next = 0             # ws: next cycle the weight stream can deliver
    compute_beats = 0
    loads = stores = 0
    end = 0
    per_insn = []

    def wait_token(name: str) -> int:
        idx = popped[name]
        popped[name] += 1
        if idx >= len(pushed[name]):
            raise ValueError(f"program deadlocks: a {name} token is popped but never pushed")
        return pushed[name][idx]

    # Tokens are pushed by later events than they are popped in program order only across
    # queues; the replay processes instructions in program order, which is the order each queue
    # sees them, and resolves a pop against pushes already replayed. A pop whose push comes
    # later in program order would deadlock the RTL too.
    for insn in program:
        q = queue_of[insn.op]
        # dispatch: one per cycle, waiting while the target queue is full
        dispatch += 1
        if len(taken[q]) >= QUEUE_DEPTH:
            dispatch = max(dispatch, taken[q][-QUEUE_DEPTH] + 1)
        ready = dispatch + DISPATCH_LATENCY
        deps = insn.deps
        if insn.op == Op.LOAD:
            start = max(ready, load_free)
            if "pop_next" in deps:
                start = max(start, wait_token("c2l"))
            beats = load_beats(cfg, insn)
            loads += beats
            load_free = start + beats + 1
            done = start + beats + lat
            if "push_next" in deps:
                pushed["l2c"].append(done + 1)
            end = max(end, done + 1)
        elif insn.op == Op.COMPUTE:
            start = max(ready, compute_free)
            if "pop_prev" in deps:
                start = max(start, wait_token("l2c"))
            if "pop_next" in deps:
                start = max(start, wait_token("s2c"))
            compute_free = start + 1
            extent = insn.args["extent"]
            first = max(start + COMPUTE_ISSUE_LATENCY, beat_free)
            if os_:
                last = max(first + extent - 1, prev_last + tile.min_tile_cycles)
                prev_last = last
                beat_free = last + 1
                result = last + tile.latency + r - 1
            else:
                load_w = max(b_next, weights_free, start + COMPUTE_ISSUE_LATENCY)
                b_next = load_w + r
                first = max(first, b_next)
                weights_free = first + tile.weight_swap_cycles
                last = first + extent - 1
                beat_free = last + 1
                result = last + tile.latency
            compute_beats += extent
            done = result + 1  # written into the accumulator
            for name, flag in (("c2l", "push_prev"), ("c2s", "push_next")):
                if flag in deps:
                    pushed[name].append(done + 1)
            end = max(end, done + 1)
        elif insn.op == Op.STORE:
            start = max(ready, store_free)
            if "pop_prev" in deps:
                start = max(start, wait_token("c2s"))
            beats = store_beats(cfg, insn)
            stores += beats
            span = _span(cfg, insn)
            store_free = start + span
            if "push_prev" in deps:
                pushed["s2c"].append(start + span)
            end = max(end, start + span)
        else:
            start = max(ready, store_free)
            store_free = start + 1
            end = max(end, start + 1)
        taken[q].append(start)
        per_insn.append((start, end))
    return ProgramTiming(cycles=end + 1, compute_cycles=compute_beats, load_beats=loads,
                         store_beats=stores, per_insn=per_insn)


def check_program(cfg: EngineConfig, program: Sequence[Insn]) -> None:
    """Assemble (which checks every instruction) and replay (which finds token deadlocks)."""
    isa.assemble(program, cfg)
    program_cycles(cfg, program)
