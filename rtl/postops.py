"""Post-op stages: what a STORE does to accumulator rows on their way to memory.

The store unit (``rtl/store.py``) streams accumulator rows through a chain of stages, then packs
them into bytes and splits them into memory beats. Each stage is a component with the ports of
:func:`stage_signature`:

- ``i``/``o``: rows (:func:`row_layout`: ``cols`` int32 lanes, ``first`` and ``last`` of the
  instruction's rows), one per cycle, in order. A stage that keeps statistics across rows (a
  row maximum or sum for softmax and layernorm, whose rows are longer than the array) uses
  ``first``/``last`` to know where an instruction's rows begin and end;
- ``start``: high for one cycle when a STORE is taken; ``cmd``: its fields, from the cycle
  after ``start`` until its last row has left; ``set_up``: the stage is ready for rows (a
  stage may read parameters first, as the requantizer reads its Q block), from then until
  the next ``start``;
- ``settings``/``settings_en``: a CONFIG instruction's fields, for stages with static
  settings.

A stage the instruction does not select (:meth:`Stage.select` in the RTL, :meth:`Stage.uses` for
the cycle model) passes rows straight through, with no latency. A stage may consume rows without
passing them on: the reader makes several passes over a STORE's rows when a stage asks for them
(the softmax stage's three), and only rows with ``side.emit`` go to memory. Every stage states
its ``latency`` (rows in to rows out) and ``setup_cycles`` (``start`` to ``set_up``), and the
store unit's timing (:class:`rtl.store.StoreTiming`) adds up those of the stages an instruction
selects; the chain never waits on its consumer (the store unit keeps room for every row it lets
in), so those are the only numbers the cycle model needs.

Adding a stage: write it as a :class:`Stage`, here or in a file of its own as ``rtl/softmax.py``
is (its signature, ``latency`` or :meth:`Stage.latency_of` when it depends on the configuration,
``setup_cycles``, ``uses``/``select``, an ``amaranth.sim`` test measuring them), add it to
:func:`post_op_stages` in chain order, and, if it needs an instruction field to select it or a
memory port, add the field to ``rtl/isa.py`` (and its check to ``rtl/dispatch.py``) and the port
to :class:`rtl.store.StoreUnit`. Nothing else changes: the store unit, its timing and the model
read the chain.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .isa import Q_BLOCK, SEG_BITS, Insn, config_layout, store_layout
from .memory import engine_memories
from .requant import Requantizer

__all__ = ["RequantStage", "Stage", "post_op_stages", "row_layout", "side_layout",
           "stage_signature"]

#: bits of a lane of the store path (the accumulator sign-extended; the engine's results are
#: at most int32)
LANE_BITS = 32


def side_layout(config: EngineConfig) -> data.StructLayout:
    """What travels beside a row's lanes on the store path (:func:`row_layout`)."""
    return data.StructLayout({
        "first": 1,       # the instruction's first row
        "last": 1,        # its last row
        "seg_first": 1,   # the first segment (accumulator row) of a stored row
        "seg_last": 1,    # its last segment
        "pass_": 2,       # which pass over the instruction's rows (a softmax makes three)
        "emit": 1,        # the row goes to memory (the rows of the last pass)
        "row": range(max(config.rows, 2)),   # the stored row's index (its low bits)
        "seg": SEG_BITS + 1,                 # the segment's index in its stored row
    })


def row_layout(config: EngineConfig) -> data.StructLayout:
    """A row on the store path: ``cols`` lanes and the :func:`side_layout` fields."""
    return data.StructLayout({"data": data.ArrayLayout(signed(LANE_BITS), config.cols),
                              "side": side_layout(config)})


def stage_signature(config: EngineConfig, **extra) -> wiring.Signature:
    """The ports every post-op stage has (plus ``extra`` members of its own)."""
    row = row_layout(config)
    return wiring.Signature({
        "i": In(stream.Signature(row)),
        "o": Out(stream.Signature(row)),
        "start": In(1),
        "cmd": In(store_layout),
        "set_up": Out(1),
        "settings": In(config_layout),
        "settings_en": In(1),
        **extra,
    })


class Stage(wiring.Component):
    """A post-op stage (see the module docstring)."""

    #: cycles from a row on ``i`` to it on ``o``, when selected
    latency: int = 0
    #: cycles from ``start`` to ``set_up``, when selected (0: ready at once)
    setup_cycles: int = 0

    @classmethod
    def latency_of(cls, config: EngineConfig) -> int:
        """:attr:`latency` for ``config`` (a stage whose latency depends on it says so)."""
        del config
        return cls.latency

    @staticmethod
    def uses(insn: Insn) -> bool:
        """Whether a STORE passes its rows through this stage (for the cycle model)."""
        raise NotImplementedError

    @staticmethod
    def select(cmd) -> object:
        """The same, in the RTL, from the STORE's fields (a 1-bit value)."""
        raise NotImplementedError


class RequantStage(Stage):
    """The requantizer (:class:`~rtl.requant.Requantizer`) as a post-op stage: a STORE with
    ``requant`` set reads its channel block's bias, multiplier and shift rows from scratchpad
    Q (``read_q``; :data:`rtl.isa.Q_BLOCK`) at ``start``, then requantizes every lane of every
    row with its channel's parameters to int8 (sign-extended in the lane). CONFIG sets the zero
    point, the clamp and ReLU for the stores after it."""

    latency = len(Requantizer.STAGES)
    #: one read per Q row, then the port's data and the register behind it
    setup_cycles = len(Q_BLOCK) + 2

    def __init__(self, config: EngineConfig):
        self.config = config
        q = engine_memories(config)["q"]
        super().__init__(stage_signature(config, read_q=In(q.read_signature())))

    @staticmethod
    def uses(insn: Insn) -> bool:
        return bool(insn.args["requant"])

    @staticmethod
    def select(cmd):
        return cmd.requant

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        c = cfg.cols
        out_bits = cfg.in_bits
        m.submodules.requant = rq = Requantizer(lanes=c, acc_bits=cfg.acc_bits,
                                                out_bits=out_bits)

        # CONFIG: the static settings, held between stores.
        zero_point = Signal(signed(out_bits))
        qmin = Signal(signed(out_bits), init=-(1 << (out_bits - 1)))
        qmax = Signal(signed(out_bits), init=(1 << (out_bits - 1)) - 1)
        relu = Signal()
        with m.If(self.settings_en & ~self.settings.softmax):
            m.d.sync += [zero_point.eq(self.settings.zero_point), qmin.eq(self.settings.qmin),
                         qmax.eq(self.settings.qmax), relu.eq(self.settings.relu)]
        m.d.comb += [rq.zero_point.eq(zero_point), rq.qmin.eq(qmin), rq.qmax.eq(qmax),
                     rq.relu.eq(relu)]

        # Set-up: the channel block's rows, one read each (a synchronous port, then the
        # register behind it), into the parameter registers.
        params = {name: Signal(data.ArrayLayout(signed(32), c), name=name) for name in Q_BLOCK}
        read = self.read_q
        word = Signal.like(read.data)   # registered as it leaves the block RAM
        m.d.sync += word.eq(read.data)
        step = Signal(range(self.setup_cycles + 1), init=self.setup_cycles)
        with m.If(self.start):
            m.d.sync += step.eq(0)
        with m.Elif(step != self.setup_cycles):
            m.d.sync += step.eq(step + 1)
        # (set up from the last step on, until the next start)
        m.d.comb += [read.addr.eq(self.cmd.q_row + step), read.en.eq(1),
                     self.set_up.eq((step >= self.setup_cycles - 1) & ~self.start)]
        with m.Switch(step):
            for k, name in enumerate(Q_BLOCK):
                with m.Case(k + 2):   # read in step k, in `word` two steps later
                    m.d.sync += params[name].eq(word)

        # Rows: through the requantizer (first travels beside it), or straight on.
        p = self.i.payload
        m.d.comb += [rq.i.payload.bias.eq(params["bias"]),
                     rq.i.payload.multiplier.eq(params["multiplier"]),
                     rq.i.payload.last.eq(0)]
        for j in range(c):
            m.d.comb += [rq.i.payload.acc[j].eq(p.data[j]),
                         rq.i.payload.shift[j].eq(params["shift"][j])]
        # the side fields, delayed as the requantizer delays its rows
        side = [Signal(side_layout(cfg), name=f"side{k}") for k in range(self.latency)]
        with m.If(rq.i.ready):
            m.d.sync += side[0].eq(p.side)
            for k in range(1, self.latency):
                m.d.sync += side[k].eq(side[k - 1])
        selected = self.select(self.cmd)
        with m.If(selected):
            m.d.comb += [rq.i.valid.eq(self.i.valid), self.i.ready.eq(rq.i.ready),
                         self.o.valid.eq(rq.o.valid), rq.o.ready.eq(self.o.ready),
                         self.o.payload.side.eq(side[-1])]
            for j in range(c):
                m.d.comb += self.o.payload.data[j].eq(rq.o.payload.data[j])
        with m.Else():
            m.d.comb += [self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready),
                         self.o.payload.eq(self.i.payload), rq.o.ready.eq(1)]
        return m


def post_op_stages(config: EngineConfig) -> list[type[Stage]]:
    """The store path's stages, in chain order."""
    del config
    from .softmax import SoftmaxStage  # (it imports this module)

    return [RequantStage, SoftmaxStage]
