"""The FPGA board top's host link: the protocol in Python, then the RTL through its UART pins.

The simulated session drives the board top's ``rx`` pin and samples ``tx`` with the host
driver's own encoder and decoder (:mod:`fpga.host`); GEMMs go through the same operation
``tessera fpga run`` uses on a real board, and are checked element by element against the
golden model, and their cycle counts against the mapper's prediction.
"""

from __future__ import annotations

import struct

import pytest

from fpga import host
from fpga import protocol as p
from fpga.link import INSN_BYTES
from rtl import isa
from rtl.config import EngineConfig, preset

# -- the protocol, in Python ------------------------------------------------------------------


def test_crc8_is_the_standard_one():
    # CRC-8 (poly 0x07, init 0): the catalogue's check value over "123456789"
    assert p.crc8(b"123456789") == 0xF4
    assert p.crc8(b"") == 0


def test_frames_round_trip_and_damage_is_caught():
    frame = p.encode_response(p.Status.OK, b"\x01\x02\x03")
    assert p.decode_response(frame) == p.Response(p.Status.OK, b"\x01\x02\x03")
    request = p.encode_request(p.Cmd.READ, struct.pack("<IH", 16, 4))
    assert request[0] == p.REQUEST_SYNC and request[1] == p.Cmd.READ
    assert p.crc8(request[1:-1]) == request[-1]
    for i in range(1, len(frame)):   # every single-bit error in every byte after the sync
        for bit in range(8):
            bad = bytearray(frame)
            bad[i] ^= 1 << bit
            with pytest.raises(p.FrameError):
                p.decode_response(bytes(bad))
    with pytest.raises(p.FrameError, match="expected a response header"):
        p.decode_response(b"\x00\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="at most 1024 bytes"):
        p.encode_request(p.Cmd.WRITE, bytes(p.MAX_PAYLOAD + 1))


def test_host_operations_split_into_frames():
    """``write`` and ``read`` of more than a frame holds go out as several frames, in order."""
    sent = []

    def board(request):
        sent.append(request)
        cmd = p.Cmd(request[1])
        if cmd == p.Cmd.READ:
            _, n = struct.unpack("<IH", request[4:10])
            return p.encode_response(p.Status.OK, bytes(n))
        return p.encode_response(p.Status.OK)

    data = bytes(range(256)) * 9
    host.drive(host.write(100, data), board)
    addrs = [struct.unpack("<I", f[4:8])[0] for f in sent]
    assert addrs == [100, 100 + 1020, 100 + 2040]
    assert b"".join(f[8:-1] for f in sent) == data
    sent.clear()
    assert host.drive(host.read(0, 2500), board) == bytes(2500)
    assert [struct.unpack("<IH", f[4:10]) for f in sent] == [(0, 1024), (1024, 1024),
                                                             (2048, 452)]


def test_a_refusal_is_an_error_that_names_it():
    def busy(request):
        return p.encode_response(p.Status.BUSY)

    with pytest.raises(p.FrameError, match="refused WRITE: BUSY"):
        host.drive(host.write(0, b"x"), busy)


def test_the_host_refuses_a_board_built_for_another_configuration():
    other = host.BoardInfo(1, 8, 8, "os", 4, INSN_BYTES, 8192, 512, 1024, 25_000_000,
                           p.config_tag(preset("edge")))
    with pytest.raises(Exception, match="built for a 8x8 os engine"):
        other.check(preset("tiny"))


# -- the RTL, through its UART pins -----------------------------------------------------------

def _raw(cmd: int, payload: bytes = b"", *, crc_delta: int = 0) -> dict:
    """A request frame as it goes on the wire, of any length, its checksum changed by XOR."""
    body = bytes([cmd]) + struct.pack("<H", len(payload)) + payload
    return {"raw": (bytes([p.REQUEST_SYNC]) + body + bytes([p.crc8(body) ^ crc_delta])).hex()}


def _status_of(result: dict) -> str | None:
    frame = result["response"]
    return None if frame is None else p.decode_response(bytes.fromhex(frame)).status.name


@pytest.mark.sim
@pytest.mark.xdist_group("board")
@pytest.mark.parametrize("ecp5_dsp", [False, True], ids=["fabric", "ecp5-dsp"])
def test_board_protocol_and_gemms_through_the_uart(ecp5_dsp):
    """Also as elaborated for ECP5: the multipliers become MULT18X18D instances with their
    output register (simulated with sim/models/MULT18X18D.v), reset by START and RESET."""
    from sim.board import run_session

    cfg = preset("tiny")
    mem_words, depth = 2048, 512
    mem_bytes = mem_words * cfg.mem_bytes_per_cycle
    hang = isa.encode(isa.compute(0, 0, 0, 1, False, "pop_prev"), cfg)  # waits for a load
    illegal = 7 << isa.insn_layout["op"].offset                          # no such opcode
    steps = [
        {"op": "info"},                                                   # 0
        {"op": "status"},
        {"op": "write", "args": [5, "0102030405"]},
        {"op": "read", "args": [3, 9]},
        # a bad checksum: refused, memory unchanged
        _raw(p.Cmd.WRITE, struct.pack("<I", 4) + b"\x09\x09", crc_delta=0x01),
        {"op": "read", "args": [3, 4]},                                   # 5
        _raw(0x7F),
        _raw(p.Cmd.READ, struct.pack("<IB", 0, 4)),
        # the write would run past the end of memory: refused whole, the bytes before kept
        _raw(p.Cmd.WRITE, struct.pack("<I", mem_bytes - 2) + b"\xAA\xBB\xCC"),
        {"op": "read", "args": [mem_bytes - 2, 2]},
        _raw(p.Cmd.PROGRAM, struct.pack("<H", 0) + bytes(INSN_BYTES + 3)),  # 10
        _raw(p.Cmd.PROGRAM, struct.pack("<H", depth - 1) + bytes(2 * INSN_BYTES)),
        _raw(p.Cmd.START, struct.pack("<H", 0)),
        _raw(p.Cmd.START, struct.pack("<H", depth + 1)),
        _raw(p.Cmd.STATUS, b"\x00"),
        # noise before a frame is skipped; a frame cut short times out and changes nothing
        {"raw": "00ff13" + p.encode_request(p.Cmd.STATUS).hex()},       # 15
        {"raw": p.encode_request(p.Cmd.WRITE, struct.pack("<I", 5) + b"\xEE" * 6).hex()[:20]},
        {"op": "read", "args": [5, 5]},
        # longer than the frame buffer: read to its end, refused
        _raw(p.Cmd.WRITE, struct.pack("<I", 0) + bytes(p.MAX_PAYLOAD)),
        # GEMMs, checked against the golden model by the host operation
        {"op": "gemm", "m": 8, "k": 8, "n": 8, "requant": True, "seed": 1},
        {"op": "gemm", "m": 5, "k": 7, "n": 6, "requant": False, "seed": 2},  # 20
        {"op": "counters"},
        {"op": "gemm", "m": 13, "k": 9, "n": 11, "requant": True, "seed": 3},
        # a program that never ends: the engine is busy until RESET
        {"op": "load_program", "args": [[hang], INSN_BYTES]},
        {"op": "start", "args": [1]},
        {"op": "status"},                                                 # 25
        {"op": "write", "args": [0, "01"]},
        _raw(p.Cmd.START, struct.pack("<H", 1)),
        {"op": "reset"},
        {"op": "status"},
        # an illegal instruction stops the engine with its error code
        {"op": "load_program", "args": [[illegal], INSN_BYTES]},          # 30
        {"op": "start", "args": [1]},
        {"op": "wait"},
        {"op": "status"},
        # and the next run starts clean
        {"op": "gemm", "m": 4, "k": 20, "n": 4, "requant": False, "seed": 4},
    ]
    r = run_session(cfg, steps, divisor=8, mem_words=mem_words, imem_depth=depth,
                    ecp5_dsp=ecp5_dsp)
    assert len(r) == len(steps)

    info = r[0]["result"]
    assert (info["rows"], info["cols"], info["dataflow"]) == (4, 4, "os")
    assert info["tag"] == p.config_tag(cfg)
    assert info["mem_bytes"] == mem_bytes and info["program_words"] == depth
    assert info["insn_bytes"] == INSN_BYTES and info["max_payload"] == p.MAX_PAYLOAD
    assert r[1]["result"]["running"] is False and r[1]["result"]["done"] is False
    assert r[3]["result"] == "000001020304050000"

    assert _status_of(r[4]) == "BAD_CRC"
    assert r[5]["result"] == "00000102"
    assert _status_of(r[6]) == "BAD_COMMAND"
    assert _status_of(r[7]) == "BAD_LENGTH"
    assert _status_of(r[8]) == "RANGE"
    assert r[9]["result"] == "0000"
    assert _status_of(r[10]) == "BAD_LENGTH"
    assert _status_of(r[11]) == "RANGE"
    assert _status_of(r[12]) == "RANGE"
    assert _status_of(r[13]) == "RANGE"
    assert _status_of(r[14]) == "BAD_LENGTH"
    assert _status_of(r[15]) == "OK"
    assert _status_of(r[16]) == "TIMEOUT"
    assert r[17]["result"] == "0102030405"
    assert _status_of(r[18]) == "BAD_LENGTH"

    for i in (19, 20, 22, 34):
        run = r[i]["result"]
        assert run["bit_exact"], (steps[i], run)
        assert run["cycles"] == run["predicted_cycles"], (steps[i], run)
    assert r[21]["result"] == r[20]["result"]["counters"]
    assert r[21]["result"]["insns"] == r[20]["result"]["instructions"]
    assert r[21]["result"]["compute"] > 0 and r[21]["result"]["mem_writes"] > 0

    assert r[25]["result"]["running"] is True and r[25]["result"]["pc"] == 1
    assert "refused WRITE: BUSY" in r[26]["error"]
    assert _status_of(r[27]) == "BUSY"
    assert r[29]["result"]["running"] is False
    assert "stopped at instruction 0: OPCODE" in r[32]["error"]
    assert r[33]["result"]["error"] is True and r[33]["result"]["error_code"] == "OPCODE"


def test_config_tags_differ_between_configurations():
    a = EngineConfig(rows=4, cols=4)
    assert p.config_tag(a) == p.config_tag(EngineConfig(rows=4, cols=4))
    assert p.config_tag(a) != p.config_tag(a.replace(mem_bytes_per_cycle=8))


def test_baud_rates_the_clock_cannot_make_are_refused():
    from fpga.uart import divisor_for

    assert divisor_for(25_000_000, 115_200) == 217
    assert divisor_for(48_000_000, 1_000_000) == 48
    with pytest.raises(Exception, match="too fast for a 25 MHz clock"):
        divisor_for(25_000_000, 10_000_000)
    with pytest.raises(Exception, match="not 3000000 \\(more than 2% off\\)"):
        divisor_for(25_000_000, 3_000_000)


def test_fpga_run_reports_a_port_that_is_not_a_board(capsys):
    from tessera.cli import main

    # pyserial's loop:// echoes the request back: not a response frame, said plainly
    assert main(["fpga", "run", "--board", "ulx3s-85f", "--port", "loop://", "--preset",
                 "tiny", "gemm", "8", "8", "8"]) == 2
    assert "expected a response header" in capsys.readouterr().err
    assert main(["fpga", "run", "--board", "ulx3s-85f", "--port", "/dev/nonexistent-tty",
                 "--preset", "tiny", "gemm", "8", "8", "8"]) == 2
    assert "cannot open /dev/nonexistent-tty" in capsys.readouterr().err
    assert main(["fpga", "run", "--board", "ulx3s-85f", "--port", "loop://", "--preset",
                 "tiny", "gemm", "8", "0", "8"]) == 2
    assert "dimensions must be positive" in capsys.readouterr().err
