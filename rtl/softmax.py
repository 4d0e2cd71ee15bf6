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

Pipeline, one register a step (``L = ceil(log2 cols)`` tree levels): ``in``; the lane maximum,
a level a register (``L``); the running maximum (``max[r]`` written); ``x - max[r]``; the
exponential's stages; then on pass 1 the lane sum tree (``L``), the running sum, and ``sum[r]``
clamped and written; on pass 2 the product as three 16-bit partial products in DSP blocks
(operands, products; the high halves' product is always 0), their middle sum, the total, and
the shift. No step holds more
than one carry chain or a multiplier. The reader leaves :meth:`SoftmaxStage.gap` idle cycles
between passes 1 and 2, so each row's factor is written before its first element reaches the
product; everything else is fixed latency: rows of pass 2 leave
:meth:`SoftmaxStage.latency_of` cycles after they enter.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, EnableInserter, Module, Signal, signed, unsigned
from amaranth.lib import data

from .config import EngineConfig
from .divider import PipelinedDivider, pipelined_divider_latency
from .dsp import registered_product
from .isa import ROW_BITS, SEG_BITS, X0_BITS, Insn
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
    #: registers before the exponential besides the max tree: in, running max, x - max
    FRONT = 3
    #: after it on pass 2: the partial products' operands and products, their middle sum,
    #: the total, the shift
    BACK = 5
    #: multipliers per lane (DSP blocks): three 16-bit partial products of exp * factor
    MULTIPLIERS_PER_LANE = 3

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
    def latency_of(cls, config: EngineConfig) -> int:
        """Rows of the last pass: cycles from ``i`` to ``o``."""
        return cls.FRONT + _tree_levels(config.cols) + cls.exp_latency() + cls.BACK

    @classmethod
    def gap(cls, config: EngineConfig) -> int:
        """Idle cycles the reader leaves between the last row of pass 1 and the first of
        pass 2: the sum tree, the running sum, the clamp and the divider (the first row's
        factor must be written before its first element reaches the product)."""
        return 2 + _tree_levels(config.cols) + cls.divider_latency()

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
        levels = _tree_levels(c)
        en = Signal()
        m.d.comb += [en.eq(self.o.ready), self.set_up.eq(1)]
        # every register below advances with `en` (the products' DSP blocks take it as ce)
        core = Module()
        m.submodules.core = EnableInserter(en)(core)
        side_l = side_layout(cfg)

        def reg(value, shape, name):
            r = Signal(shape, name=name)
            core.d.sync += r.eq(value)
            return r

        def delay(value, shape, n, name):
            for k in range(n):
                value = reg(value, shape, f"{name}_d{k}")
            return value

        # CONFIG softmax=1: x0
        x0 = Signal(signed(X0_BITS), init=-1)
        with m.If(self.settings_en & self.settings.softmax):
            m.d.sync += x0.eq(self.settings.x0)

        # -- in: the logits (int8 in their lanes), which lanes hold the row, the side fields.
        # causal: lane j of segment t of row r takes part if t c + j <= mask_row + r, that is
        # if j <= reach = mask_row + r - t c (one subtraction a row, a compare a lane)
        p = self.i.payload
        reach = Signal(signed(ROW_BITS + SEG_BITS + c.bit_length() + 3))
        m.d.comb += reach.eq(self.cmd.mask_row + p.side.row - p.side.seg * c)
        a_valid = reg(self.i.valid & self.select(self.cmd), 1, "a_valid")
        a_side = reg(p.side, side_l, "a_side")
        a_last_row = reg(p.side.row == self.cmd.rows - 1, 1, "a_last_row")
        a_x = reg(Cat(*(p.data[j][:9] for j in range(c))), data.ArrayLayout(signed(9), c), "a_x")
        a_keep = reg(Cat(*((~p.side.seg_last | (j < self.cmd.cols))
                           & (~self.cmd.causal | (reach >= j)) for j in range(c))), c, "a_keep")

        # -- the lane maximum, a tree level a register (lanes outside the row lowest)
        low = -(1 << 9)
        level = []
        for j in range(c):
            v = Signal(signed(10), name=f"lane{j}")
            m.d.comb += v.eq(a_x[j])
            with m.If(~a_keep[j]):
                m.d.comb += v.eq(low)
            level.append(v)
        for lv in range(levels):
            nxt = []
            for k in range(0, len(level), 2):
                if k + 1 == len(level):
                    nxt.append(reg(level[k], signed(10), f"max{lv}_{k // 2}"))
                    continue
                w = Signal(signed(10), name=f"max{lv}_{k // 2}_w")
                m.d.comb += w.eq(level[k + 1])
                with m.If(level[k] > level[k + 1]):
                    m.d.comb += w.eq(level[k])
                nxt.append(reg(w, signed(10), f"max{lv}_{k // 2}"))
            level = nxt
        b_max = level[0]
        b_valid = delay(a_valid, 1, levels, "b_valid")
        b_side = delay(a_side, side_l, levels, "b_side")
        b_last_row = delay(a_last_row, 1, levels, "b_last_row")
        b_x = delay(a_x, a_x.shape(), levels, "b_x")
        b_keep = delay(a_keep, c, levels, "b_keep")

        # -- the running max; max[r] written at the row's last segment (pass 0)
        run_max = Signal(signed(10))
        max_r = Array(Signal(signed(10), name=f"max_r{k}") for k in range(rows))
        this_max = Signal(signed(10))
        m.d.comb += this_max.eq(b_max)
        with m.If(~b_side.seg_first & (run_max > b_max)):
            m.d.comb += this_max.eq(run_max)
        with core.If(b_valid & (b_side.pass_ == 0)):
            core.d.sync += run_max.eq(this_max)
            with core.If(b_side.seg_last):
                core.d.sync += max_r[b_side.row].eq(this_max)
        c_valid = reg(b_valid, 1, "c_valid")
        c_side = reg(b_side, side_l, "c_side")
        c_last_row = reg(b_last_row, 1, "c_last_row")
        c_x = reg(b_x, b_x.shape(), "c_x")
        c_keep = reg(b_keep, c, "c_keep")

        # -- x - max[r]
        d_valid = reg(c_valid, 1, "d_valid")
        d_side = reg(c_side, side_l, "d_side")
        d_last_row = reg(c_last_row, 1, "d_last_row")
        d_keep = reg(c_keep, c, "d_keep")
        row_max = Signal(signed(10))
        m.d.comb += row_max.eq(max_r[c_side.row])
        d_x = reg(Cat(*((c_x[j] - row_max)[:D_BITS] for j in range(c))),
                  data.ArrayLayout(signed(D_BITS), c), "d_x")

        # -- the exponentials, the side fields beside them
        m.submodules.exp = exp = ShiftExp(c, D_BITS, N)
        le = exp.latency
        m.d.comb += [exp.x0.eq(x0), exp.en.eq(en), exp.i_valid.eq(d_valid)]
        for j in range(c):
            m.d.comb += exp.i[j].eq(d_x[j])
        f_side = delay(d_side, side_l, le, "e_side")
        f_keep = delay(d_keep, c, le, "e_keep")
        f_last_row = delay(d_last_row, 1, le, "e_last_row")
        f_valid = exp.o_valid
        ex = [Signal(unsigned(31), name=f"exp{j}") for j in range(c)]
        for j in range(c):
            m.d.comb += ex[j].eq(exp.o[j] & f_keep[j].replicate(31))

        # -- pass 1: the lane sum tree (a level a register), the running sum, sum[r]
        sum_bits = 31 + levels
        t_level = ex
        for lv in range(levels):
            t_level = [reg(t_level[k] + t_level[k + 1] if k + 1 < len(t_level) else t_level[k],
                           unsigned(sum_bits), f"sum{lv}_{k // 2}")
                       for k in range(0, len(t_level), 2)]
        row_sum = t_level[0]
        t_valid = delay(f_valid, 1, levels, "t_valid")
        t_side = delay(f_side, side_l, levels, "t_side")
        t_last = delay(f_last_row, 1, levels, "t_last")
        run_bits = sum_bits + SEG_BITS + 1
        run_sum = Signal(unsigned(run_bits))
        this_sum = Signal(unsigned(run_bits))
        m.d.comb += this_sum.eq(row_sum + run_sum)
        with m.If(t_side.seg_first):
            m.d.comb += this_sum.eq(row_sum)
        done = t_valid & (t_side.pass_ == 1) & t_side.seg_last
        with core.If(t_valid & (t_side.pass_ == 1)):
            core.d.sync += run_sum.eq(this_sum)
        done_sum = reg(this_sum, unsigned(run_bits), "done_sum")
        done_row = reg(t_side.row, range(rows), "done_row")
        done_valid = reg(done, 1, "done_valid")
        done_last = reg(done & t_last, 1, "done_last")
        sum_r = Array(Signal(unsigned(31), name=f"sum_r{k}") for k in range(rows))
        clamped = Signal(unsigned(31))
        m.d.comb += clamped.eq(done_sum)
        with m.If(done_sum > INT31_MAX):
            m.d.comb += clamped.eq(INT31_MAX)
        with core.If(done_valid):
            core.d.sync += sum_r[done_row].eq(clamped)

        # -- factor[r] = (2**31 - 1) // sum[r], a row a cycle from the pass's last sum on
        feed = Signal()
        feed_row = Signal(range(rows + 1))
        m.submodules.div = div = PipelinedDivider(1, 31, 31)
        m.d.comb += [div.en.eq(1), div.i_valid.eq(feed), div.dividend[0].eq(INT31_MAX),
                     div.divisor[0].eq(sum_r[feed_row])]
        factor_r = Array(Signal(unsigned(31), name=f"factor_r{k}") for k in range(rows))
        out_row = Signal(range(rows + 1))
        with m.If(self.start):
            m.d.sync += [out_row.eq(0), feed.eq(0), feed_row.eq(0)]
        with m.Else():
            with m.If(en & done_last):
                m.d.sync += [feed.eq(1), feed_row.eq(0)]
            with m.Elif(feed):
                m.d.sync += feed_row.eq(feed_row + 1)
                with m.If(feed_row == self.cmd.rows - 1):
                    m.d.sync += feed.eq(0)
            with m.If(div.o_valid):
                m.d.sync += [factor_r[out_row].eq(div.quotient[0]), out_row.eq(out_row + 1)]

        # -- pass 2: (exp * factor[r]) >> 24 from 16-bit partial products. exp <= sum, so
        # exp * factor <= 2**31 - 1: the high halves' product (bits 32 and up) is always 0 and
        # three products make it (a DSP block each, operands registered in it)
        factor = Signal(unsigned(31))
        m.d.comb += factor.eq(factor_r[f_side.row])
        fh, fl = factor[16:], factor[:16]
        outs = []
        for j in range(c):
            eh, el = ex[j][16:], ex[j][:16]
            hl, lh, ll = (
                registered_product(core, a, b, platform=platform, ce=en, input_registers=True,
                                   name=f"{label}_{j}")
                for label, a, b in (("hl", eh, fl), ("lh", el, fh), ("ll", el, fl)))
            middle = reg(hl + lh, unsigned(33), f"middle_{j}")
            low = reg(ll, unsigned(32), f"low_{j}")
            total = reg(low + (middle << 16), unsigned(50), f"total_{j}")
            outs.append(reg(total[32 - OUT_BITS:32], unsigned(OUT_BITS), f"out_{j}"))
        g_valid = delay(f_valid & f_side.emit, 1, self.BACK, "g_valid")
        g_side = delay(f_side, side_l, self.BACK, "g_side")

        with m.If(self.select(self.cmd)):
            m.d.comb += [self.i.ready.eq(en), self.o.valid.eq(g_valid),
                         self.o.payload.side.eq(g_side)]
            for j in range(c):
                m.d.comb += self.o.payload.data[j].eq(outs[j])
        with m.Else():
            m.d.comb += [self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready),
                         self.o.payload.eq(self.i.payload)]
        return m

