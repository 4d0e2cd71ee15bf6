"""The store unit: STORE and CONFIG instructions, accumulator rows out to memory.

A STORE is a chain: the :class:`AccReader` streams its accumulator rows, the post-op stages it
selects (``rtl/postops.py``: today the requantizer) transform them, a packer lays each row out
as bytes (int8 or int32 elements), a row FIFO holds them, and the :class:`BeatSplitter` cuts
each row into memory write beats. CONFIG sets the stages' static settings, in order with the
stores around it.

A row enters the chain only with a place in the row FIFO kept for it, so the stages never wait
on the memory port: their timing is their stated latency, whatever the memory does. The FIFO is
deeper than the way round from a row leaving it to the next one arriving (``fifo_depth``), so
once a STORE's first beat is ready, the splitter has a beat for the memory port every cycle.

Adding a post-op stage touches ``rtl/postops.py`` alone (and the ISA if it needs a field); see
its docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .isa import (
    ADDR_BITS,
    ROW_BITS,
    SEG_BITS,
    Insn,
    Op,
    insn_layout,
    store_layout,
    store_seg_bytes,
    store_segs,
)
from .memory import engine_memories, request_layout
from .postops import RequantStage, Stage, post_op_stages, row_layout
from .softmax import SoftmaxStage
from .tokens import consumer_signature, producer_signature

__all__ = ["AccReader", "BeatSplitter", "StoreTiming", "StoreUnit"]


@dataclass(frozen=True)
class StoreTiming:
    """The store unit's timing, in cycles, from the configuration alone.

    A STORE the unit takes in cycle ``s`` asks for its first memory beat in
    ``s + request_delay(insn)``: a cycle to start, its stages' set-up (the longest of those
    it selects), the accumulator read, its stages' latencies, the row FIFO and the splitter.
    From then the splitter has a beat ready every cycle; the unit takes its next instruction
    ``release`` cycles after the memory port grants the last beat, and pushes its token then.
    A CONFIG takes one cycle.
    """

    config: EngineConfig

    #: taking the instruction to its first accumulator read (the state machine's step)
    setup = 1
    #: an accumulator read to its row entering the chain (the read, the register behind it)
    read_latency = 2
    #: a row entering the row FIFO to leaving it (a SyncFIFO: readable the next cycle)
    fifo_latency = 1
    #: a row leaving the FIFO to its first beat's request (the splitter's row register)
    split_latency = 1
    #: the last beat granted to the unit free (the row counted, then the state machine)
    release = 2
    #: the last beat granted to the STORE's token pushed (the row counted)
    push_delay = 1
    #: cycles a CONFIG takes
    config_cycles = 1
    #: throughput: memory beats per cycle once a STORE's first is ready (rows back to back)
    throughput = 1

    @property
    def stages(self) -> list[type[Stage]]:
        return post_op_stages(self.config)

    def selected(self, insn: Insn) -> list[type[Stage]]:
        """The post-op stages a STORE passes its rows through."""
        return [stage for stage in self.stages if stage.uses(insn)]

    def passes(self, insn: Insn) -> int:
        """Passes the reader makes over a STORE's rows (the last one goes to memory)."""
        return SoftmaxStage.PASSES if SoftmaxStage.uses(insn) else 1

    def gap(self, insn: Insn) -> int:
        """Idle cycles the reader leaves before a STORE's last pass."""
        return SoftmaxStage.gap(self.config) if SoftmaxStage.uses(insn) else 0

    def reads_before_output(self, insn: Insn) -> int:
        """Cycles the reader spends before it reads the first row of the last pass: the rows
        of the passes before it, back to back, and the gap."""
        per_pass = insn.args["rows"] * store_segs(insn)
        return (self.passes(insn) - 1) * per_pass + self.gap(insn)

    def request_delay(self, insn: Insn) -> int:
        """Cycles from taking a STORE to its first beat asking for the memory port."""
        chosen = self.selected(insn)
        setup = max((stage.setup_cycles for stage in chosen), default=0)
        return (self.setup + setup + self.read_latency + self.reads_before_output(insn)
                + sum(s.latency_of(self.config) for s in chosen) + self.fifo_latency
                + self.split_latency)

    def row_beats(self, insn: Insn) -> int:
        """Memory beats of one stored row of a STORE (its segments are cut separately)."""
        w = self.config.mem_bytes_per_cycle
        full, last = store_seg_bytes(insn, self.config)
        return (store_segs(insn) - 1) * -(-full // w) + -(-last // w)

    def beats(self, insn: Insn) -> int:
        return insn.args["rows"] * self.row_beats(insn)

    @property
    def fifo_depth(self) -> int:
        """Rows the row FIFO holds: more than the way round from a row popped to the next
        one in (the pop counted, the credit seen, the longest chain, the write), so it never
        runs dry while the memory takes a beat every cycle."""
        chain = sum(stage.latency_of(self.config) for stage in self.stages)
        return chain + 5

    def span(self, insn: Insn) -> int:
        """Cycles from taking an instruction to the unit being free, when the memory port
        grants every beat at once."""
        if insn.op == Op.CONFIG:
            return self.config_cycles
        return self.request_delay(insn) + self.beats(insn) - 1 + self.release


class AccReader(wiring.Component):
    """Streams a STORE's accumulator rows while ``run`` is high, one per cycle while ``o``
    takes them, each sign-extended to int32 lanes with its side fields
    (:func:`rtl.postops.side_layout`), :attr:`latency` cycles after its read.

    Latched at ``start``: ``first_row``, ``rows``, ``segs`` (accumulator rows per stored row,
    ``seg_stride`` apart), ``passes`` and ``gap``. Order: for each pass, for each stored row
    ``r``, its segments ``first_row + r + t * seg_stride``; ``gap`` idle cycles before the last
    pass (a stage's reduction finishing); the last pass's rows have ``emit`` set.
    """

    latency = StoreTiming.read_latency

    def __init__(self, config: EngineConfig):
        self.config = config
        acc = engine_memories(config)["acc"]
        super().__init__({
            "start": In(1), "first_row": In(ROW_BITS), "rows": In(ROW_BITS),
            "segs": In(SEG_BITS + 1), "seg_stride": In(ROW_BITS), "passes": In(2),
            "gap": In(8), "run": In(1),
            "acc_read": In(acc.read_signature()),
            "o": Out(stream.Signature(row_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        rd = self.acc_read
        side_l = row_layout(cfg)["side"].shape
        base = Signal(ROW_BITS)      # first_row
        rows = Signal(ROW_BITS)
        segs = Signal(SEG_BITS + 1)
        seg_stride = Signal(ROW_BITS)
        passes = Signal(2)
        gap = Signal(8)
        addr = Signal(ROW_BITS)      # the next row to read
        row_addr = Signal(ROW_BITS)  # its stored row's first segment
        r = Signal(ROW_BITS)
        t = Signal(SEG_BITS + 1)
        p = Signal(2)
        done = Signal(init=1)
        wait = Signal(8)
        with m.If(self.start):
            m.d.sync += [base.eq(self.first_row), rows.eq(self.rows), segs.eq(self.segs),
                         seg_stride.eq(self.seg_stride), passes.eq(self.passes),
                         gap.eq(self.gap), addr.eq(self.first_row),
                         row_addr.eq(self.first_row), r.eq(0), t.eq(0), p.eq(0), done.eq(0),
                         wait.eq(0)]
        # The read port and a register behind it (block RAM output is slow on an FPGA) move
        # together and hold while the consumer waits.
        read = Signal()          # the read port holds a row
        read_side = Signal(side_l)
        valid = Signal()         # the register behind it holds a row
        side = Signal(side_l)
        row = Signal.like(rd.data)
        advance = ~valid | self.o.ready
        more = self.run & ~done & (wait == 0)
        seg_last = t == segs - 1
        row_last = r == rows - 1
        pass_last = p == passes - 1
        now = Signal(side_l)
        m.d.comb += [now.first.eq((p == 0) & (r == 0) & (t == 0)),
                     now.last.eq(pass_last & row_last & seg_last),
                     now.seg_first.eq(t == 0), now.seg_last.eq(seg_last), now.pass_.eq(p),
                     now.emit.eq(pass_last), now.row.eq(r), now.seg.eq(t)]
        m.d.comb += [rd.addr.eq(addr), rd.en.eq(advance)]
        with m.If(~self.start & (wait != 0)):
            m.d.sync += wait.eq(wait - 1)
        with m.If(advance):
            m.d.sync += [read.eq(more), read_side.eq(now), valid.eq(read), side.eq(read_side),
                         row.eq(rd.data)]
            with m.If(more):
                with m.If(~seg_last):
                    m.d.sync += [t.eq(t + 1), addr.eq(addr + seg_stride)]
                with m.Elif(~row_last):
                    m.d.sync += [t.eq(0), r.eq(r + 1), addr.eq(row_addr + 1),
                                 row_addr.eq(row_addr + 1)]
                with m.Else():
                    m.d.sync += [t.eq(0), r.eq(0), addr.eq(base), row_addr.eq(base)]
                    with m.If(pass_last):
                        m.d.sync += done.eq(1)
                    with m.Else():
                        m.d.sync += p.eq(p + 1)
                        with m.If(p + 2 == passes):
                            m.d.sync += wait.eq(gap)
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.side.eq(side)]
        for j in range(self.config.cols):
            m.d.comb += self.o.payload.data[j].eq(row[j])   # sign-extends to int32
        return m


class BeatSplitter(wiring.Component):
    """Cuts rows (in memory order, in ``i``) into memory write beats of up to W bytes, one per
    cycle the memory takes one. A stored row is ``segs`` rows of ``i`` (segments) side by side
    in memory: every segment but the last ``seg_bytes`` long, the last ``row_bytes``; stored
    rows at ``addr``, ``addr + stride``, ... (all latched at ``start``). A segment is taken as
    the previous one's last beat goes, so they leave back to back; a segment's first beat asks
    :attr:`latency` cycle after it is taken. ``rows_done``: stored rows whose last beat memory
    has taken since ``start``. ``error``: a segment would run past the 32-bit address space
    (the first is checked as the STORE is decoded); the splitter stops before it.
    """

    latency = StoreTiming.split_latency

    def __init__(self, config: EngineConfig):
        self.config = config
        self.max_row_bytes = 4 * config.cols
        super().__init__({
            "start": In(1), "addr": In(ADDR_BITS), "stride": In(ADDR_BITS),
            "row_bytes": In(range(self.max_row_bytes + 1)),
            "seg_bytes": In(range(self.max_row_bytes + 1)),
            "segs": In(SEG_BITS + 1),
            "i": In(stream.Signature(unsigned(8 * self.max_row_bytes))),
            "req": Out(stream.Signature(request_layout(config))),
            "rows_done": Out(ROW_BITS),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.config.mem_bytes_per_cycle
        top = self.max_row_bytes
        req = self.req
        last_size = Signal(range(top + 1))
        seg_size = Signal(range(top + 1))
        segs = Signal(SEG_BITS + 1)
        stride = Signal(ADDR_BITS)
        buf = Signal(8 * top)
        have = Signal()
        offset = Signal(range(top + w + 1))
        row_addr = Signal(ADDR_BITS)    # the segment in the buffer (or next to come)
        seg = Signal(SEG_BITS + 1)      # its index in its stored row
        left = Signal(range(top + 1))   # bytes of the segment still to send
        last_beat = Signal()            # left <= w, kept a beat ahead
        # The next segment's address and size, a segment ahead, in bits enough never to wrap;
        # whether it runs past the address space is a compare of registers. `sending` is a
        # segment in the buffer and not past it, kept in its own register: the request's valid
        # is a register output (it reaches the memory arbiter's choice, and from there the
        # clock enables of both units).
        row_start = Signal(ADDR_BITS + 2)   # the stored row's first segment
        next_seg = Signal(ADDR_BITS + 2)
        next_is_last = Signal()
        past = Signal()       # the segment after the one sent last runs past the address space
        sending = Signal()
        seg_last = seg == segs - 1
        with m.If(self.start):
            m.d.sync += [row_addr.eq(self.addr), row_start.eq(self.addr), seg.eq(0),
                         stride.eq(self.stride), last_size.eq(self.row_bytes),
                         seg_size.eq(self.seg_bytes), segs.eq(self.segs), past.eq(0),
                         self.rows_done.eq(0)]
        # the segment after the current one: the next stored row's first, or the next of this
        m.d.comb += [next_seg.eq(Mux(seg_last, row_start + stride, row_addr + seg_size)),
                     next_is_last.eq(Mux(seg_last, segs == 1, seg + 2 == segs))]
        size_now = Mux(seg_last, last_size, seg_size)
        next_size = Mux(next_is_last, last_size, seg_size)
        beyond = next_seg + next_size > (1 << ADDR_BITS)
        # A new segment may enter as the current one's last beat leaves: one per beat.
        m.d.comb += self.i.ready.eq(~have | (req.ready & last_beat))
        m.d.comb += [
            req.valid.eq(sending),
            req.payload.write.eq(1),
            req.payload.addr.eq(row_addr + offset),
            req.payload.length.eq(Mux(last_beat, left, w)),
            req.payload.data.eq(buf.bit_select(offset * 8, 8 * w) if top > w else buf),
        ]
        with m.If(have & ~sending):   # stopped before a segment past the address space
            m.d.sync += self.error.eq(1)
        advancing = req.valid & req.ready & last_beat
        with m.If(req.valid & req.ready):
            with m.If(last_beat):
                m.d.sync += [have.eq(0), sending.eq(0), row_addr.eq(next_seg),
                             past.eq(beyond)]
                with m.If(seg_last):
                    m.d.sync += [seg.eq(0), row_start.eq(row_start + stride),
                                 self.rows_done.eq(self.rows_done + 1)]
                with m.Else():
                    m.d.sync += seg.eq(seg + 1)
            with m.Else():
                m.d.sync += [offset.eq(offset + w), left.eq(left - w),
                             last_beat.eq(left - w <= w)]
        # the size of the segment entering: the current index, or the next one's if the
        # current leaves in this cycle
        entering = Mux(advancing, next_size, size_now)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [buf.eq(self.i.payload), have.eq(1), offset.eq(0), left.eq(entering),
                         last_beat.eq(entering <= w),
                         sending.eq(~Mux(advancing, beyond, past))]
        return m


class StoreUnit(wiring.Component):
    """Runs STOREs and CONFIGs.

    ``insn``: the head of the store queue. ``acc_read``: the accumulator's read port;
    ``read_q``: scratchpad Q's (the requantizer's parameters). ``req``: memory write requests.
    ``c2s``: tokens it waits for (results in); ``s2c``: tokens it gives (an accumulator buffer
    is free). ``idle``: no instruction in flight. ``error``: a STORE ran past the address space.
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        self.timing = StoreTiming(config)
        mems = engine_memories(config)
        super().__init__({
            "insn": In(stream.Signature(insn_layout)),
            "acc_read": In(mems["acc"].read_signature()),
            "read_q": In(mems["q"].read_signature()),
            "req": Out(stream.Signature(request_layout(config))),
            "c2s": Out(consumer_signature),
            "s2c": Out(producer_signature),
            "idle": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, t = self.config, self.timing
        c = cfg.cols
        head = self.insn.payload
        st = head.args.store

        m.submodules.reader = reader = AccReader(cfg)
        m.submodules.splitter = splitter = BeatSplitter(cfg)
        wiring.connect(m, wiring.flipped(self.acc_read), reader.acc_read)
        wiring.connect(m, wiring.flipped(self.req), splitter.req)
        m.d.comb += self.error.eq(splitter.error)
        stages = []
        for n, kind in enumerate(t.stages):
            stage = kind(cfg)
            m.submodules[f"stage{n}_{kind.__name__}"] = stage
            stages.append(stage)
            if isinstance(stage, RequantStage):
                wiring.connect(m, wiring.flipped(self.read_q), stage.read_q)

        cmd = Signal(store_layout)   # the STORE being run
        push = Signal()
        start = Signal()
        config_en = Signal()
        for stage in stages:
            m.d.comb += [stage.start.eq(start), stage.cmd.eq(cmd),
                         stage.settings.eq(head.args.config), stage.settings_en.eq(config_en)]
        selected = [stage.select(st) for stage in stages]
        needs_setup = Cat(*(sel for sel, stage in zip(selected, stages, strict=True)
                            if stage.setup_cycles)).any()
        set_up = Cat(*(~stage.select(cmd) | stage.set_up for stage in stages)).all()
        gap = SoftmaxStage.gap(cfg)
        assert gap < 1 << len(reader.gap)
        m.d.comb += [reader.start.eq(start), reader.first_row.eq(st.acc_row),
                     reader.rows.eq(st.rows), reader.segs.eq(st.extra_segs + 1),
                     reader.seg_stride.eq(st.seg_stride),
                     reader.passes.eq(Mux(st.softmax, SoftmaxStage.PASSES, 1)),
                     reader.gap.eq(Mux(st.softmax, gap, 0)),
                     splitter.start.eq(start), splitter.addr.eq(st.addr),
                     splitter.stride.eq(st.stride), splitter.segs.eq(st.extra_segs + 1),
                     splitter.row_bytes.eq(Mux(st.requant, st.cols, st.cols * 4)),
                     splitter.seg_bytes.eq(Mux(st.requant, c, c * 4))]

        with m.FSM(name="store") as fsm:
            with m.State("IDLE"):
                with m.If(self.insn.valid & ~self.error):
                    with m.If(head.op == Op.CONFIG):
                        m.d.comb += [self.insn.ready.eq(1), config_en.eq(1)]
                    with m.Elif(~head.deps.pop_prev | self.c2s.available):
                        m.d.comb += [self.insn.ready.eq(1), start.eq(1),
                                     self.c2s.pop.eq(head.deps.pop_prev)]
                        m.d.sync += [cmd.eq(st), push.eq(head.deps.push_prev)]
                        with m.If(needs_setup):
                            m.next = "SETUP"
                        with m.Else():
                            m.next = "RUN"
            with m.State("SETUP"):
                with m.If(set_up):
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(splitter.rows_done == cmd.rows):
                    m.d.comb += self.s2c.push.eq(push)
                    m.next = "IDLE"
        m.d.comb += reader.run.eq(fsm.ongoing("RUN"))

        # Rows through the chain, then packed into bytes in memory order, wait in a FIFO for
        # the splitter. A row enters the chain only with a place in the FIFO kept for it, so
        # neither the stages nor the reader ever wait on the splitter: their clock enables
        # come from a register, not from the memory port's handshake.
        depth = t.fifo_depth
        rows_q = SyncFIFO(width=8 * splitter.max_row_bytes, depth=depth)
        m.submodules.rows = rows_q
        pending = Signal(range(depth + 1))   # rows let in, not yet split
        room = pending < depth
        popped = Signal()   # (a row popped frees its place a cycle later: off the port's path)
        pop = rows_q.r_rdy & splitter.i.ready
        m.d.comb += reader.o.ready.eq(room & (stages[0].i.ready if stages else 1))
        take = reader.o.valid & reader.o.ready & reader.o.payload.side.emit
        m.d.sync += [popped.eq(pop), pending.eq(pending + take - popped)]
        valid, payload = reader.o.valid & room, reader.o.payload
        for n, stage in enumerate(stages):
            m.d.comb += [stage.i.valid.eq(valid), stage.i.payload.eq(payload),
                         stage.o.ready.eq(stages[n + 1].i.ready if n + 1 < len(stages) else 1)]
            valid, payload = stage.o.valid, stage.o.payload
        narrow = Cat(*(payload.data[j][:8] for j in range(c)))
        wide = Cat(*(payload.data[j] for j in range(c)))
        m.d.comb += [rows_q.w_en.eq(valid), rows_q.w_data.eq(Mux(cmd.requant, narrow, wide)),
                     splitter.i.valid.eq(rows_q.r_rdy), splitter.i.payload.eq(rows_q.r_data),
                     rows_q.r_en.eq(pop)]
        m.d.comb += self.idle.eq(fsm.ongoing("IDLE"))
        return m
