"""``tessera sweep``: design-space exploration from a TOML spec (being written)."""

from __future__ import annotations

import argparse

__all__ = ["add_sweep_parser"]


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``tessera sweep`` (nothing yet)."""
