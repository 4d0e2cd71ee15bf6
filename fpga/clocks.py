"""The engine's clock on a board: the oscillator, or an ECP5 PLL that makes the target clock.

ULX3S has a 25 MHz oscillator and OrangeCrab a 48 MHz one; the engine is timed at
``clock_mhz`` (100 MHz by default). On ECP5 boards :func:`ecp5_pll` picks the dividers of an
``EHXPLLL`` as Project Trellis' ``ecppll`` does (the output closest to the target with the
VCO in range, the VCO nearest 600 MHz among equals), except that it never goes above the
target, the frequency the design is timed at. :class:`BoardTop <fpga.top.BoardTop>` clocks
everything from its output, held in reset (the global one) until the PLL locks. nextpnr
derives the output clock's constraint from the oscillator's and the dividers, so timing is
checked at the frequency the board really runs at.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, floor

from amaranth.hdl import ClockDomain, ClockSignal, Const, Instance, Module, Signal

from .boards import BoardError

__all__ = ["Ecp5Pll", "ecp5_pll"]

# ECP5 sysCLOCK PLL limits (Lattice TN1263, table 9; as ecppll uses them), MHz
_PFD_MHZ = (3.125, 400.0)
_VCO_MHZ = (400.0, 800.0)
_OUT_MHZ = (3.125, 400.0)


@dataclass(frozen=True)
class Ecp5Pll:
    """An ``EHXPLLL`` setting: CLKOP = CLKI / ``clki_div`` * ``clkfb_div`` (feedback from
    CLKOP), the VCO at CLKOP * ``clkop_div``."""

    input_hz: int
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def output_hz(self) -> float:
        return self.input_hz / self.clki_div * self.clkfb_div

    @property
    def vco_hz(self) -> float:
        return self.output_hz * self.clkop_div

    def elaborate_into(self, m: Module, clock_in) -> None:
        """Create the ``sync`` domain clocked by the PLL from ``clock_in`` (a pin's signal),
        held in reset until the PLL reports lock.

        As in Amaranth's own ECP5 clock domain, the reset is the global set/reset (every
        register back to its initial value, over the dedicated network), released in step
        with the clock by two registers; the domain itself is reset-less. (A reset through
        the fabric would reach every register's LSR pin: a net of twenty thousand loads, and
        registers that no longer share a slice with those of another enable.)"""
        locked = Signal()
        m.domains.sync = ClockDomain("sync", reset_less=True)
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{self.input_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{self.output_hz / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=self.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=self.clkop_div,
            p_CLKOP_CPHASE=(self.clkop_div - 1) // 2, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=self.clkfb_div,
            i_RST=Const(0), i_STDBY=Const(0), i_CLKI=clock_in,
            o_CLKOP=ClockSignal("sync"), i_CLKFB=ClockSignal("sync"),
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
            i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0), o_LOCK=locked)
        gsr0, gsr1 = Signal(), Signal()
        m.submodules.gsr_sync0 = Instance("FD1S3AX", p_GSR="DISABLED", i_CK=ClockSignal("sync"),
                                          i_D=locked, o_Q=gsr0)
        m.submodules.gsr_sync1 = Instance("FD1S3AX", p_GSR="DISABLED", i_CK=ClockSignal("sync"),
                                          i_D=gsr0, o_Q=gsr1)
        m.submodules.gsr = Instance("SGSR", i_CLK=ClockSignal("sync"), i_GSR=gsr1)


def ecp5_pll(input_hz: int, target_hz: float) -> Ecp5Pll:
    """The ``EHXPLLL`` dividers whose output comes closest to ``target_hz`` from below."""
    fin = input_hz / 1e6
    target = target_hz / 1e6
    if not _OUT_MHZ[0] <= target <= _OUT_MHZ[1]:
        raise BoardError(f"an ECP5 PLL makes {_OUT_MHZ[0]:g} to {_OUT_MHZ[1]:g} MHz, "
                         f"not {target:g} MHz")
    best = None
    for clki in range(1, 129):
        pfd = fin / clki
        if not _PFD_MHZ[0] <= pfd <= _PFD_MHZ[1]:
            continue
        for clkfb in range(1, 81):
            out = pfd * clkfb
            if not _OUT_MHZ[0] <= out <= _OUT_MHZ[1]:
                continue
            # the output dividers that put the VCO in range
            for clkop in range(max(1, ceil(_VCO_MHZ[0] / out)),
                               min(128, floor(_VCO_MHZ[1] / out)) + 1):
                vco = out * clkop
                if out > target + 1e-9:
                    continue   # never faster than the clock the design was timed at
                key = (round(target - out, 9), abs(vco - 600))
                if best is None or key < best[0]:
                    best = (key, (clki, clkfb, clkop))
    if best is None:
        raise BoardError(f"no ECP5 PLL setting makes {target:g} MHz from {fin:g} MHz")
    clki, clkfb, clkop = best[1]
    return Ecp5Pll(input_hz, clki, clkfb, clkop)
