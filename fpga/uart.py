"""A plain UART: 8 data bits, no parity, one stop bit, ``divisor`` clock cycles per bit."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.config import ConfigError, refuse

__all__ = ["UARTRx", "UARTTx", "divisor_for"]


def divisor_for(clock_hz: int, baud: int) -> int:
    """Clock cycles per bit; refuses a baud rate the clock cannot make within 2%."""
    if baud <= 0 or clock_hz <= 0:
        raise ConfigError(f"baud rate and clock must be positive, not {baud} and {clock_hz}")
    divisor = round(clock_hz / baud)
    if divisor < 4:
        raise ConfigError(f"{baud} baud is too fast for a {clock_hz / 1e6:g} MHz clock "
                           f"(needs at least 4 cycles per bit)")
    if abs(clock_hz / divisor - baud) / baud > 0.02:
        raise ConfigError(f"a {clock_hz / 1e6:g} MHz clock makes {clock_hz / divisor:,.0f} "
                           f"baud, not {baud} (more than 2% off)")
    return divisor


class UARTRx(wiring.Component):
    """Receives bytes on ``rx`` (idle high) into a stream; each byte is valid for one cycle
    (``stream`` without back-pressure: the consumer must take it). A start bit that does not
    last half a bit time is ignored as a glitch; a byte without its stop bit is dropped."""

    def __init__(self, divisor: int):
        if divisor < 4:
            raise refuse(self, f"a UART needs at least 4 cycles per bit, not {divisor}")
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1),
                          "data": Out(stream.Signature(8, always_ready=True))})

    def elaborate(self, platform):
        m = Module()
        sync = Signal(2, init=0b11)
        m.d.sync += sync.eq(Cat(self.rx, sync[0]))
        line = sync[1]
        count = Signal(range(self.divisor))
        bits = Signal(8)
        index = Signal(range(8))
        m.d.sync += self.data.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += count.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                with m.Elif(line):
                    m.next = "IDLE"  # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [count.eq(self.divisor - 1), index.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                with m.Else():
                    m.d.sync += [bits.eq(Cat(bits[1:], line)), count.eq(self.divisor - 1),
                                 index.eq(index + 1)]
                    with m.If(index == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                with m.Else():
                    m.d.sync += [self.data.valid.eq(line), self.data.payload.eq(bits)]
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """Sends the bytes of a stream on ``tx`` (idle high). A byte taken waits in a holding
    register until the line is free, so ``ready`` comes from a register alone."""

    def __init__(self, divisor: int):
        if divisor < 4:
            raise refuse(self, f"a UART needs at least 4 cycles per bit, not {divisor}")
        self.divisor = divisor
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        count = Signal(range(self.divisor))
        shift = Signal(10, init=0x3FF)
        left = Signal(range(11))
        held = Signal()
        byte = Signal(8)
        m.d.comb += [self.tx.eq(shift[0]), self.data.ready.eq(~held)]
        with m.If(self.data.valid & ~held):
            m.d.sync += [held.eq(1), byte.eq(self.data.payload)]
        with m.If(held & (left == 0)):
            # start bit, the byte LSB first, stop bit
            m.d.sync += [shift.eq(Cat(0, byte, 1)), left.eq(10), count.eq(self.divisor - 1),
                         held.eq(0)]
        with m.Elif(left != 0):
            with m.If(count != 0):
                m.d.sync += count.eq(count - 1)
            with m.Else():
                m.d.sync += [shift.eq(Cat(shift[1:], 1)), left.eq(left - 1),
                             count.eq(self.divisor - 1)]
        return m
