"""The softmax stage: I-ViT's Shiftmax over whole rows, on the store path.

A STORE with ``softmax`` set (and ``requant``: the stage takes the requantizer's int8 logits)
streams its rows through the chain three times (:class:`rtl.store.AccReader` makes the passes);
a stored row is ``1 + extra_segs`` accumulator rows (segments) side by side, so rows longer than
the array are reduced whole. Per stored row ``r`` (at most the array's ``rows`` rows per STORE):

* pass 0: ``max[r]`` = the largest logit over the row's valid lanes (the last segment has
  ``cols`` of them, the others all; with ``causal``, element ``j`` of row ``r`` only if
  ``j <= mask_row + r``: masked elements take no part and store 0);
* pass 1: ``sum[r]`` = the sum of ``shift_exp(x - max[r])`` over the row (``rtl/shiftexp.py``),
  clamped to ``2**31 - 1``; after the pass's last row, ``factor[r] = (2**31 - 1) // sum[r]``, one
  row per cycle through a pipelined divider (``rtl/divider.py``);
* pass 2: each element ``(shift_exp(x - max[r]) * factor[r]) >> 24``, in ``[0, 127]``: the
  rows that go to memory (lanes past the row's end are 0).

Exactly :func:`golden.nonlinear.shiftmax` with ``n = 15``, ``out_bits = 8``, for the ``x0``
set by ``CONFIG softmax=1`` (``golden.nonlinear.softmax_x0`` of the logits' scale).

Pipeline (one register each, a row entering in cycle ``c``): ``in`` (``c + 1``), lane maximum,
running maximum (``max[r]`` written), ``x - max[r]``, the exponential's stages, then on pass 1
the lane sum tree and the running sum (``sum[r]`` written), on pass 2 the product and the shift.
The reader leaves :meth:`SoftmaxStage.gap` idle cycles between passes 1 and 2, so each row's
factor is written before its first element reaches the product; everything else is fixed
latency: rows of pass 2 leave :attr:`SoftmaxStage.latency` cycles after they enter.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal, signed, unsigned
from amaranth.lib import data

from .config import EngineConfig
from .divider import PipelinedDivider, pipelined_divider_latency
from .isa import ROW_BITS, SEG_BITS, Insn
from .postops import Stage, side_layout, stage_signature
from .shiftexp import ShiftExp, shift_exp_latency

__all__ = ["SoftmaxStage"]

#: Shiftmax's shift exponent and output bits (I-ViT's n and output_bit for the engine)
N = 15
OUT_BITS = 8
INT31_MAX = (1 << 31) - 1
#: bits of ``x - max``: int8 logits differ by at most 255
D_BITS = 10


def _tree_levels(n: int) -> int:
    return max(1, (n - 1).bit_length())


class SoftmaxStage(Stage):
    """Shiftmax over each stored row (module docstring). CONFIG with ``softmax`` set gives
    ``x0``; the stage has no other settings and no set-up."""

    setup_cycles = 0
    #: passes the reader makes over a softmax STORE's rows
    PASSES = 3
    #: registers before the exponential: in, lane max, running max, x - max
    FRONT = 4
    #: the product and the shift after it
    BACK = 2

    def __init__(self, config: EngineConfig):
        self.config = config
        super().__init__(stage_signature(config))

    @classmethod
    def exp_latency(cls) -> int:
        return shift_exp_latency(N)

    @classmethod
    def divider_latency(cls) -> int:
        return pipelined_divider_latency(31)

    @classmethod
    def stage_latency(cls) -> int:
        """Rows of the last pass: cycles from ``i`` to ``o``."""
        return cls.FRONT + cls.exp_latency() + cls.BACK

    @classmethod
    def gap(cls, config: EngineConfig) -> int:
        """Idle cycles the reader leaves between the last row of pass 1 and the first of
        pass 2: the sum tree, the running sum and the divider (the first row's factor must be
        written before its first element reaches the product)."""
        return 1 + _tree_levels(config.cols) + cls.divider_latency()

    @staticmethod
    def uses(insn: Insn) -> bool:
        return bool(insn.args.get("softmax", 0))

    @staticmethod
    def select(cmd):
        return cmd.softmax

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        c, rows = cfg.cols, max(cfg.rows, 2)
        en = Signal()
        m.d.comb += [en.eq(self.o.ready), self.set_up.eq(1)]
        side_l = side_layout(cfg)

        # CONFIG softmax=1: x0
        x0 = Signal(signed(18), init=-1)
        with m.If(self.settings_en & self.settings.softmax):
            m.d.sync += x0.eq(self.settings.x0)

        # -- in: the logits (int8 in their lanes), which lanes hold the row, the side fields
        p = self.i.payload
        a_valid = Signal()
        a_side = Signal(side_l)
        a_x = Signal(data.ArrayLayout(signed(9), c))
        a_keep = Signal(c)
        a_last_row = Signal()
        # causal: lane j of segment t of row r takes part if t c + j <= mask_row + r, that
        # is if j <= reach = mask_row + r - t c (one subtraction a row, a compare a lane)
        reach = Signal(signed(ROW_BITS + SEG_BITS + c.bit_length() + 3))
        m.d.comb += reach.eq(self.cmd.mask_row + p.side.row - p.side.seg * c)
        with m.If(en):
            m.d.sync += [a_valid.eq(self.i.valid & self.select(self.cmd)), a_side.eq(p.side),
                         a_last_row.eq(p.side.row == self.cmd.rows - 1)]
            for j in range(c):
                m.d.sync += [a_x[j].eq(p.data[j]),
                             a_keep[j].eq((~p.side.seg_last | (j < self.cmd.cols))
                                          & (~self.cmd.causal | (reach >= j)))]

        # -- lane max (masked lanes lowest)
        b_valid, b_side, b_last_row = Signal(), Signal(side_l), Signal()
        b_x = Signal.like(a_x)
        b_keep = Signal(c)
        b_max = Signal(signed(10))
        low = -(1 << 9)
        lane_max = [Signal(signed(10), name=f"lane{j}") for j in range(c)]
        for j in range(c):
            m.d.comb += lane_max[j].eq(a_x[j])
            with m.If(~a_keep[j]):
                m.d.comb += lane_max[j].eq(low)
        level = lane_max
        while len(level) > 1:
            nxt = []
            for k in range(0, len(level), 2):
                if k + 1 == len(level):
                    nxt.append(level[k])
                    continue
                w = Signal(signed(10))
                m.d.comb += w.eq(level[k + 1])
                with m.If(level[k] > level[k + 1]):
                    m.d.comb += w.eq(level[k])
                nxt.append(w)
            level = nxt
        with m.If(en):
            m.d.sync += [b_valid.eq(a_valid), b_side.eq(a_side), b_x.eq(a_x),
                         b_keep.eq(a_keep), b_max.eq(level[0]), b_last_row.eq(a_last_row)]

        # -- running max, max[r] written at the row's last segment (pass 0)
        c_valid, c_side, c_last_row = Signal(), Signal(side_l), Signal()
        c_x = Signal.like(a_x)
        c_keep = Signal(c)
        run_max = Signal(signed(10))
        max_r = Array(Signal(signed(10), name=f"max{k}") for k in range(rows))
        this_max = Signal(signed(10))
        m.d.comb += this_max.eq(b_max)
        with m.If(~b_side.seg_first & (run_max > b_max)):
            m.d.comb += this_max.eq(run_max)
        with m.If(en):
            m.d.sync += [c_valid.eq(b_valid), c_side.eq(b_side), c_x.eq(b_x), c_keep.eq(b_keep),
                         c_last_row.eq(b_last_row)]
            with m.If(b_valid & (b_side.pass_ == 0)):
                m.d.sync += run_max.eq(this_max)
                with m.If(b_side.seg_last):
                    m.d.sync += max_r[b_side.row].eq(this_max)

        # -- x - max[r]
        d_valid, d_side, d_last_row = Signal(), Signal(side_l), Signal()
        d_keep = Signal(c)
        d_x = Signal(data.ArrayLayout(signed(D_BITS), c))
        with m.If(en):
            m.d.sync += [d_valid.eq(c_valid), d_side.eq(c_side), d_keep.eq(c_keep),
                         d_last_row.eq(c_last_row)]
            for j in range(c):
                m.d.sync += d_x[j].eq(c_x[j] - max_r[c_side.row])

        # -- the exponentials, side fields beside them
        m.submodules.exp = exp = ShiftExp(c, D_BITS, N)
        le = exp.latency
        m.d.comb += [exp.x0.eq(x0), exp.en.eq(en), exp.i_valid.eq(d_valid)]
        for j in range(c):
            m.d.comb += exp.i[j].eq(d_x[j])
        e_side = [Signal(side_l, name=f"e_side{k}") for k in range(le)]
        e_keep = [Signal(c, name=f"e_keep{k}") for k in range(le)]
        e_last_row = Signal(le)
        with m.If(en):
            m.d.sync += [e_side[0].eq(d_side), e_keep[0].eq(d_keep),
                         e_last_row.eq((e_last_row << 1) | d_last_row)]
            for k in range(1, le):
                m.d.sync += [e_side[k].eq(e_side[k - 1]), e_keep[k].eq(e_keep[k - 1])]
        ex = [Signal(unsigned(31), name=f"exp{j}") for j in range(c)]
        for j in range(c):
            m.d.comb += ex[j].eq(exp.o[j] & e_keep[-1][j].replicate(31))
        f_valid = exp.o_valid
        f_side = e_side[-1]

        # -- pass 1: the lane sum tree (one level a register), the running sum, sum[r]
        levels = _tree_levels(c)
        sum_bits = 31 + levels
        t_level = ex
        t_valid, t_side, t_last = f_valid, f_side, e_last_row[-1]
        for lv in range(levels):
            nxt = []
            for k in range(0, len(t_level), 2):
                s = Signal(unsigned(sum_bits), name=f"t{lv}_{k // 2}")
                with m.If(en):
                    if k + 1 < len(t_level):
                        m.d.sync += s.eq(t_level[k] + t_level[k + 1])
                    else:
                        m.d.sync += s.eq(t_level[k])
                nxt.append(s)
            v, sd, la = Signal(name=f"t{lv}_valid"), Signal(side_l, name=f"t{lv}_side"), \
                Signal(name=f"t{lv}_last")
            with m.If(en):
                m.d.sync += [v.eq(t_valid), sd.eq(t_side), la.eq(t_last)]
            t_level, t_valid, t_side, t_last = nxt, v, sd, la
        row_sum = t_level[0]
        run_bits = sum_bits + 11
        run_sum = Signal(unsigned(run_bits))
        this_sum = Signal(unsigned(run_bits))
        m.d.comb += this_sum.eq(row_sum + run_sum)
        with m.If(t_side.seg_first):
            m.d.comb += this_sum.eq(row_sum)
        sum_r = Array(Signal(unsigned(31), name=f"sum{k}") for k in range(rows))
        feed = Signal()            # feeding the divider, one row a cycle
        feed_row = Signal(range(rows + 1))
        with m.If(en & t_valid & (t_side.pass_ == 1)):
            m.d.sync += run_sum.eq(this_sum)
            with m.If(t_side.seg_last):
                m.d.sync += sum_r[t_side.row].eq(_clamp31(m, this_sum))
                with m.If(t_last):
                    m.d.sync += [feed.eq(1), feed_row.eq(0)]

        # -- factor[r] = (2**31 - 1) // sum[r]
        m.submodules.div = div = PipelinedDivider(1, 31, 31)
        m.d.comb += [div.en.eq(1), div.i_valid.eq(feed), div.dividend[0].eq(INT31_MAX),
                     div.divisor[0].eq(sum_r[feed_row])]
        with m.If(feed):
            m.d.sync += feed_row.eq(feed_row + 1)
            with m.If(feed_row == self.cmd.rows - 1):
                m.d.sync += feed.eq(0)
        factor_r = Array(Signal(unsigned(31), name=f"factor{k}") for k in range(rows))
        out_row = Signal(range(rows + 1))
        with m.If(self.start):
            m.d.sync += [out_row.eq(0), feed.eq(0)]
        with m.Elif(div.o_valid):
            m.d.sync += [factor_r[out_row].eq(div.quotient[0]), out_row.eq(out_row + 1)]

        # -- pass 2: (exp * factor[r]) >> 24, then out
        g_valid, g_side = Signal(), Signal(side_l)
        g_prod = [Signal(unsigned(62), name=f"prod{j}") for j in range(c)]
        with m.If(en):
            m.d.sync += [g_valid.eq(f_valid & f_side.emit), g_side.eq(f_side)]
            for j in range(c):
                m.d.sync += g_prod[j].eq(ex[j] * factor_r[f_side.row])
        h_valid, h_side = Signal(), Signal(side_l)
        h_out = Signal(data.ArrayLayout(unsigned(OUT_BITS - 1), c))
        with m.If(en):
            m.d.sync += [h_valid.eq(g_valid), h_side.eq(g_side)]
            for j in range(c):
                m.d.sync += h_out[j].eq(g_prod[j] >> (32 - OUT_BITS))

        with m.If(self.select(self.cmd)):
            m.d.comb += [self.i.ready.eq(en), self.o.valid.eq(h_valid),
                         self.o.payload.side.eq(h_side)]
            for j in range(c):
                m.d.comb += self.o.payload.data[j].eq(h_out[j])
        with m.Else():
            m.d.comb += [self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready),
                         self.o.payload.eq(self.i.payload)]
        return m


def _clamp31(m: Module, value) -> Signal:
    out = Signal(unsigned(31))
    m.d.comb += out.eq(value)
    with m.If(value > INT31_MAX):
        m.d.comb += out.eq(INT31_MAX)
    return out


SoftmaxStage.latency = SoftmaxStage.stage_latency()
