"""The host link's wire protocol: framing, checksum, commands and status codes.

Both ends import this module: the board top's :class:`~fpga.link.HostLink` (RTL) takes its
constants from here, and the host driver (:mod:`fpga.host`) encodes and decodes frames with it.

Every exchange is one request frame from the host and one response frame from the board,
bytes on a UART (8 data bits, no parity, 1 stop bit), multi-byte fields little-endian::

    request   A5  cmd     len_lo len_hi  payload[len]  crc
    response  5A  status  len_lo len_hi  payload[len]  crc

``crc`` is CRC-8 (polynomial 0x07, initial value 0, no reflection) over every byte after the
sync byte. The board keeps a request whole in a frame buffer and checks it (checksum, length,
command, ranges, engine busy) before acting on it, so a bad frame is answered with an error
status and changes nothing. A request cut short is dropped after :data:`TIMEOUT_BYTES` byte
times of silence and answered with ``TIMEOUT``.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

__all__ = ["Cmd", "FrameError", "Response", "Status", "crc8", "decode_response",
           "encode_request", "config_tag", "MAX_PAYLOAD", "REQUEST_SYNC", "RESPONSE_SYNC",
           "HEADER_BYTES", "TIMEOUT_BYTES", "INFO_FORMAT", "STATUS_FORMAT", "VERSION"]

REQUEST_SYNC = 0xA5
RESPONSE_SYNC = 0x5A
#: sync, command or status, two length bytes
HEADER_BYTES = 4
#: the longest payload a request or a response may carry (the board's frame buffer)
MAX_PAYLOAD = 1024
#: byte times of silence after which the board drops a request it has started to receive
TIMEOUT_BYTES = 256
#: protocol version, reported by INFO
VERSION = 1


class Cmd(enum.IntEnum):
    """Request commands. Payloads (request -> response):

    - ``INFO``: none -> :data:`INFO_FORMAT` (what the board was built with)
    - ``WRITE``: address (u32), data bytes -> none
    - ``READ``: address (u32), count (u16) -> ``count`` bytes
    - ``PROGRAM``: first index (u16), instruction words (``insn_bytes`` each) -> none
    - ``START``: instruction count (u16) -> none; resets the engine (counters, error) and runs
      instructions ``0 .. count-1`` of the program memory
    - ``STATUS``: none -> :data:`STATUS_FORMAT`
    - ``COUNTERS``: none -> the engine's activity counters, u32 each, in
      :data:`rtl.counters.counter_layout` order
    - ``RESET``: none -> none; stops a run (a program that never finishes, say) and resets the
      engine; memory and program memory keep their contents
    """

    INFO = 0x01
    WRITE = 0x02
    READ = 0x03
    PROGRAM = 0x04
    START = 0x05
    STATUS = 0x06
    COUNTERS = 0x07
    RESET = 0x08


class Status(enum.IntEnum):
    """Response status. Anything but ``OK`` means the request changed nothing."""

    OK = 0
    BAD_CRC = 1        # the checksum did not match
    BAD_LENGTH = 2     # payload too long, or the wrong size for the command
    BAD_COMMAND = 3    # unknown command
    BUSY = 4           # the engine is running: memory, program and START must wait
    RANGE = 5          # an address or index beyond the memory or program memory
    TIMEOUT = 6        # the request stopped arriving part way


#: INFO payload: magic "TSRA", version, rows, cols, dataflow (0 os, 1 ws), memory bytes per
#: cycle, instruction bytes, memory bytes (u32), program words (u16), max payload (u16),
#: clock Hz (u32), configuration tag (u32, :func:`config_tag`)
INFO_FORMAT = struct.Struct("<4sBBBBBBIHHII")
#: STATUS payload: flags (bit 0 running, bit 1 done, bit 2 error), error code, program counter
#: (u16), cycles of the current or last run, from START until the last instruction is done
#: or the engine stops on an error (u32)
STATUS_FORMAT = struct.Struct("<BBHI")
STATUS_RUNNING, STATUS_DONE, STATUS_ERROR = 1, 2, 4


class FrameError(Exception):
    """A response that is not a well-formed frame, or an error status; the message says which."""

    def __init__(self, message: str, status: Status | None = None):
        super().__init__(message)
        self.status = status


def crc8(data: bytes, crc: int = 0) -> int:
    """CRC-8, polynomial x^8 + x^2 + x + 1 (0x07), MSB first, initial value ``crc``."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def config_tag(config) -> int:
    """A 32-bit tag of an :class:`~rtl.config.EngineConfig`'s key: the host checks that the
    board was built with the configuration it plans for."""
    return zlib.crc32(config.key.encode())


def encode_request(cmd: Cmd | int, payload: bytes = b"") -> bytes:
    """One request frame."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a payload holds at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    body = bytes([int(cmd)]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([REQUEST_SYNC]) + body + bytes([crc8(body)])


def encode_response(status: Status | int, payload: bytes = b"") -> bytes:
    """One response frame (what the board sends; the tests use it to state expectations)."""
    body = bytes([int(status)]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([RESPONSE_SYNC]) + body + bytes([crc8(body)])


@dataclass(frozen=True)
class Response:
    status: Status
    payload: bytes


def response_length(header: bytes) -> int:
    """Bytes that follow a response's 4-byte header (payload and checksum)."""
    if len(header) != HEADER_BYTES or header[0] != RESPONSE_SYNC:
        raise FrameError(f"expected a response header starting {RESPONSE_SYNC:#04x}, got "
                         f"{header.hex(' ') or 'nothing'}")
    return struct.unpack("<H", header[2:4])[0] + 1


def decode_response(frame: bytes) -> Response:
    """Check a whole response frame; raise :class:`FrameError` on a malformed one."""
    length = response_length(frame[:HEADER_BYTES])
    if len(frame) != HEADER_BYTES + length:
        raise FrameError(f"response frame is {len(frame)} bytes, its header says "
                         f"{HEADER_BYTES + length}")
    if crc8(frame[1:-1]) != frame[-1]:
        raise FrameError(f"response checksum {frame[-1]:#04x} does not match its bytes "
                         f"({crc8(frame[1:-1]):#04x})")
    try:
        status = Status(frame[1])
    except ValueError:
        raise FrameError(f"unknown response status {frame[1]}") from None
    return Response(status, bytes(frame[HEADER_BYTES:-1]))
