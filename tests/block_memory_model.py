"""The cycle model of a :class:`rtl.memory.BlockMemory` read port with its output register,
shared by the amaranth.sim tests of the fabric path and the Verilator test of the ECP5 path."""

from __future__ import annotations


def registered_reads(steps, depth: int, *, width: int, granularity: int | None = None) \
        -> list[int]:
    """What the port's ``data`` shows after each cycle's clock edge, for ``steps`` of
    (read address, read enable, write address, write enable(s), write data), addresses taken
    modulo ``depth``: the row read two enabled cycles earlier. A disabled port reads its held
    row again; a read sees the row as it was before that cycle's write. With a
    ``granularity``, bit i of the write enable writes columns i*g .. i*g+g-1; without, bit 0
    writes the row."""
    g = granularity or width
    rows = [0] * depth
    held = latched = data = 0
    out = []
    for addr, en, w_addr, w_en, w_data in steps:
        addr, w_addr = addr % depth, w_addr % depth
        read = rows[addr if en else held]
        if en:
            held = addr
            data = latched
        latched = read
        mask = sum(((1 << g) - 1) << g * i for i in range(width // g) if w_en >> i & 1)
        rows[w_addr] = rows[w_addr] & ~mask | w_data & mask
        out.append(data)
    return out
