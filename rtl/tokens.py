"""Dependency-token counters: how the load, compute and store units wait for each other.

Each channel of :data:`rtl.isa.TOKENS` is one :class:`TokenCounter`. The unit that gives tokens
drives its ``push`` (:data:`producer_signature`), the unit that takes them its ``pop`` and reads
``available`` (:data:`consumer_signature`); ``Engine`` connects the three units to four
counters. A unit pops only while ``available`` is high, so the count never goes below zero.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import refuse

__all__ = ["TOKEN_BITS", "TokenCounter", "TokenTiming", "consumer_signature",
           "producer_signature"]

#: bits of each counter
TOKEN_BITS = 8

#: a unit's side of a channel it gives tokens on: one token per cycle ``push`` is high
producer_signature = wiring.Signature({"push": Out(1)})
#: a unit's side of a channel it takes tokens from: ``pop`` takes one, only while ``available``
consumer_signature = wiring.Signature({"pop": Out(1), "available": In(1)})


class TokenTiming:
    """The counter's timing, for the cycle model."""

    #: cycles from a push to the token being ``available`` (the count is a register)
    latency = 1
    #: throughput: a push and a pop each cycle
    throughput = 1
    #: tokens a counter holds; a program that leaves more outstanding on one channel wraps it
    capacity = (1 << TOKEN_BITS) - 1


class TokenCounter(wiring.Component):
    """Counts the tokens given and not yet taken on one channel.

    ``producer.push`` adds one (visible on ``consumer.available`` the next cycle,
    :attr:`TokenTiming.latency`), ``consumer.pop`` takes one; both may happen in one cycle.
    ``count`` is the number held, ``width`` bits (:attr:`TokenTiming.capacity` by default).
    """

    def __init__(self, *, width: int = TOKEN_BITS):
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise refuse(self, f"width must be a positive integer, not {width!r}")
        self.width = width
        super().__init__({
            "producer": In(producer_signature),
            "consumer": In(consumer_signature),
            "count": Out(width),
        })

    @property
    def latency(self) -> int:
        return TokenTiming.latency

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.count.eq(self.count + self.producer.push - self.consumer.pop)
        m.d.comb += self.consumer.available.eq(self.count != 0)
        return m
