"""The engine's parts, each on its own in amaranth.sim: their stated timing measured cycle for
cycle, their behaviour checked (dispatcher, token counters, arbiter, counters, load unit,
compute unit, store unit and the store path's parts)."""

import random

import numpy as np
import pytest
import torch
from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In
from amaranth.sim import Simulator

from golden import gemm_int, quantize_multiplier, requantize
from mapping.timing import NEVER, ArrayModel
from rtl import isa
from rtl.arbiter import MemoryArbiter
from rtl.compute import ComputeTiming, ComputeUnit
from rtl.config import EngineConfig
from rtl.counters import PerfCounters
from rtl.dispatch import Dispatcher, DispatchTiming
from rtl.isa import ErrorCode, Op, Spad
from rtl.load import LoadTiming, LoadUnit
from rtl.memory import BlockMemory, engine_memories
from rtl.postops import RequantStage
from rtl.store import StoreTiming, StoreUnit
from rtl.tokens import TokenCounter, TokenTiming

CFG = EngineConfig(rows=3, cols=5, spad_kib=4, acc_kib=4, mem_bytes_per_cycle=8,
                   mem_latency=4)


def simulate(dut, *testbenches, cycles: int = 20_000):
    """Run until the testbenches end; fail, not hang, after ``cycles``."""

    async def watchdog(ctx):
        for _ in range(cycles):
            await ctx.tick()
        raise AssertionError(f"still running after {cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    sim.add_testbench(watchdog, background=True)
    sim.run()


# -- token counters, arbiter, activity counters ---------------------------------------------------

def test_a_token_is_there_the_cycle_after_its_push_and_gone_after_its_pop():
    dut = TokenCounter()
    seen = []

    async def tb(ctx):
        pattern = [(1, 0), (0, 0), (1, 1), (1, 0), (0, 1), (0, 1), (0, 0)]
        for push, pop in pattern:
            ctx.set(dut.producer.push, push)
            ctx.set(dut.consumer.pop, pop and ctx.get(dut.consumer.available))
            seen.append((ctx.get(dut.consumer.available), ctx.get(dut.count)))
            await ctx.tick()

    simulate(dut, tb)
    assert TokenTiming.latency == 1
    # pushed in cycle 0, there in cycle 1; push and pop together keep it; two pops empty it
    assert seen == [(0, 0), (1, 1), (1, 1), (1, 1), (1, 2), (1, 1), (0, 0)]


def test_the_arbiter_alternates_and_adds_no_latency():
    dut = MemoryArbiter(CFG)
    granted = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for cycle in range(8):
            ctx.set(dut.load.valid, cycle < 6)
            ctx.set(dut.store.valid, cycle >= 1)
            ctx.set(dut.load.payload.addr, 100 + cycle)
            ctx.set(dut.store.payload.addr, 200 + cycle)
            ctx.set(dut.store.payload.write, 1)
            # what is offered this cycle is on o this cycle (latency 0)
            assert ctx.get(dut.o.valid)
            who = "load" if ctx.get(dut.load.ready) else "store"
            assert ctx.get(dut.o.payload.addr) == (100 if who == "load" else 200) + cycle
            assert ctx.get(dut.read) == (who == "load")
            assert ctx.get(dut.write) == (who == "store")
            granted.append(who)
            await ctx.tick()

    simulate(dut, tb)
    assert MemoryArbiter.latency == 0
    assert granted == ["load", "store", "load", "store", "load", "store", "store", "store"]


def test_activity_counters_count_each_event():
    dut = PerfCounters()
    rng = random.Random(3)
    pulses = {name: [rng.random() < 0.5 for _ in range(40)] for name in dut.events}

    async def tb(ctx):
        for cycle in range(40):
            for name in dut.events:
                ctx.set(getattr(dut, name), pulses[name][cycle])
            await ctx.tick()
        for name in dut.events:
            assert ctx.get(getattr(dut.counters, name)) == sum(pulses[name]), name

    simulate(dut, tb)


# -- the dispatcher ---------------------------------------------------------------------------

def _program(n: int, rng: random.Random) -> list[isa.Insn]:
    """Legal instructions of every kind, in a random order."""
    kinds = [
        lambda: isa.load(Spad.A, rng.randint(0, 10), 2, 3, rng.randint(0, 99), 8),
        lambda: isa.compute(0, 0, rng.randint(0, 5), rng.randint(1, 9), True),
        lambda: isa.store(0, 2, 5, 64 * rng.randint(0, 9), 64, rng.random() < 0.5),
        lambda: isa.config(zero_point=rng.randint(-5, 5)),
    ]
    return [rng.choice(kinds)() for _ in range(n)]


def _run_dispatcher(program, takes_when):
    """Feed ``program`` into a dispatcher (always offered); each unit takes its queue's head
    when ``takes_when(queue, cycle)``. Returns per instruction (transfer cycle, first cycle at
    its queue's head, take cycle), and the dispatcher."""
    dut = Dispatcher(CFG)
    heads = {isa.Queue.LOAD: dut.load, isa.Queue.COMPUTE: dut.compute, isa.Queue.STORE: dut.store}
    words = isa.assemble(program, CFG)
    by_queue = {q: [i for i, insn in enumerate(program) if insn.queue == q] for q in heads}
    taken = dict.fromkeys(heads, 0)
    out = [[None, None, None] for _ in program]

    async def tb(ctx):
        fed = 0
        cycle = 0
        while any(taken[q] < len(by_queue[q]) for q in heads):
            if fed < len(words):
                ctx.set(dut.insn.valid, 1)
                ctx.set(dut.insn.payload, isa.insn_layout.from_bits(words[fed]))
                if ctx.get(dut.insn.ready):
                    out[fed][0] = cycle
                    fed += 1
            else:
                ctx.set(dut.insn.valid, 0)
            for q, head in heads.items():
                take = takes_when(q, cycle)
                ctx.set(head.ready, take)
                if ctx.get(head.valid):
                    i = by_queue[q][taken[q]]
                    assert ctx.get(head.payload).as_value().value == words[i]
                    if out[i][1] is None:
                        out[i][1] = cycle
                    if take:
                        out[i][2] = cycle
                        taken[q] += 1
            await ctx.tick()
            cycle += 1

    simulate(dut, tb)
    return out, dut


def test_the_dispatcher_hands_each_instruction_on_after_its_latency():
    program = _program(40, random.Random(1))
    out, _ = _run_dispatcher(program, lambda q, cycle: True)
    t = DispatchTiming(CFG)
    assert t.latency == 4
    assert [a for a, _, _ in out] == list(range(len(program)))   # one per cycle
    assert all(take - a == t.latency for a, _, take in out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_behind_a_full_queue_the_dispatcher_follows_its_stated_recurrence(seed):
    """Units that take their queue's head at random, queues that fill: every instruction's
    transfer and arrival at its queue's head are as :class:`DispatchTiming` says."""
    rng = random.Random(seed)
    program = _program(300, rng)
    busy = {q: [rng.random() < 0.9 for _ in range(5000)] for q in isa.Queue}
    out, _ = _run_dispatcher(program, lambda q, cycle: not busy[q][cycle])
    t = DispatchTiming(CFG)
    d_prev, w_hist = 0, [NEVER] * t.decode_depth
    starts = {q: [] for q in isa.Queue}
    for i, insn in enumerate(program):
        a = d_prev
        d = max(a + t.decode_latency, w_hist[-t.decode_depth] + 1)
        w = max(d + t.check_latency, w_hist[-1] + 1)
        k = len(starts[insn.queue])
        if k >= t.queue_depth:
            w = max(w, starts[insn.queue][k - t.queue_depth] + t.room_latency)
        head = w + t.queue_latency
        if starts[insn.queue]:
            head = max(head, starts[insn.queue][-1] + 1)
        assert (out[i][0], out[i][1]) == (a, head), (i, str(insn))
        starts[insn.queue].append(out[i][2])
        d_prev, w_hist = d, w_hist + [w]
    # the queues did fill: some instruction waited for room
    assert max(take - a for a, _, take in out) > t.queue_depth


def _bad_instructions():
    """(instruction, the ErrorCode the engine raises for it): one fault each."""
    g = isa.geometry(CFG)
    load = isa.load(Spad.A, 0, 2, 3, 0x100, 16)
    store = isa.store(0, 2, 5, 0x100, 64, True)
    raw = isa.store(0, 2, 5, 0x100, 64, False)

    def with_(insn, **args):
        return isa.Insn(insn.op, {**insn.args, **args}, insn.deps)

    return [
        (isa.Insn(Op.LOAD, load.args, frozenset({"pop_prev"})), ErrorCode.DEPS),
        (isa.Insn(Op.STORE, store.args, frozenset({"push_next"})), ErrorCode.DEPS),
        (isa.Insn(Op.CONFIG, isa.config().args, frozenset({"pop_prev"})), ErrorCode.DEPS),
        (with_(load, spad=3), ErrorCode.SPAD),
        (with_(load, rows=0), ErrorCode.EXTENT),
        (with_(load, length=0), ErrorCode.EXTENT),
        (with_(load, length=4), ErrorCode.EXTENT),
        (with_(load, row=g.a_rows - 1), ErrorCode.OVERRUN),
        (isa.load(Spad.Q, 0, 1, 20, 0x102, 20), ErrorCode.ALIGN),
        (isa.load(Spad.Q, g.q_rows - 1, 2, 20, 0x100, 20), ErrorCode.OVERRUN),
        (with_(load, addr=(1 << 32) - 2), ErrorCode.ADDRESS),
        (isa.compute(0, 0, 0, 0, False), ErrorCode.EXTENT),
        (isa.compute(g.a_rows - 2, 0, 0, 3, False), ErrorCode.OVERRUN),
        (isa.compute(0, 0, g.acc_rows - 2, 1, False), ErrorCode.OVERRUN),
        (with_(store, rows=0), ErrorCode.EXTENT),
        (with_(store, cols=6), ErrorCode.EXTENT),
        (with_(store, acc_row=g.acc_rows - 1), ErrorCode.OVERRUN),
        (with_(store, q_row=g.q_rows - 2), ErrorCode.OVERRUN),
        (with_(raw, addr=0x102), ErrorCode.ALIGN),
        (with_(raw, stride=66), ErrorCode.ALIGN),
        (with_(store, stride=4), ErrorCode.STRIDE),
        (with_(raw, stride=16), ErrorCode.STRIDE),
        (with_(store, addr=(1 << 32) - 4), ErrorCode.ADDRESS),
        (isa.config(zero_point=128), ErrorCode.RANGE),
        (isa.config(qmin=-129), ErrorCode.RANGE),
        (isa.config(qmin=5, qmax=4), ErrorCode.RANGE),
        # several segments a row: the accumulator span, the row's width, its first segment
        (with_(store, extra_segs=2, seg_stride=g.acc_rows // 2), ErrorCode.OVERRUN),
        (with_(store, extra_segs=2, seg_stride=2, stride=14), ErrorCode.STRIDE),
        (with_(store, extra_segs=1, addr=(1 << 32) - 4), ErrorCode.ADDRESS),
        (with_(raw, extra_segs=1, stride=36), ErrorCode.STRIDE),
        # softmax: int8 logits only, at most the array's rows; x0 in range
        (with_(raw, softmax=1), ErrorCode.MODE),
        (with_(store, softmax=1, rows=CFG.rows + 1), ErrorCode.MODE),
        (with_(store, causal=1), ErrorCode.MODE),
        (isa.config_softmax(0), ErrorCode.RANGE),
        (isa.config_softmax(isa.X0_MIN - 1), ErrorCode.RANGE),
    ]


def test_the_hardware_refuses_what_the_assembler_refuses_with_the_same_code():
    bad = _bad_instructions()
    good = isa.assemble([isa.load(Spad.A, 0, 1, 3, 0, 3)], CFG)[0]
    words = [isa._pack(insn) for insn, _ in bad] + [5 << isa.insn_layout["op"].offset]
    expected = [code for _, code in bad] + [ErrorCode.OPCODE]
    for insn, code in bad:
        with pytest.raises(isa.AsmError) as e:
            isa.check(insn, CFG)
        assert e.value.code == code, (str(insn), str(e.value))
    assert {code for code in expected} == set(ErrorCode) - {ErrorCode.NONE}
    dut = Dispatcher(CFG)
    rst = Signal()
    top = Module()
    top.submodules.dut = ResetInserter(rst)(dut)

    async def tb(ctx):
        for word, code in zip(words, expected, strict=True):
            ctx.set(rst, 1)   # (a refused instruction stops the dispatcher: reset per case)
            await ctx.tick()
            ctx.set(rst, 0)
            for head in (dut.load, dut.compute, dut.store):
                ctx.set(head.ready, 1)
            queue = [good, word, good, good]
            dispatched = 0
            for _ in range(12):
                ctx.set(dut.insn.valid, bool(queue))
                if queue:
                    ctx.set(dut.insn.payload, isa.insn_layout.from_bits(queue[0]))
                    if ctx.get(dut.insn.ready):
                        queue.pop(0)
                dispatched += ctx.get(dut.dispatched)
                await ctx.tick()
            assert ctx.get(dut.error) and ctx.get(dut.error_code) == code, code
            assert dispatched == 2   # the good one, then the bad one; nothing after it

    simulate(top, tb)


# -- a memory for the units' tests --------------------------------------------------------------

class MemoryModel:
    """A testbench memory behind a unit's request stream (and read-data stream): takes a
    request in the cycles ``ready(cycle)`` says, answers reads ``latency`` cycles later, in
    order; writes land in ``image``. Records each grant as (cycle, write, addr, length)."""

    def __init__(self, image: bytearray, latency: int, ready=lambda cycle: True):
        self.image = image
        self.latency = latency
        self.ready = ready
        self.grants = []

    async def serve(self, ctx, req, rdata=None, cycles: int = 10_000):
        answers = {}
        for cycle in range(cycles):
            ready = self.ready(cycle)
            ctx.set(req.ready, ready)
            if rdata is not None:
                beat = answers.pop(cycle, None)
                ctx.set(rdata.valid, beat is not None)
                if beat is not None:
                    ctx.set(rdata.payload, list(beat))
            if ready and ctx.get(req.valid):
                p = ctx.get(req.payload)
                addr, length = p.addr, p.length
                self.grants.append((cycle, bool(p.write), addr, length))
                if p.write:
                    for i in range(length):
                        self.image[(addr + i) % len(self.image)] = p.data[i]
                else:
                    w = len(p.data)
                    data = [self.image[(addr + i) % len(self.image)] if i < length else 0
                            for i in range(w)]
                    answers[cycle + self.latency] = data
            await ctx.tick()


def _read_rows(memory_port_reads, port, rows):
    """A testbench coroutine factory reading ``rows`` of a memory through ``port``."""
    async def read(ctx):
        out = []
        for row in rows:
            ctx.set(port.addr, row)
            await ctx.tick()
            await ctx.tick()
            out.append(ctx.get(port.data))
        memory_port_reads.extend(out)
    return read


# -- the load unit ------------------------------------------------------------------------------

def _load_top(cfg):
    m = Module()
    m.submodules.unit = unit = LoadUnit(cfg)
    reads = {}
    for name in ("a", "b", "q"):
        mem = engine_memories(cfg)[name]
        m.submodules[f"spad_{name}"] = spad = BlockMemory(shape=mem.shape, depth=mem.depth)
        wiring.connect(m, getattr(unit, f"write_{name}"), spad.write_port())
        reads[name] = spad.read_port()
    return m, unit, reads


@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_the_load_unit_takes_the_cycles_it_states(stall):
    cfg = CFG
    t = LoadTiming(cfg)
    g = isa.geometry(cfg)
    rng = random.Random(7)
    image = bytearray(rng.randrange(256) for _ in range(4096))
    program = [
        isa.load(Spad.A, 0, 4, 3, 0x10, 7, "push_next"),
        isa.load(Spad.B, 2, 3, 5, 0x203, 13, "pop_next"),           # a row across two words
        isa.load(Spad.Q, 1, 2, 20, 0x400, 24, "push_next"),         # three beats a row
        isa.load(Spad.A, 9, 1, 2, 0x7FF, 3),
        isa.load(Spad.B, 20, 5, 5, 0x100, 8, "pop_next", "push_next"),
    ]
    words = isa.assemble(program, cfg)
    pattern = random.Random(11)
    ready = [pattern.random() >= stall for _ in range(4000)]
    memory = MemoryModel(image, cfg.read_latency, lambda cycle: ready[cycle])
    top, unit, reads = _load_top(cfg)
    takes, pushes, requests = [], [], []
    contents = {}

    async def run(ctx):
        ctx.set(unit.c2l.available, 0)
        fed = 0
        for cycle in range(600):
            ctx.set(unit.c2l.available, cycle >= 150)   # compute frees a buffer late
            ctx.set(unit.insn.valid, fed < len(words))
            if fed < len(words):
                ctx.set(unit.insn.payload, isa.insn_layout.from_bits(words[fed]))
                if ctx.get(unit.insn.ready):
                    takes.append(cycle)
                    fed += 1
            if ctx.get(unit.req.valid):
                requests.append(cycle)
            if ctx.get(unit.l2c.push):
                pushes.append(cycle)
            await ctx.tick()
        assert ctx.get(unit.idle) and not ctx.get(unit.error)
        for name, insn in zip(("a", "b", "q", "a", "b"), program, strict=True):
            rows = []
            for row in range(insn.args["row"], insn.args["row"] + insn.args["rows"]):
                ctx.set(reads[name].addr, row)
                await ctx.tick()
                rows.append(ctx.get(reads[name].data))
            contents[insn] = rows

    async def serve(ctx):
        await memory.serve(ctx, unit.req, unit.rdata, cycles=600)

    simulate(top, run, serve)
    # every instruction's first request comes request_delay after it is taken, its beats are
    # granted as the memory takes them (one a cycle), and its rows are written and its token
    # pushed read_latency + write_latency after its last beat; the next one is taken release
    # cycles after that last beat, or when its token comes
    grants = [c for c, *_ in memory.grants]
    k = 0
    push_at = []
    for n, insn in enumerate(program):
        beats = t.beats(insn.args["rows"], insn.args["length"])
        assert takes[n] + t.request_delay in requests
        mine = grants[k:k + beats]
        k += beats
        assert mine[0] >= takes[n] + t.request_delay
        asked = [c for c in range(mine[0], mine[-1] + 1)]
        assert mine == [c for c in asked if ready[c]]   # no cycle the memory took is lost
        if n + 1 < len(program):
            waits = "pop_next" in program[n + 1].deps
            assert takes[n + 1] == max(mine[-1] + t.release, 150 if waits else 0)
        if "push_next" in insn.deps:
            push_at.append(mine[-1] + t.read_latency + t.write_latency)
    assert pushes == push_at
    for insn, rows in contents.items():
        a = insn.args
        width = {Spad.A: g.a_row_bytes, Spad.B: g.b_row_bytes, Spad.Q: g.q_row_bytes}[
            Spad(a["spad"])]
        for r, got in enumerate(rows):
            start = a["addr"] + r * a["stride"]
            want = bytes(image[start:start + a["length"]]) + bytes(width - a["length"])
            elem = 4 if Spad(a["spad"]) == Spad.Q else 1
            values = np.frombuffer(want, dtype=np.int8 if elem == 1 else "<i4")
            assert [int(got[j]) for j in range(len(values))] == values.tolist()


def test_the_load_unit_stops_at_the_row_past_the_address_space():
    cfg = CFG
    insn = isa.load(Spad.A, 0, 4, 3, (1 << 32) - 6, 3)   # rows at -6, -3, 0 (past), ...
    with pytest.raises(isa.AsmError) as e:
        isa.check(insn, cfg)
    assert e.value.code == ErrorCode.ADDRESS
    memory = MemoryModel(bytearray(64), cfg.read_latency)
    top, unit, _ = _load_top(cfg)

    async def run(ctx):
        ctx.set(unit.insn.valid, 1)
        ctx.set(unit.insn.payload, isa.insn_layout.from_bits(isa._pack(insn)))
        await ctx.tick().until(unit.insn.ready)
        ctx.set(unit.insn.valid, 0)
        for _ in range(40):
            await ctx.tick()
        assert ctx.get(unit.error)

    async def serve(ctx):
        await memory.serve(ctx, unit.req, unit.rdata, cycles=60)

    simulate(top, run, serve)
    assert [addr for _, _, addr, _ in memory.grants] == [(1 << 32) - 6, (1 << 32) - 3]


# -- the compute unit ---------------------------------------------------------------------------

def _compute_top(cfg):
    """The compute unit with its scratchpads and accumulator; the testbench writes A and B
    and reads the accumulator through ports of its own."""
    m = Module()
    m.submodules.unit = unit = ComputeUnit(cfg)
    mems = {name: BlockMemory(shape=mem.shape, depth=mem.depth)
            for name, mem in engine_memories(cfg).items() if name != "q"}
    for name, mem in mems.items():
        m.submodules[f"mem_{name}"] = mem
    wiring.connect(m, unit.read_a, mems["a"].read_port(output_register=True))
    wiring.connect(m, unit.read_b, mems["b"].read_port(output_register=True))
    wiring.connect(m, unit.acc_read, mems["acc"].read_port())
    wiring.connect(m, unit.acc_write, mems["acc"].write_port())
    ports = {"a": mems["a"].write_port(), "b": mems["b"].write_port(),
             "acc": mems["acc"].read_port()}
    return m, unit, ports


def _compute_model(cfg, program, offered):
    """The compute unit's stated timing, instruction by instruction, with every token there:
    (take, beats into the array, token push) of each COMPUTE, given the cycle each is offered."""
    t = ComputeTiming(cfg)
    array = ArrayModel(cfg)
    taus_a, taus_b, outs, out = [], [], [], []
    free = 0
    for j, insn in enumerate(program):
        start = max(offered[j], free)
        if j >= t.source_depth:
            start = max(start, taus_a[j - t.source_depth] + t.room_latency,
                        taus_b[j - t.source_depth] + t.room_latency)
        if j >= t.writeback_depth:
            start = max(start, outs[j - t.writeback_depth] + t.room_latency)
        free = start + 1
        e = insn.args["extent"]
        tau_a, tau_b, first, last, last_out = array.issue(start + t.descriptor_latency, e)
        taus_a.append(tau_a)
        taus_b.append(tau_b)
        outs.append(last_out)
        beats = list(range(first, first + e - 1)) + [last]
        out.append((start, beats, last_out + t.writeback_latency))
    return out


@pytest.mark.parametrize("cfg", [
    CFG, CFG.replace(dataflow="ws"),
    EngineConfig(rows=2, cols=8, spad_kib=2, acc_kib=2),                   # drains bind
    EngineConfig(rows=1, cols=6, dataflow="ws", spad_kib=2, acc_kib=2),    # swaps bind
], ids=lambda c: c.label)
def test_the_compute_unit_runs_tiles_in_the_cycles_it_states(cfg):
    rng = random.Random(cfg.label)
    r, c = cfg.rows, cfg.cols
    os_ = cfg.dataflow == "os"
    a = torch.randint(-128, 128, (64, r))
    b = torch.randint(-128, 128, (64, c))
    program = []
    for n in range(24):
        # short tiles in a burst (the FIFOs fill), then longer ones
        e = rng.choice([1, 1, 2, 3]) if n < 16 else rng.randint(1, 12)
        base = rng.randint(0, 64 - max(e, r))
        program.append(isa.compute(base, rng.randint(0, 64 - max(e, r)), 4 * (n % 6), e,
                                   n % 6 != n % 4, "push_next"))
    words = isa.assemble(program, cfg)
    top, unit, ports = _compute_top(cfg)
    takes, beats, pushes = [], [], []
    offered = []
    acc_rows = {}

    async def run(ctx):
        for i in range(64):
            for name, values in (("a", a), ("b", b)):
                ctx.set(ports[name].addr, i)
                ctx.set(ports[name].data, values[i].tolist())
                ctx.set(ports[name].en, 1)
            await ctx.tick()
        for name in ("a", "b"):
            ctx.set(ports[name].en, 0)
        ctx.set(unit.l2c.available, 1)
        ctx.set(unit.s2c.available, 1)
        await ctx.tick()
        fed = 0
        for cycle in range(700):
            ctx.set(unit.insn.valid, fed < len(words))
            if fed < len(words):
                if len(offered) == fed:
                    offered.append(cycle)
                ctx.set(unit.insn.payload, isa.insn_layout.from_bits(words[fed]))
                if ctx.get(unit.insn.ready):
                    takes.append(cycle)
                    fed += 1
            if ctx.get(unit.beat):
                beats.append(cycle)
            if ctx.get(unit.c2s.push):
                pushes.append(cycle)
            await ctx.tick()
        assert ctx.get(unit.idle)
        for row in range(32):
            ctx.set(ports["acc"].addr, row)
            await ctx.tick()
            acc_rows[row] = [int(v) for v in ctx.get(ports["acc"].data)]

    simulate(top, run)
    model = _compute_model(cfg, program, offered)
    assert takes == [s for s, _, _ in model]
    assert beats == [x for _, bs, _ in model for x in bs]
    assert pushes == [p for _, _, p in model]
    # and the results: every tile's rows in the accumulator, overwritten or added to
    want = {}
    for insn in program:
        x = insn.args
        if os_:
            tile = gemm_int(a[x["a_row"]:x["a_row"] + x["extent"]].T,
                            b[x["b_row"]:x["b_row"] + x["extent"]], in_bits=8, acc_bits=32)
        else:
            tile = gemm_int(a[x["a_row"]:x["a_row"] + x["extent"]], b[x["b_row"]:x["b_row"] + r],
                            in_bits=8, acc_bits=32)
        for i, row in enumerate(tile.tolist()):
            dest = x["acc_row"] + i
            old = want.get(dest, [0] * c) if x["accumulate"] else [0] * c
            want[dest] = [p + q for p, q in zip(old, row, strict=True)]
    for dest, row in want.items():
        assert acc_rows[dest] == row, dest
    # the burst of short tiles filled a descriptor FIFO: some take waited for room
    assert any(s > max(o, prev + 1) for (s, _, _), o, prev in
               zip(model[1:], offered[1:], takes, strict=True))


# -- the store unit -----------------------------------------------------------------------------

def _store_top(cfg):
    m = Module()
    m.submodules.unit = unit = StoreUnit(cfg)
    mems = engine_memories(cfg)
    m.submodules.acc = acc = BlockMemory(shape=mems["acc"].shape, depth=mems["acc"].depth)
    m.submodules.q = q = BlockMemory(shape=mems["q"].shape, depth=mems["q"].depth)
    wiring.connect(m, unit.acc_read, acc.read_port())
    wiring.connect(m, unit.read_q, q.read_port())
    return m, unit, {"acc": acc.write_port(), "q": q.write_port()}


@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_the_store_unit_writes_golden_rows_in_the_cycles_it_states(stall):
    cfg = CFG
    t = StoreTiming(cfg)
    c = cfg.cols
    rng = random.Random(5)
    acc = torch.randint(-(1 << 20), 1 << 20, (40, c))
    acc[3, 0], acc[3, 1] = -(1 << 31), (1 << 31) - 1          # the int32 extremes
    scales = [rng.uniform(1e-5, 1e-3) for _ in range(2 * c)]
    mult_shift = [quantize_multiplier(s) for s in scales]
    bias = torch.tensor([rng.randint(-3000, 3000) for _ in range(2 * c)])
    q_rows = []
    for block in range(2):
        chans = range(block * c, (block + 1) * c)
        q_rows += [[int(bias[j]) for j in chans], [mult_shift[j][0] for j in chans],
                   [mult_shift[j][1] for j in chans]]
    program = [
        isa.store(0, 4, c, 0x100, 32, False, "pop_prev"),           # raw int32
        isa.config(zero_point=-7, qmin=-100, qmax=90),
        isa.store(4, 6, c, 0x200, 9, True, "push_prev", q_row=3),  # requantized, block 1
        isa.store(10, 3, 2, 0x300, 2, True, q_row=0),               # two columns, packed rows
        isa.config(zero_point=3, relu=True),
        isa.store(20, 5, c, 0x400, 5, True, "pop_prev", "push_prev", q_row=0),
        isa.store(30, 2, 3, 0x500, 12, False),
    ]
    words = isa.assemble(program, cfg)
    pattern = random.Random(13)
    ready = [pattern.random() >= stall for _ in range(3000)]
    memory = MemoryModel(bytearray(0x600), cfg.read_latency, lambda cycle: ready[cycle])
    top, unit, ports = _store_top(cfg)
    takes, pushes = [], []

    async def run(ctx):
        for i in range(40):
            ctx.set(ports["acc"].addr, i)
            ctx.set(ports["acc"].data, acc[i].tolist())
            ctx.set(ports["acc"].en, 1)
            if i < len(q_rows):
                ctx.set(ports["q"].addr, i)
                ctx.set(ports["q"].data, q_rows[i])
                ctx.set(ports["q"].en, 1)
            else:
                ctx.set(ports["q"].en, 0)
            await ctx.tick()
        ctx.set(ports["acc"].en, 0)
        fed = 0
        for cycle in range(1500):
            # a token for the first STORE, and the second one late
            ctx.set(unit.c2s.available, cycle < 3 or cycle >= 400)
            ctx.set(unit.insn.valid, fed < len(words))
            if fed < len(words):
                ctx.set(unit.insn.payload, isa.insn_layout.from_bits(words[fed]))
                if ctx.get(unit.insn.ready):
                    takes.append(cycle + 40)
                    fed += 1
            if ctx.get(unit.s2c.push):
                pushes.append(cycle + 40)
            await ctx.tick()
        assert ctx.get(unit.idle) and not ctx.get(unit.error)

    async def serve(ctx):
        await memory.serve(ctx, unit.req, cycles=1540)

    simulate(top, run, serve)
    grants = [cyc for cyc, write, *_ in memory.grants]
    assert all(write for _, write, *_ in memory.grants)
    k = 0
    expect_pushes = []
    stores = [(n, insn) for n, insn in enumerate(program) if insn.op == Op.STORE]
    for n, insn in stores:
        beats = t.beats(insn)
        mine = grants[k:k + beats]
        k += beats
        first = takes[n] + t.request_delay(insn)
        # the first beat asks request_delay after the take, then one every cycle the memory
        # takes one: not a cycle is lost, with or without stalls
        assert mine == [cyc for cyc in range(first, mine[-1] + 1) if ready[cyc]], str(insn)
        if n + 1 < len(program):
            waits = "pop_prev" in program[n + 1].deps
            assert takes[n + 1] == max(mine[-1] + t.release, 400 + 40 if waits else 0)
        if "push_prev" in insn.deps:
            expect_pushes.append(mine[-1] + t.push_delay)
    assert pushes == expect_pushes
    # and what they wrote: int32 rows, or requantized with the CONFIG before them
    image = memory.image
    zp, qmin, qmax, relu = 0, -128, 127, False
    for insn in program:
        x = insn.args
        if insn.op == Op.CONFIG:
            zp, qmin, qmax, relu = x["zero_point"], x["qmin"], x["qmax"], bool(x["relu"])
            continue
        rows = acc[x["acc_row"]:x["acc_row"] + x["rows"], :x["cols"]]
        if x["requant"]:
            block = x["q_row"] // 3
            chans = slice(block * c, block * c + x["cols"])
            m_, s_ = zip(*mult_shift[chans], strict=True)
            want = requantize(rows, torch.tensor(m_), torch.tensor(s_), bias=bias[chans],
                              zero_point=zp, qmin=qmin, qmax=qmax, relu=relu)
            elem, dtype = 1, np.int8
        else:
            want, elem, dtype = rows, 4, np.dtype("<i4")
        for i in range(x["rows"]):
            start = x["addr"] + i * x["stride"]
            got = np.frombuffer(bytes(image[start:start + x["cols"] * elem]), dtype=dtype)
            assert got.tolist() == want[i].tolist(), (str(insn), i)


# -- the store path's parts -----------------------------------------------------------------------

@pytest.mark.parametrize("requant", [True, False])
def test_a_post_op_stage_takes_its_stated_setup_and_latency_or_none_when_not_selected(requant):
    cfg = CFG
    stage = RequantStage(cfg)
    m = Module()
    m.submodules.stage = stage
    mem = engine_memories(cfg)["q"]
    m.submodules.q = q = BlockMemory(shape=mem.shape, depth=mem.depth)
    wiring.connect(m, stage.read_q, q.read_port())
    wr = q.write_port()
    insn = isa.store(0, 4, 5, 0, 5, requant, q_row=3)
    rows = [[1000 * i + j for j in range(cfg.cols)] for i in range(4)]
    seen = {}

    async def tb(ctx):
        for row, values in enumerate([[7] * 5, [1 << 30] * 5, [-3] * 5]):   # block 1
            ctx.set(wr.addr, 3 + row)
            ctx.set(wr.data, values)
            ctx.set(wr.en, 1)
            await ctx.tick()
        ctx.set(wr.en, 0)
        ctx.set(stage.o.ready, 1)
        ctx.set(stage.start, 1)
        await ctx.tick()
        ctx.set(stage.start, 0)
        ctx.set(stage.cmd, isa.store_layout.const(insn.args))
        for cycle in range(40):
            if ctx.get(stage.set_up) and "set_up" not in seen:
                seen["set_up"] = cycle
            n = cycle - 10
            ctx.set(stage.i.valid, 0 <= n < len(rows))
            if 0 <= n < len(rows):
                ctx.set(stage.i.payload, {"data": rows[n],
                                          "side": {"first": n == 0, "last": n == len(rows) - 1,
                                                   "row": n % cfg.rows, "emit": 1}})
            if ctx.get(stage.o.valid):
                p = ctx.get(stage.o.payload)
                seen.setdefault("out", []).append((cycle, [int(v) for v in p.data],
                                                   p.side.first, p.side.last))
            await ctx.tick()

    simulate(m, tb)
    latency = RequantStage.latency if requant else 0
    if requant:
        # set up from `start` (cycle -1 here) in setup_cycles
        assert seen["set_up"] + 1 == RequantStage.setup_cycles
    assert [cyc for cyc, *_ in seen["out"]] == [10 + n + latency for n in range(len(rows))]
    assert [(f, l) for *_, f, l in seen["out"]] == [(1, 0), (0, 0), (0, 0), (0, 1)]
    got = torch.tensor([d for _, d, _, _ in seen["out"]])
    want = requantize(torch.tensor(rows), 1 << 30, -3, bias=torch.full((5,), 7)) if requant \
        else torch.tensor(rows)
    assert torch.equal(got, want)


def test_block_memory_ports_are_amaranth_memory_ports():
    mem = BlockMemory(shape=engine_memories(CFG)["a"].shape, depth=100)
    rd, wr = mem.read_port(output_register=True), mem.write_port()
    assert isinstance(rd, ReadPort) and isinstance(wr, WritePort)
    assert rd.signature == ReadPort.Signature(addr_width=7, shape=mem.shape)
    assert wr.signature == mem.write_signature()
    # a unit declares the flipped signature and wiring.connect joins them

    class User(wiring.Component):
        port: In(ReadPort.Signature(addr_width=7, shape=mem.shape))

        def elaborate(self, platform):
            return Module()

    m = Module()
    m.submodules.mem, m.submodules.user = mem, user = mem, User()
    wiring.connect(m, user.port, rd)
    Simulator(m)   # (elaborates it: the ports connect)


def test_the_store_unit_stops_at_the_row_past_the_address_space():
    cfg = CFG
    insn = isa.store(0, 3, 5, (1 << 32) - 32, 20, False)   # rows at -32, -12 (past), ...
    with pytest.raises(isa.AsmError) as e:
        isa.check(insn, cfg)
    assert e.value.code == ErrorCode.ADDRESS
    memory = MemoryModel(bytearray(64), cfg.read_latency)
    top, unit, _ = _store_top(cfg)

    async def run(ctx):
        ctx.set(unit.insn.valid, 1)
        ctx.set(unit.insn.payload, isa.insn_layout.from_bits(isa._pack(insn)))
        await ctx.tick().until(unit.insn.ready)
        ctx.set(unit.insn.valid, 0)
        for _ in range(60):
            await ctx.tick()
        assert ctx.get(unit.error)

    async def serve(ctx):
        await memory.serve(ctx, unit.req, cycles=80)

    simulate(top, run, serve)
    # row 0's 20 bytes in beats of 8; nothing of row 1
    assert [(addr, n) for _, _, addr, n in memory.grants] == \
        [((1 << 32) - 32, 8), ((1 << 32) - 24, 8), ((1 << 32) - 16, 4)]
