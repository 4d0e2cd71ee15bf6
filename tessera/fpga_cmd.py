"""``tessera fpga``: build a board's bitstream, run a GEMM on a board (being written)."""

from __future__ import annotations

import argparse

__all__ = ["add_fpga_parser"]


def add_fpga_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``tessera fpga`` (nothing yet)."""
