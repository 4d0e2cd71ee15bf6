"""cocotb testbench for the FPGA board top, through its UART pins only (used by ``sim.board``).

The job (``TESSERA_JOB``, JSON) lists steps. ``{"raw": hex}`` sends those bytes as they are
(a frame of any shape, or a frame cut short) and records the response frame, if one comes;
``{"op": name, ...}`` runs one of :mod:`fpga.host`'s operations, the same generator the
serial driver runs on a real board, with this UART as its transport, and records its result or
the error it raised. Results go to the job's ``out`` file; the caller judges them.

Python acts once per UART bit, never per clock cycle.
"""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, Timer

from fpga import host
from fpga import protocol as p
from fpga.top import LINK_RESET_CYCLES
from rtl.config import EngineConfig

PERIOD_NS = 10


class SimUART:
    """The host's end of the UART: drives ``rx``, samples ``tx`` in the middle of each bit."""

    def __init__(self, dut, divisor: int):
        self.dut = dut
        self.bit_ns = divisor * PERIOD_NS
        self.received: deque[int] = deque()
        dut.rx.value = 1
        cocotb.start_soon(self._receive())

    async def send(self, data: bytes) -> None:
        for byte in data:
            for level in (0, *((byte >> i) & 1 for i in range(8)), 1):
                self.dut.rx.value = level
                await Timer(self.bit_ns, "ns")

    async def _receive(self) -> None:
        while True:
            await FallingEdge(self.dut.tx)
            await Timer(self.bit_ns + self.bit_ns // 2, "ns")
            byte = 0
            for i in range(8):
                byte |= int(self.dut.tx.value) << i
                await Timer(self.bit_ns, "ns")
            if int(self.dut.tx.value) == 1:      # the stop bit
                self.received.append(byte)

    async def take(self, count: int, *, within_bytes: int) -> bytes | None:
        """``count`` received bytes, or None if they do not come within that many byte times."""
        for _ in range(within_bytes + count):
            if len(self.received) >= count:
                return bytes(self.received.popleft() for _ in range(count))
            await Timer(10 * self.bit_ns, "ns")
        return None

    async def exchange(self, request: bytes, *, within_bytes: int) -> bytes | None:
        """Send a request; the whole response frame, or None if none comes."""
        self.received.clear()
        await self.send(request)
        header = await self.take(p.HEADER_BYTES, within_bytes=within_bytes)
        if header is None:
            return None
        rest = await self.take(p.response_length(header), within_bytes=8)
        if rest is None:
            raise p.FrameError(f"response cut short after {header.hex(' ')}")
        return header + rest


def _jsonable(value):
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "name") and hasattr(value, "value"):   # enums
        return value.name
    return value


@cocotb.test()
async def board_session(dut):
    spec = json.loads(Path(os.environ["TESSERA_JOB"]).read_text())
    config = EngineConfig.from_dict(spec["config"])
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    uart = SimUART(dut, spec["divisor"])
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2 * LINK_RESET_CYCLES)   # the host link's own reset is over
    # a response may take a long time: a request cut short is answered after the timeout
    patience = p.TIMEOUT_BYTES + 64

    async def exchange(request: bytes) -> bytes:
        frame = await uart.exchange(request, within_bytes=patience)
        if frame is None:
            raise p.FrameError("no response from the board")
        return frame

    results = []
    for step in spec["steps"]:
        if "raw" in step:
            frame = await uart.exchange(bytes.fromhex(step["raw"]), within_bytes=patience)
            results.append({"response": None if frame is None else frame.hex()})
            continue
        op = step["op"]
        if op == "gemm":
            gen = host.gemm(config, step["m"], step["k"], step["n"], seed=step.get("seed", 0),
                            requant=step.get("requant", False))
        elif op == "write":
            gen = host.write(step["args"][0], bytes.fromhex(step["args"][1]))
        elif op in ("read", "load_program", "start"):
            gen = getattr(host, op)(*step["args"])
        else:
            gen = getattr(host, op)()
        try:
            value = await host.drive_async(gen, exchange)
            if isinstance(value, bytes):
                value = value.hex()
            results.append({"result": _jsonable(value)})
        except (p.FrameError, host.EngineFault, ValueError) as e:
            results.append({"error": f"{type(e).__name__}: {e}"})
        if step.get("pause_cycles"):
            await Timer(step["pause_cycles"] * PERIOD_NS, "ns")
    Path(spec["out"]).write_text(json.dumps(results))
