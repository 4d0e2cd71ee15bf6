"""A registered multiply: in fabric for simulation, in a DSP block's own register on ECP5.

Yosys maps a multiplier to an ECP5 MULT18X18D but keeps the register after it in the fabric,
so every product crosses the routing between the DSP column and the logic twice in one cycle
(about 4 ns each way, measured with nextpnr, beside 3.9 ns in the DSP). With the DSP's output
register the product register is inside the block: one route fewer per cycle, same latency.

``registered_product(m, a, b, ce=...)`` returns a signal holding ``a * b`` one cycle later.
Outside ECP5 it is an ordinary register in the ``sync`` domain; on ECP5 (a platform whose
``family`` is ``"ecp5"``) it is a MULT18X18D with ``REG_OUTPUT_CLK = "CLK0"``, clocked by
``sync``, cleared by its reset and enabled by ``ce`` (pass the enable the surrounding logic
runs under: an ``EnableInserter`` does not reach an instance). ``sim/models/MULT18X18D.v`` is
a behavioural model of the primitive, with which Verilator checks the ECP5 netlist.

With ``input_registers=True`` the operands are registered first (two cycles from ``a`` and
``b`` to their product): on ECP5 in the DSP's own input registers, so an operand that fans out
to several DSP blocks has a whole cycle for its route to the DSP column (the multiplier's
combinational path no longer follows that route in the same cycle).
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, ResetSignal, Signal, Value, signed

__all__ = ["registered_product", "targets_ecp5"]

DSP_BITS = 18


def targets_ecp5(platform) -> bool:
    """Whether ``platform`` is an ECP5 FPGA (its ``family``): there the multipliers are
    MULT18X18D and the registered block RAM reads DP16KD instances (``rtl/memory.py``)."""
    return getattr(platform, "family", None) == "ecp5"


def registered_product(m, a: Value, b: Value, *, platform, ce=1, name: str = "prod",
                       multiply=None, input_registers: bool = False):
    """``a * b`` (each signed or unsigned, at most 18 bits as signed) registered once (twice
    with ``input_registers``: the operands, then the product).

    ``multiply(a, b)``, if given, replaces ``a * b`` in the fabric version (a test breaks the
    PE's arithmetic that way to see the regressions fail)."""
    a, b = Value.cast(a), Value.cast(b)
    shape = (a * b).shape()
    width = shape.width
    prod = Signal(shape, name=name)
    if not targets_ecp5(platform):
        if input_registers:
            a_reg = Signal(a.shape(), name=f"{name}_a_reg")
            b_reg = Signal(b.shape(), name=f"{name}_b_reg")
            m.d.sync += [a_reg.eq(a), b_reg.eq(b)]
            a, b = a_reg, b_reg
        m.d.sync += prod.eq(multiply(a, b) if multiply else a * b)
        return prod
    input_clk = "CLK0" if input_registers else "NONE"
    ports = {}
    for label, v in (("A", a), ("B", b)):
        wide = Signal(signed(DSP_BITS), name=f"{name}_{label.lower()}")
        if len(v) + (0 if v.shape().signed else 1) > DSP_BITS:
            raise ValueError(f"a {len(v)}-bit operand does not fit an 18x18 DSP block")
        m.d.comb += wide.eq(v)   # sign- or zero-extended to 18 bits, multiplied as signed
        ports.update({f"i_{label}{i}": wide[i] for i in range(DSP_BITS)})
    out = Signal(2 * DSP_BITS, name=f"{name}_p")
    ports.update({f"o_P{i}": out[i] for i in range(2 * DSP_BITS)})
    m.submodules[f"{name}_dsp"] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK=input_clk, p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
        p_REG_INPUTB_CLK=input_clk, p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
        p_REG_PIPELINE_CLK="NONE",
        p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
        p_CLK0_DIV="ENABLED", p_GSR="DISABLED", p_RESETMODE="SYNC",
        p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED",
        i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
        i_CLK0=ClockSignal(), i_CE0=Value.cast(ce), i_RST0=ResetSignal(allow_reset_less=True),
        **ports)
    m.d.comb += prod.eq(out[:width])
    return prod
