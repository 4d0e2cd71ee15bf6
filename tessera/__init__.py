"""Tessera: a transformer accelerator you can read, simulate, map onto and put on an FPGA."""

__version__ = "0.1.0"
