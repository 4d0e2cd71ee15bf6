"""The board's end of the host link: UART frames in, memory / program / engine control out.

:class:`HostLink` speaks the protocol of :mod:`fpga.protocol`. A request is received whole
into a frame buffer (one block RAM) while its checksum is computed; only when the frame is
complete and every check has passed (checksum, length for the command, address ranges, the
engine not running) does it write memory or the program memory, or start the engine. The
response goes out on ``tx`` as the request is carried out: READ fetches each byte from
memory as it sends it; INFO, STATUS and COUNTERS send a snapshot taken when the request was
accepted.

The link drives the memory port byte by byte (one-byte requests), which the UART's speed makes
free; the board top gives it the port while the engine is not running.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.config import EngineConfig
from rtl.counters import counter_layout
from rtl.isa import INSN_BITS
from rtl.memory import mem_signature

from . import protocol as p
from .uart import UARTRx, UARTTx

__all__ = ["HostLink", "INSN_BYTES"]

#: bytes of one instruction word on the wire
INSN_BYTES = -(-INSN_BITS // 8)


def crc8_step(crc: Value, byte: Value) -> Value:
    """:func:`fpga.protocol.crc8` of one byte, as logic: CRC-8 is linear, so each output bit is
    the XOR of the input bits (of ``crc ^ byte``) whose unit vector sets it."""
    x = Value.cast(crc ^ byte)
    taps = [[i for i in range(8) if p.crc8(bytes([1 << i])) >> bit & 1] for bit in range(8)]
    return Cat(*(_xor(x[i] for i in t) for t in taps))


def _xor(bits) -> Value:
    out = Const(0, 1)
    for b in bits:
        out = out ^ b
    return out


class HostLink(wiring.Component):
    """The protocol engine. ``mem_bytes``: size of the memory behind ``mem``; ``imem_depth``:
    words of the program memory behind ``prog_*``; ``divisor``: clock cycles per UART bit;
    ``info``: the INFO payload's fields after the magic and version (see
    :data:`fpga.protocol.INFO_FORMAT`)."""

    def __init__(self, config: EngineConfig, *, mem_bytes: int, imem_depth: int, divisor: int,
                 clock_hz: int, tag: int):
        self.config = config
        self.mem_bytes = mem_bytes
        self.imem_depth = imem_depth
        self.divisor = divisor
        self.info = p.INFO_FORMAT.pack(
            b"TSRA", p.VERSION, config.rows, config.cols, int(config.dataflow == "ws"),
            config.mem_bytes_per_cycle, INSN_BYTES, mem_bytes, imem_depth, p.MAX_PAYLOAD,
            clock_hz, tag)
        super().__init__({
            "rx": In(1, init=1), "tx": Out(1, init=1),
            "mem": Out(mem_signature(config)),
            "prog_addr": Out(range(imem_depth)), "prog_data": Out(INSN_BITS), "prog_en": Out(1),
            "start": Out(1), "count": Out(16), "abort": Out(1),
            "running": In(1), "done": In(1), "error": In(1), "error_code": In(4),
            "pc": In(16), "cycles": In(32), "counters": In(counter_layout),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UARTRx(self.divisor)
        m.submodules.tx = tx = UARTTx(self.divisor)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        m.submodules.frame = frame = Memory(shape=8, depth=p.MAX_PAYLOAD, init=[])
        buf_w = frame.write_port()
        buf_r = frame.read_port()

        byte = rx.data.payload
        got = rx.data.valid
        cmd = Signal(8)
        length = Signal(16)
        crc = Signal(8)
        sent_crc = Signal(8)
        idx = Signal(16)              # payload bytes received / position while executing
        args = Signal(48)             # the payload's first six bytes
        word_pos = Signal(range(INSN_BYTES))   # PROGRAM: byte within an instruction word
        words = Signal(16)                     # PROGRAM: whole words received
        status = Signal(8)
        rsp_len = Signal(16)
        left = Signal(16)             # response payload bytes still to send
        snap_bytes = max(p.INFO_FORMAT.size, p.STATUS_FORMAT.size, counter_layout.size // 8)
        snap = Signal(8 * snap_bytes)
        addr = Signal(33)
        out_byte = Signal(8)
        word = Signal(8 * INSN_BYTES)
        pidx = Signal(16)

        timeout = p.TIMEOUT_BYTES * 10 * self.divisor
        quiet = Signal(range(timeout + 1))
        stale = Signal()              # the line has been quiet for `timeout` cycles
        with m.If(got):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != timeout):
            m.d.sync += quiet.eq(quiet + 1)
        m.d.sync += stale.eq((quiet == timeout) & ~got)
        # Decisions the state machine takes are single registered bits, each computed a cycle
        # ahead, so no compare of a counter or a command code sits before its next state.
        last_in = Signal()            # PAYLOAD: the byte expected next is the payload's last
        last_step = Signal()          # W_STORE / P_WRITE: this is the payload's last step
        rsp_none = Signal()           # T_LEN1: the response has no payload
        last_out = Signal()           # T_BYTE: the byte being sent is the payload's last
        kind = {c: Signal(name=f"kind_{c.name.lower()}") for c in p.Cmd}
        is_read = kind[p.Cmd.READ]

        arg_addr = args[:32]
        arg_u16 = args[:16]            # START count, PROGRAM first index
        read_count = args[32:48]
        m.d.comb += [buf_w.addr.eq(idx), buf_w.data.eq(byte), buf_r.addr.eq(idx)]
        frame_byte = Signal(8)        # the frame buffer's output, registered as it leaves
        m.d.sync += frame_byte.eq(buf_r.data)

        is_cmd = {c: cmd == c.value for c in p.Cmd}
        needs_idle = is_cmd[p.Cmd.WRITE] | is_cmd[p.Cmd.READ] | is_cmd[p.Cmd.PROGRAM] \
            | is_cmd[p.Cmd.START]
        known = Cat(*is_cmd.values()).any()
        # (a payload over MAX_PAYLOAD is its own, earlier check: too_long)
        short = Mux(
            is_cmd[p.Cmd.WRITE], length < 5, Mux(
                is_cmd[p.Cmd.READ], (length != 6) | (read_count == 0)
                | (read_count > p.MAX_PAYLOAD), Mux(
                    is_cmd[p.Cmd.PROGRAM], (length < 2 + INSN_BYTES) | (word_pos != 0), Mux(
                        is_cmd[p.Cmd.START], length != 2, length != 0))))
        # the ends of the ranges, registered: the arguments settle bytes before the checks
        ends = {name: Signal(value.shape(), name=f"end_{name}") for name, value in (
            ("write", arg_addr + (length - 4)), ("read", arg_addr + read_count),
            ("program", arg_u16 + words))}
        m.d.sync += [ends["write"].eq(arg_addr + (length - 4)),
                     ends["read"].eq(arg_addr + read_count),
                     ends["program"].eq(arg_u16 + words)]
        out_of_range = Mux(
            is_cmd[p.Cmd.WRITE], ends["write"] > self.mem_bytes, Mux(
                is_cmd[p.Cmd.READ], ends["read"] > self.mem_bytes, Mux(
                    is_cmd[p.Cmd.PROGRAM], ends["program"] > self.imem_depth,
                    is_cmd[p.Cmd.START] & ((arg_u16 == 0) | (arg_u16 > self.imem_depth)))))
        # The checks run in two steps (their parts are registered in PRECHECK, combined in
        # CHECK) so the deep compare logic of one never meets the decisions of the other. The
        # first check that fails, in this order, gives the answer.
        order = (("bad_crc", p.Status.BAD_CRC), ("too_long", p.Status.BAD_LENGTH),
                 ("unknown", p.Status.BAD_COMMAND), ("short", p.Status.BAD_LENGTH),
                 ("busy", p.Status.BUSY), ("range", p.Status.RANGE))
        checks = {name: Signal(name=f"check_{name}") for name, _ in order}
        verdict = Value.cast(p.Status.OK)
        for name, answer in reversed(order):
            verdict = Mux(checks[name], answer, verdict)
        failed = Cat(*checks.values()).any()
        # START and RESET leave as registered pulses: they reset the whole engine
        start, abort = Signal(), Signal()
        m.d.sync += [start.eq(0), abort.eq(0)]
        m.d.comb += [self.start.eq(start), self.abort.eq(abort)]

        flags = Cat(self.running, self.done, self.error)
        status_payload = Cat(flags, Const(0, 5), self.error_code, Const(0, 4), self.pc,
                             self.cycles)
        info_payload = Const(int.from_bytes(self.info, "little"), 8 * len(self.info))

        def send(value, then, *, checked=True):
            """Send one header byte, fold it into the checksum, go on to ``then``."""
            m.d.comb += [tx.data.valid.eq(1), tx.data.payload.eq(value)]
            with m.If(tx.data.ready):
                if checked:
                    m.d.sync += crc.eq(crc8_step(crc, value))
                m.next = then

        req = self.mem.req
        writing = Signal()
        # one-byte requests: the byte goes in lane 0 (a write's data comes from the frame)
        request = Signal(req.payload.shape())
        m.d.comb += [request.write.eq(writing), request.addr.eq(addr), request.length.eq(1),
                     request.data.as_value().eq(frame_byte)]
        m.d.comb += [req.payload.eq(request), self.mem.rdata.ready.eq(1),
                     self.prog_addr.eq(pidx), self.prog_data.eq(word[:INSN_BITS])]

        with m.FSM():
            # -- receive a request -----------------------------------------------------------
            with m.State("IDLE"):
                with m.If(got & (byte == p.REQUEST_SYNC)):
                    m.d.sync += crc.eq(0)
                    m.next = "CMD"
            for state, then in (("CMD", "LEN0"), ("LEN0", "LEN1"), ("LEN1", None),
                                ("PAYLOAD", None), ("CRC", None)):
                with m.State(state):
                    with m.If(stale):
                        m.d.sync += [status.eq(p.Status.TIMEOUT), rsp_len.eq(0)]
                        m.next = "T_SYNC"
                    with m.Elif(got):
                        if state != "CRC":
                            m.d.sync += crc.eq(crc8_step(crc, byte))
                        if state == "CMD":
                            m.d.sync += cmd.eq(byte)
                        elif state == "LEN0":
                            m.d.sync += length[:8].eq(byte)
                        elif state == "LEN1":
                            m.d.sync += [length[8:].eq(byte), idx.eq(0), args.eq(0),
                                         word_pos.eq(0), words.eq(0),
                                         last_in.eq(Cat(length[:8], byte) == 1)]
                            with m.If(Cat(length[:8], byte) == 0):
                                m.next = "CRC"
                            with m.Else():
                                m.next = "PAYLOAD"
                        elif state == "PAYLOAD":
                            m.d.comb += buf_w.en.eq(idx < p.MAX_PAYLOAD)
                            m.d.sync += [idx.eq(idx + 1), last_in.eq(idx + 2 == length)]
                            for i in range(6):
                                with m.If(idx == i):
                                    m.d.sync += args[8 * i:8 * i + 8].eq(byte)
                            with m.If(idx >= 2):
                                with m.If(word_pos == INSN_BYTES - 1):
                                    m.d.sync += [word_pos.eq(0), words.eq(words + 1)]
                                with m.Else():
                                    m.d.sync += word_pos.eq(word_pos + 1)
                            with m.If(last_in):
                                m.next = "CRC"
                        else:
                            m.d.sync += sent_crc.eq(byte)
                            m.next = "PRECHECK"
                        if then is not None:
                            m.next = then

            # -- check it, then carry it out ----------------------------------------------------
            with m.State("PRECHECK"):
                m.d.sync += [checks["bad_crc"].eq(sent_crc != crc),
                             checks["too_long"].eq(length > p.MAX_PAYLOAD),
                             checks["unknown"].eq(~known), checks["short"].eq(short),
                             checks["busy"].eq(needs_idle & self.running),
                             checks["range"].eq(out_of_range)]
                m.d.sync += [kind[c].eq(is_cmd[c]) for c in p.Cmd]
                m.next = "CHECK"
            with m.State("CHECK"):
                # (the snapshot is taken whatever the command: only those that answer with
                # it send it)
                m.d.sync += [status.eq(verdict), rsp_len.eq(0), addr.eq(arg_addr),
                             pidx.eq(arg_u16),
                             snap.eq(Mux(kind[p.Cmd.INFO], info_payload,
                                         Mux(kind[p.Cmd.STATUS], status_payload,
                                             self.counters.as_value())))]
                with m.If(failed):
                    m.next = "T_SYNC"
                with m.Elif(kind[p.Cmd.WRITE]):
                    m.d.sync += idx.eq(4)
                    m.next = "W_FETCH"
                with m.Elif(kind[p.Cmd.PROGRAM]):
                    m.d.sync += [idx.eq(2), word_pos.eq(0)]
                    m.next = "P_FETCH"
                with m.Elif(kind[p.Cmd.START]):
                    m.d.sync += start.eq(1)
                    m.next = "T_SYNC"
                with m.Elif(kind[p.Cmd.RESET]):
                    m.d.sync += abort.eq(1)
                    m.next = "T_SYNC"
                with m.Elif(kind[p.Cmd.READ]):
                    m.d.sync += rsp_len.eq(read_count)
                    m.next = "T_SYNC"
                with m.Elif(kind[p.Cmd.INFO]):
                    m.d.sync += rsp_len.eq(len(self.info))
                    m.next = "T_SYNC"
                with m.Elif(kind[p.Cmd.STATUS]):
                    m.d.sync += rsp_len.eq(p.STATUS_FORMAT.size)
                    m.next = "T_SYNC"
                with m.Else():   # COUNTERS
                    m.d.sync += rsp_len.eq(counter_layout.size // 8)
                    m.next = "T_SYNC"
            m.d.comb += self.count.eq(arg_u16)

            with m.State("W_FETCH"):     # the frame buffer reads idx; its data is there next
                m.next = "W_LATCH"
            with m.State("W_LATCH"):     # and is registered (frame_byte) before it goes out
                m.d.sync += last_step.eq(idx + 1 == length)
                m.next = "W_STORE"
            with m.State("W_STORE"):
                m.d.comb += [req.valid.eq(1), writing.eq(1)]
                with m.If(req.ready):
                    m.d.sync += [addr.eq(addr + 1), idx.eq(idx + 1)]
                    with m.If(last_step):
                        m.next = "T_SYNC"
                    with m.Else():
                        m.next = "W_FETCH"

            with m.State("P_FETCH"):
                m.next = "P_SHIFT"
            with m.State("P_SHIFT"):
                m.d.sync += [word.eq(Cat(word[8:], buf_r.data)), idx.eq(idx + 1),
                             last_step.eq(idx + 1 == length)]
                with m.If(word_pos == INSN_BYTES - 1):
                    m.d.sync += word_pos.eq(0)
                    m.next = "P_WRITE"
                with m.Else():
                    m.d.sync += word_pos.eq(word_pos + 1)
                    m.next = "P_FETCH"
            with m.State("P_WRITE"):
                m.d.comb += self.prog_en.eq(1)
                m.d.sync += pidx.eq(pidx + 1)
                with m.If(last_step):
                    m.next = "T_SYNC"
                with m.Else():
                    m.next = "P_FETCH"

            # -- respond -----------------------------------------------------------------------
            with m.State("T_SYNC"):
                m.d.sync += [left.eq(rsp_len), crc.eq(0), rsp_none.eq(rsp_len == 0),
                             last_out.eq(rsp_len == 1)]
                send(p.RESPONSE_SYNC, "T_STATUS", checked=False)
            with m.State("T_STATUS"):
                send(status, "T_LEN0")
            with m.State("T_LEN0"):
                send(rsp_len[:8], "T_LEN1")
            with m.State("T_LEN1"):
                with m.If(rsp_none):
                    send(rsp_len[8:], "T_CRC")
                with m.Elif(is_read):
                    send(rsp_len[8:], "T_FETCH")
                with m.Else():
                    m.d.sync += out_byte.eq(snap[:8])
                    send(rsp_len[8:], "T_BYTE")
            with m.State("T_FETCH"):     # READ: ask memory for the next byte
                m.d.comb += req.valid.eq(1)
                with m.If(req.ready):
                    m.d.sync += addr.eq(addr + 1)
                    m.next = "T_WAIT"
            with m.State("T_WAIT"):
                with m.If(self.mem.rdata.valid):
                    m.d.sync += out_byte.eq(self.mem.rdata.payload.as_value()[:8])
                    m.next = "T_BYTE"
            with m.State("T_BYTE"):
                m.d.comb += [tx.data.valid.eq(1), tx.data.payload.eq(out_byte)]
                with m.If(tx.data.ready):
                    m.d.sync += [crc.eq(crc8_step(crc, out_byte)), left.eq(left - 1),
                                 snap.eq(snap >> 8), out_byte.eq(snap[8:16]),
                                 last_out.eq(left == 2)]
                    with m.If(last_out):
                        m.next = "T_CRC"
                    with m.Elif(is_read):
                        m.next = "T_FETCH"
            with m.State("T_CRC"):
                send(crc, "IDLE", checked=False)
        return m
