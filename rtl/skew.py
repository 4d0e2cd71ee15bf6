"""Delay lines that skew operands into the array and deskew results out of it."""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Module, Shape, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import refuse

__all__ = ["Skew"]


class Skew(wiring.Component):
    """Lane ``k`` of ``i`` appears on ``o`` after ``delays[k]`` cycles (0 is a wire).

    Skewing operands by their row index turns a vector presented at once into the diagonal
    wavefront a systolic array needs; deskewing by ``cols-1-j`` undoes it on the way out.
    """

    def __init__(self, shape, delays: Sequence[int]):
        delays = list(delays)
        if not delays or any(not isinstance(d, int) or d < 0 for d in delays):
            raise refuse(self, f"delays must be a non-empty list of non-negative integers, "
                               f"not {delays!r}")
        self.delays = delays
        self._shape = shape
        super().__init__({"i": In(shape).array(len(delays)), "o": Out(shape).array(len(delays))})

    @property
    def latency(self) -> int:
        """The longest lane's delay, in cycles."""
        return max(self.delays)

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(self._shape).width
        for k, d in enumerate(self.delays):
            prev = Value.cast(self.i[k])
            for n in range(d):
                reg = Signal(width, name=f"lane{k}_d{n}")
                m.d.sync += reg.eq(prev)
                prev = reg
            m.d.comb += self.o[k].eq(prev)
        return m
