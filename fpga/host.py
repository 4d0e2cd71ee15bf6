"""The host's side of the link: operations on a board, over a serial port or in simulation.

Operations are written once, without I/O: each is a generator that yields a request frame and
is sent back the response frame (``resp = yield request``), and returns its result. A
transport drives them: :class:`SerialLink` over ``pyserial`` for a real board, the cocotb
testbench (``sim/tb_board.py``) over the simulated UART pins. So the GEMM a board runs from
``tessera fpga run`` is the same code, byte for byte, as the one the tests run on the RTL.

    with SerialLink("/dev/ttyUSB0", 115200) as link:
        result = link.run(gemm(config, 64, 64, 64, seed=1))
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rtl.config import ConfigError, EngineConfig
from rtl.counters import counter_layout
from rtl.isa import ErrorCode

from . import protocol as p

__all__ = ["BoardInfo", "EngineFault", "SerialLink", "counters", "drive", "gemm", "info",
           "load_program", "read", "reset", "start", "status", "wait", "write"]

T = TypeVar("T")
#: an operation: yields request frames, is sent response frames, returns a ``T``
Op = Generator[bytes, bytes, T]

COUNTER_NAMES = tuple(counter_layout.members)


class EngineFault(Exception):
    """The engine stopped on an illegal instruction, or a run did not finish."""


@dataclass(frozen=True)
class BoardInfo:
    """What the board's bitstream was built with (the INFO response)."""

    version: int
    rows: int
    cols: int
    dataflow: str
    mem_bytes_per_cycle: int
    insn_bytes: int
    mem_bytes: int
    program_words: int
    max_payload: int
    clock_hz: int
    tag: int

    def check(self, config: EngineConfig) -> None:
        """Refuse to plan for ``config`` on a board built with another configuration."""
        if self.tag != p.config_tag(config):
            raise ConfigError(
                f"the board was built for a {self.rows}x{self.cols} {self.dataflow} engine "
                f"with {self.mem_bytes_per_cycle} B/cycle memory, not for {config.label} "
                f"(configuration tags {self.tag:#010x} and {p.config_tag(config):#010x}); "
                f"pass the configuration the bitstream was built with")


@dataclass(frozen=True)
class RunStatus:
    running: bool
    done: bool
    error: bool
    error_code: ErrorCode
    pc: int        # instructions dispatched (after an error: the failing one's index + 1)
    cycles: int


# -- single requests --------------------------------------------------------------------------

def call(cmd: p.Cmd, payload: bytes = b"") -> Op[bytes]:
    """One request; its response's payload, or :class:`~fpga.protocol.FrameError`."""
    frame = yield p.encode_request(cmd, payload)
    rsp = p.decode_response(frame)
    if rsp.status != p.Status.OK:
        raise p.FrameError(f"the board refused {cmd.name}: {rsp.status.name}", rsp.status)
    return rsp.payload


def info() -> Op[BoardInfo]:
    raw = yield from call(p.Cmd.INFO)
    if len(raw) != p.INFO_FORMAT.size or raw[:4] != b"TSRA":
        raise p.FrameError(f"INFO answered {raw.hex(' ')}, which is not a Tessera board")
    fields = p.INFO_FORMAT.unpack(raw)[1:]
    version, rows, cols, ws, w, insn_bytes, mem, words, maxp, clock, tag = fields
    if version != p.VERSION:
        raise p.FrameError(f"the board speaks protocol version {version}, this host "
                           f"{p.VERSION}: rebuild the bitstream")
    return BoardInfo(version, rows, cols, "ws" if ws else "os", w, insn_bytes, mem, words, maxp,
                     clock, tag)


def write(addr: int, data: bytes) -> Op[None]:
    """Write ``data`` to memory at byte ``addr`` (in frames of up to MAX_PAYLOAD - 4 bytes)."""
    step = p.MAX_PAYLOAD - 4
    for i in range(0, len(data), step):
        yield from call(p.Cmd.WRITE, struct.pack("<I", addr + i) + data[i:i + step])


def read(addr: int, count: int) -> Op[bytes]:
    out = bytearray()
    for i in range(0, count, p.MAX_PAYLOAD):
        n = min(p.MAX_PAYLOAD, count - i)
        chunk = yield from call(p.Cmd.READ, struct.pack("<IH", addr + i, n))
        if len(chunk) != n:
            raise p.FrameError(f"READ of {n} bytes answered {len(chunk)}")
        out += chunk
    return bytes(out)


def load_program(words: list[int], insn_bytes: int) -> Op[None]:
    per_frame = (p.MAX_PAYLOAD - 2) // insn_bytes
    for i in range(0, len(words), per_frame):
        body = b"".join(w.to_bytes(insn_bytes, "little") for w in words[i:i + per_frame])
        yield from call(p.Cmd.PROGRAM, struct.pack("<H", i) + body)


def start(count: int) -> Op[None]:
    yield from call(p.Cmd.START, struct.pack("<H", count))


def reset() -> Op[None]:
    """Stop any run and reset the engine (memory and program stay)."""
    yield from call(p.Cmd.RESET)


def _sized(raw: bytes, size: int, what: str) -> bytes:
    """``raw`` if it is ``size`` bytes, else a FrameError that says what came instead."""
    if len(raw) != size:
        raise p.FrameError(f"{what} answered {len(raw)} bytes ({raw.hex(' ') or 'none'}), not "
                           f"{size}: the board speaks another protocol or the link is noisy")
    return raw


def status() -> Op[RunStatus]:
    raw = _sized((yield from call(p.Cmd.STATUS)), p.STATUS_FORMAT.size, "STATUS")
    flags, code, pc, cycles = p.STATUS_FORMAT.unpack(raw)
    try:
        error_code = ErrorCode(code & 0xF)
    except ValueError:
        raise p.FrameError(f"STATUS carries error code {code & 0xF}, which this host does not "
                           f"know: the board runs another version") from None
    return RunStatus(bool(flags & p.STATUS_RUNNING), bool(flags & p.STATUS_DONE),
                     bool(flags & p.STATUS_ERROR), error_code, pc, cycles)


def counters() -> Op[dict[str, int]]:
    raw = _sized((yield from call(p.Cmd.COUNTERS)), 4 * len(COUNTER_NAMES), "COUNTERS")
    return dict(zip(COUNTER_NAMES, struct.unpack(f"<{len(COUNTER_NAMES)}I", raw), strict=True))


def wait(*, polls: int = 10_000) -> Op[RunStatus]:
    """Poll STATUS until the run ends; raise :class:`EngineFault` if it stopped on an error."""
    for _ in range(polls):
        st = yield from status()
        if not st.running:
            if st.error:
                raise EngineFault(f"the engine stopped at instruction {st.pc - 1}: "
                                  f"{st.error_code.name}")
            return st
    yield from reset()
    raise EngineFault(f"the engine was still running after {polls} status polls; it has been "
                      f"reset")


# -- a whole GEMM -----------------------------------------------------------------------------

def gemm(config: EngineConfig, m: int, k: int, n: int, *, seed: int = 0,
         requant: bool = False) -> Op[dict[str, Any]]:
    """Plan an ``m x k x n`` GEMM for ``config``, run it on the board and check every element of
    the result against the golden model. Random operands from ``seed``."""
    from mapping.gemm import plan_gemm
    from mapping.operands import golden_result, make_operands, memory_image, read_result
    from mapping.program import program_cycles
    from rtl import isa

    board = yield from info()
    board.check(config)
    ops = make_operands(m, k, n, seed=seed, requant=requant)
    plan = plan_gemm(config, m, k, n, requant=requant, zero_point=ops.zero_point)
    words = isa.assemble(plan.program, config)
    image = memory_image(plan, ops)
    if len(words) > board.program_words:
        raise ConfigError(f"the {m}x{k}x{n} GEMM takes {len(words)} instructions; the board's "
                          f"program memory holds {board.program_words}")
    if len(image) > board.mem_bytes:
        raise ConfigError(f"the {m}x{k}x{n} GEMM needs {len(image):,} bytes of memory; the "
                          f"board has {board.mem_bytes:,}")
    yield from write(0, image)
    yield from load_program(words, board.insn_bytes)
    yield from start(len(words))
    run = yield from wait()
    lay = plan.layout
    got = read_result(plan, (yield from read(lay.c_addr, m * lay.ldc)))
    want = golden_result(config, ops, requant)
    mismatches = int((got != want).sum())
    seen = yield from counters()
    predicted = program_cycles(config, plan.program).cycles
    macs = m * k * n
    return {
        "config": config.label, "m": m, "k": k, "n": n, "requant": requant, "seed": seed,
        "bit_exact": mismatches == 0, "mismatches": mismatches, "elements": want.numel(),
        "error": None,
        "cycles": run.cycles, "predicted_cycles": predicted,
        "model_error": (predicted - run.cycles) / run.cycles,
        "utilization": macs / (config.pes * run.cycles), "instructions": len(words),
        "clock_hz": board.clock_hz, "seconds_on_board": run.cycles / board.clock_hz,
        "counters": seen,
    }


# -- transports -------------------------------------------------------------------------------

class _Steps(Generic[T]):
    """An operation's requests one at a time: :attr:`request` is the next frame to send, and
    :meth:`answer` gives it its response; when :attr:`done`, :attr:`result` is what it
    returned. (The generator protocol, written once for both drivers below.)"""

    def __init__(self, op: Op[T]):
        self.op = op
        self.done = False
        self.result: T | None = None
        self.request = self._step(lambda: next(op))

    def _step(self, advance: Callable[[], bytes]) -> bytes:
        try:
            return advance()
        except StopIteration as stop:
            self.done, self.result = True, stop.value
            return b""

    def answer(self, response: bytes) -> None:
        self.request = self._step(lambda: self.op.send(response))


def drive(op: Op[T], exchange: Callable[[bytes], bytes]) -> T:
    """Run an operation with ``exchange(request frame) -> response frame``."""
    steps = _Steps(op)
    while not steps.done:
        steps.answer(exchange(steps.request))
    return steps.result


async def drive_async(op: Op[T], exchange: Callable[[bytes], Awaitable[bytes]]) -> T:
    """:func:`drive` with an ``exchange`` to await (a simulated board, under cocotb)."""
    steps = _Steps(op)
    while not steps.done:
        steps.answer(await exchange(steps.request))
    return steps.result


class SerialLink:
    """A board on a serial port (``pyserial``). ``port`` is a device (``/dev/ttyUSB0``,
    ``COM3``) or any pyserial URL, such as ``socket://host:port`` for a board behind ser2net."""

    def __init__(self, port: str, baud: int = 115_200, *, timeout: float = 2.0):
        try:
            import serial
        except ImportError:
            raise ConfigError("talking to a board needs pyserial (pip install pyserial)") \
                from None
        try:
            self.serial = serial.serial_for_url(port, baud, timeout=timeout)
        except (serial.SerialException, ValueError) as e:
            raise ConfigError(f"cannot open {port}: {e}") from None
        self.port = port
        self.timeout = timeout

    def exchange(self, request: bytes) -> bytes:
        self.serial.reset_input_buffer()
        self.serial.write(request)
        header = self.serial.read(p.HEADER_BYTES)
        if len(header) < p.HEADER_BYTES:
            raise p.FrameError(f"no answer from the board on {self.port} within "
                               f"{self.timeout:g} s (is the bitstream loaded, the baud rate "
                               f"the one it was built with?)")
        rest = self.serial.read(p.response_length(header))
        return header + rest

    def run(self, op: Op[T]) -> T:
        return drive(op, self.exchange)

    def close(self) -> None:
        self.serial.close()

    def __enter__(self) -> SerialLink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
