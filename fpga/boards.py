"""Supported boards: their amaranth-boards platform, device resources and toolchain.

Resources are the device's totals (from the vendors' data sheets), used to refuse a
configuration that cannot fit before a long build starts; the build's own report (nextpnr's
``--report``) gives the used and available figures afterwards.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from rtl.config import ConfigError

__all__ = ["BOARDS", "Board", "BoardError", "board"]


class BoardError(ConfigError):
    """An unknown board, or a configuration a board cannot hold; the message says why."""


@dataclass(frozen=True)
class Board:
    """One board: where its platform lives and what its FPGA holds."""

    name: str
    platform: str            # "module:Class" in amaranth_boards
    family: str              # ecp5, ice40, xilinx7
    device: str
    luts: int                # LUT4 (ECP5, iCE40) or LUT6 (7-series)
    dsps: int                # MULT18X18D / SB_MAC16 / DSP48E1
    bram_blocks: int         # EBR (ECP5 18 Kbit, iCE40 4 Kbit) / RAMB36 (36 Kbit)
    bram_kbit: int           # kilobits per block
    clock_hz: int            # the board's oscillator
    open_flow: bool = True   # built here with YoWASP tools; False: files for the vendor flow
    #: (rx, tx) pins of connector ``io`` 0 for the host link, on a board whose platform has
    #: no UART (a 3.3 V USB-serial adapter goes there)
    header_uart: tuple[str, str] | None = None

    def make_platform(self):
        module, cls = self.platform.split(":")
        platform = getattr(importlib.import_module(f"amaranth_boards.{module}"), cls)()
        if self.header_uart is not None:
            from amaranth.build import Attrs
            from amaranth_boards.resources import UARTResource

            rx, tx = self.header_uart
            platform.add_resources([UARTResource(0, rx=rx, tx=tx, conn=("io", 0),
                                                 attrs=Attrs(IO_TYPE="LVCMOS33"))])
        return platform

    @property
    def bram_bits(self) -> int:
        return self.bram_blocks * self.bram_kbit * 1024


#: ECP5 figures: Lattice FPGA-DS-02012 (ECP5 family data sheet), table 1.1.
#: iCE40 UltraPlus: FPGA-DS-02008, table 1.1 (its four 256 Kbit SPRAMs are not counted: they
#: are not inferred from generic memories). Artix-7 35T: Xilinx DS180, table 3.
BOARDS: dict[str, Board] = {b.name: b for b in [
    Board("ulx3s-12f", "ulx3s:ULX3S_12F_Platform", "ecp5", "LFE5U-12F", 12_288, 28, 32, 18,
          25_000_000),
    Board("ulx3s-25f", "ulx3s:ULX3S_25F_Platform", "ecp5", "LFE5U-25F", 24_288, 28, 56, 18,
          25_000_000),
    Board("ulx3s-45f", "ulx3s:ULX3S_45F_Platform", "ecp5", "LFE5U-45F", 43_848, 72, 108, 18,
          25_000_000),
    Board("ulx3s-85f", "ulx3s:ULX3S_85F_Platform", "ecp5", "LFE5U-85F", 83_640, 156, 208, 18,
          25_000_000),
    # OrangeCrab has no UART chip (its USB goes straight to the FPGA): the host link uses the
    # Feather header's RX (0) and TX (1) pins
    Board("orangecrab", "orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", "ecp5", "LFE5U-25F",
          24_288, 28, 56, 18, 48_000_000, header_uart=("0", "1")),
    Board("orangecrab-85f", "orangecrab_r0_2:OrangeCrabR0_2_85FPlatform", "ecp5", "LFE5U-85F",
          83_640, 156, 208, 18, 48_000_000, header_uart=("0", "1")),
    Board("icebreaker", "icebreaker:ICEBreakerPlatform", "ice40", "iCE40UP5K", 5_280, 8, 30, 4,
          12_000_000),
    Board("arty-a7-35", "arty_a7:ArtyA7_35Platform", "xilinx7", "xc7a35ti", 20_800, 90, 50, 36,
          100_000_000, open_flow=False),
]}


def board(name: str) -> Board:
    """The named board, or an error listing the known ones."""
    try:
        return BOARDS[name]
    except KeyError:
        raise BoardError(f"unknown board {name!r}; boards: {', '.join(BOARDS)}") from None
