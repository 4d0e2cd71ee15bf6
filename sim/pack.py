"""Pack operand vectors into memory words and unpack result words, per the RTL's layouts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def pack(values: Iterable[int], bits: int, *, flag: bool | None = None) -> int:
    """Little-end-first concatenation of two's-complement ``bits``-wide fields, then the flag."""
    word = 0
    mask = (1 << bits) - 1
    n = 0
    for n, v in enumerate(values, start=1):
        word |= (int(v) & mask) << ((n - 1) * bits)
    if flag is not None:
        word |= int(bool(flag)) << (n * bits)
    return word


def unpack(word: int, bits: int, count: int) -> tuple[list[int], int]:
    """The ``count`` signed fields of ``word`` and the bit above them (the flag)."""
    mask = (1 << bits) - 1
    sign = 1 << (bits - 1)
    values = []
    for i in range(count):
        v = (word >> (i * bits)) & mask
        values.append(v - (1 << bits) if v & sign else v)
    return values, (word >> (count * bits)) & 1


def to_lists(rows: Sequence[Sequence[int]]) -> list[list[int]]:
    return [[int(x) for x in row] for row in rows]
