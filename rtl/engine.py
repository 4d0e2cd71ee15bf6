"""The programmable engine: its parts, connected, and its timing, gathered from theirs.

Instructions (``rtl/isa.py``) arrive on a stream. The :class:`~rtl.dispatch.Dispatcher`
checks them and queues each for its unit; the units run decoupled and synchronize only through
dependency tokens (:class:`~rtl.tokens.TokenCounter`, one per channel of
:data:`rtl.isa.TOKENS`):

- the **load unit** (``rtl/load.py``) reads memory rows into scratchpad A, B or Q;
- the **compute unit** (``rtl/compute.py``) streams scratchpad rows through the tile engine
  into the accumulator;
- the **store unit** (``rtl/store.py``) reads accumulator rows through its post-op stages
  (``rtl/postops.py``: the requantizer) and writes them to memory.

Loads and stores share the memory port through a round-robin :class:`~rtl.arbiter.MemoryArbiter`;
:class:`~rtl.counters.PerfCounters` counts what happened. An instruction the engine cannot run
stops it with ``error`` and an :class:`~rtl.isa.ErrorCode`, so a bad program never hangs it.

This module holds no unit's logic: :class:`Engine` makes the memories and the parts and connects
them; :class:`EngineTiming` collects the parts' stated timing for the cycle model
(``mapping/program.py``), which reads nothing else.

Adding an instruction: ``rtl/isa.py`` (opcode, layout, queue, tokens, checks), its decode checks
in ``rtl/dispatch.py``, the unit that runs it with its timing, its line in the cycle model, a
unit test that measures the timing and an engine test that runs it. Adding a post-op stage:
``rtl/postops.py`` alone (see there).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .arbiter import MemoryArbiter
from .compute import ComputeTiming, ComputeUnit
from .config import EngineConfig, refuse
from .counters import PerfCounters, counter_layout
from .dispatch import Dispatcher, DispatchTiming
from .isa import TOKENS, ErrorCode, geometry, insn_layout
from .load import LoadTiming, LoadUnit
from .memory import BlockMemory, engine_memories, mem_signature
from .store import StoreTiming, StoreUnit
from .tile import TileTiming
from .tokens import TokenCounter, TokenTiming

__all__ = ["Engine", "EngineTiming", "ErrorCode", "check_engine", "counter_layout"]


def check_engine(config: EngineConfig) -> None:
    """Refuse a configuration the programmable engine cannot be built for, with the reason.

    Everything that builds or costs the engine (the generator, the simulator, ``tessera map``,
    sweeps, the FPGA flow) calls this, so a configuration is refused the same way everywhere.
    """
    from .config import ConfigError
    from .isa import ROW_BITS

    if config.in_bits != 8:
        raise ConfigError(f"the programmable engine moves int8 operands: in_bits must be 8, "
                          f"not {config.in_bits}")
    if config.acc_bits > 32:
        raise ConfigError(f"the programmable engine stores int32 results: acc_bits must be at "
                          f"most 32, not {config.acc_bits}")
    if config.acc_bits < 17:
        raise ConfigError(f"the requantizer needs acc_bits of at least 17, not "
                          f"{config.acc_bits}")
    if config.mem_bytes_per_cycle > MAX_BEAT_BYTES:
        raise ConfigError(f"mem_bytes_per_cycle must be at most {MAX_BEAT_BYTES} (a memory "
                          f"beat never carries more than one row, and no row is wider than "
                          f"{MAX_BEAT_BYTES} bytes), not {config.mem_bytes_per_cycle}")
    rows = 1 << ROW_BITS
    in_bytes = (config.in_bits + 7) // 8
    for name, kib, row_bytes, what in (
            ("spad_kib", config.spad_kib, config.rows * in_bytes, "scratchpad A"),
            ("spad_kib", config.spad_kib, config.cols * in_bytes, "scratchpad B"),
            ("acc_kib", config.acc_kib, config.cols * ((config.acc_bits + 7) // 8),
             "the accumulator")):
        if kib * 1024 // row_bytes > rows:
            most = rows * row_bytes // 1024
            raise ConfigError(f"{name} = {kib} gives {what} {kib * 1024 // row_bytes:,} "
                              f"{row_bytes}-byte rows, more than the {rows:,} an instruction's "
                              f"{ROW_BITS}-bit row fields address: at most {most:,} KiB on a "
                              f"{config.rows}x{config.cols} array")
    geometry(config)


#: the widest memory beat the engine's port takes, in bytes: the widest row any memory holds
#: (an accumulator row of 256 int32 columns)
MAX_BEAT_BYTES = 1024


@dataclass(frozen=True)
class EngineTiming:
    """The engine's timing, from its parts' stated figures; what the cycle model reads.

    A register moved in any part changes that part's property, and this follows.
    """

    config: EngineConfig

    #: a program is done (``idle``) the cycle after its last unit's last activity; the run's
    #: cycle count includes the cycle ``done`` is seen
    done_latency = 1

    @property
    def dispatch(self) -> DispatchTiming:
        return DispatchTiming(self.config)

    @property
    def load(self) -> LoadTiming:
        return LoadTiming(self.config)

    @property
    def compute(self) -> ComputeTiming:
        return ComputeTiming(self.config)

    @property
    def store(self) -> StoreTiming:
        return StoreTiming(self.config)

    @property
    def tile(self) -> TileTiming:
        return TileTiming(self.config)

    @property
    def tokens(self) -> type[TokenTiming]:
        return TokenTiming

    @property
    def queue_depth(self) -> int:
        return self.dispatch.queue_depth


class Engine(wiring.Component):
    """The whole engine for one :class:`~rtl.config.EngineConfig` (int8 operands).

    ``insn``: instructions in program order. ``mem``: the memory port. ``idle``: no instruction
    anywhere in the engine. ``error``/``error_code``: the engine refused an instruction and
    stopped. ``counters``: activity counters (:data:`~rtl.counters.counter_layout`).
    """

    def __init__(self, config: EngineConfig):
        try:
            check_engine(config)
        except ValueError as e:
            raise refuse(self, str(e)) from None
        self.config = config
        self.geometry = geometry(config)
        self.timing = EngineTiming(config)
        # the parts (made here, so a testbench can watch their ports)
        self.dispatch = Dispatcher(config)
        self.load = LoadUnit(config)
        self.compute = ComputeUnit(config)
        self.store = StoreUnit(config)
        self.arbiter = MemoryArbiter(config)
        self.perf = PerfCounters()
        self.tokens = {name: TokenCounter() for name in TOKENS}
        super().__init__({
            "insn": In(stream.Signature(insn_layout)),
            "mem": Out(mem_signature(config)),
            "idle": Out(1),
            "error": Out(1),
            "error_code": Out(ErrorCode),
            "counters": Out(counter_layout),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config

        # -- memories (column slices one block RAM deep: see BlockMemory) ------------------
        memories = {name: BlockMemory(shape=mem.shape, depth=mem.depth)
                    for name, mem in engine_memories(cfg).items()}
        for name, memory in memories.items():
            m.submodules[f"spad_{name}" if name != "acc" else "acc"] = memory
        spad_a, spad_b, spad_q, acc = (memories[n] for n in ("a", "b", "q", "acc"))

        # -- the parts ---------------------------------------------------------------------
        m.submodules.dispatch = dispatch = self.dispatch
        m.submodules.load = load = self.load
        m.submodules.compute = compute = self.compute
        m.submodules.store = store = self.store
        m.submodules.arbiter = arbiter = self.arbiter
        m.submodules.counters = counters = self.perf
        tokens = self.tokens
        for name, counter in tokens.items():
            m.submodules[f"tokens_{name}"] = counter

        # -- instructions ------------------------------------------------------------------
        wiring.connect(m, wiring.flipped(self.insn), dispatch.insn)
        wiring.connect(m, dispatch.load, load.insn)
        wiring.connect(m, dispatch.compute, compute.insn)
        wiring.connect(m, dispatch.store, store.insn)

        # -- memory ports: the loads write the scratchpads, the array reads A and B through
        # their block RAMs' output registers, the writeback reads and writes the accumulator,
        # the store reads it and Q
        wiring.connect(m, load.write_a, spad_a.write_port())
        wiring.connect(m, load.write_b, spad_b.write_port())
        wiring.connect(m, load.write_q, spad_q.write_port())
        wiring.connect(m, compute.read_a, spad_a.read_port(output_register=True))
        wiring.connect(m, compute.read_b, spad_b.read_port(output_register=True))
        # (not transparent: the writeback forwards the writes in flight itself)
        wiring.connect(m, compute.acc_read, acc.read_port())
        wiring.connect(m, compute.acc_write, acc.write_port())
        wiring.connect(m, store.acc_read, acc.read_port())
        wiring.connect(m, store.read_q, spad_q.read_port())

        # -- tokens: load <-> compute <-> store --------------------------------------------
        for name, producer, consumer in (("l2c", load, compute), ("c2l", compute, load),
                                         ("c2s", compute, store), ("s2c", store, compute)):
            wiring.connect(m, getattr(producer, name), tokens[name].producer)
            wiring.connect(m, getattr(consumer, name), tokens[name].consumer)

        # -- the memory port: loads' reads and stores' writes, round robin ---------------------
        wiring.connect(m, load.req, arbiter.load)
        wiring.connect(m, store.req, arbiter.store)
        wiring.connect(m, arbiter.o, wiring.flipped(self.mem.req))
        wiring.connect(m, wiring.flipped(self.mem.rdata), load.rdata)

        # -- errors, idle, counters --------------------------------------------------------
        unit_error = load.error | store.error
        m.d.comb += [dispatch.halt.eq(unit_error),
                     self.error.eq(dispatch.error | unit_error),
                     self.error_code.eq(Mux(dispatch.error, dispatch.error_code,
                                            Mux(unit_error, ErrorCode.ADDRESS, ErrorCode.NONE))),
                     self.idle.eq(dispatch.idle & load.idle & compute.idle & store.idle)]
        m.d.comb += [counters.busy.eq(~self.idle), counters.compute.eq(compute.beat),
                     counters.load_wait.eq(compute.load_wait),
                     counters.store_wait.eq(compute.store_wait),
                     counters.mem_reads.eq(arbiter.read), counters.mem_writes.eq(arbiter.write),
                     counters.insns.eq(dispatch.dispatched),
                     self.counters.eq(counters.counters)]
        return m
