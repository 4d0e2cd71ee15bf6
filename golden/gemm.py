"""Exact integer GEMM: the numbers the int8 systolic array must produce.

Every tensor here is an integer tensor and every result is ``torch.int64``. Widths are in bits and
always mean *signed two's-complement* widths: ``bits`` covers ``[-2**(bits-1), 2**(bits-1) - 1]``.
"""

from __future__ import annotations

import torch

__all__ = ["check_bounds", "check_range", "gemm_int", "saturate", "signed_range", "wrap"]

# Integer dtypes whose every value converts to int64 exactly (so uint64 is left out).
_INT_DTYPES = frozenset(
    {torch.int8, torch.uint8, torch.int16, torch.uint16, torch.int32, torch.uint32, torch.int64}
)


def _check_bits(bits: int, name: str = "bits") -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 64:
        raise ValueError(f"{name} must be an integer in [1, 64], not {bits!r}")


def signed_range(bits: int) -> tuple[int, int]:
    """``(lo, hi)`` of a signed two's-complement number of ``bits`` bits, ``1 <= bits <= 64``."""
    _check_bits(bits)
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _as_int64(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, not {type(x).__name__}")
    if x.dtype not in _INT_DTYPES:
        raise ValueError(f"{name} must have an integer dtype, not {x.dtype}")
    return x.to(torch.int64)


def check_bounds(x: torch.Tensor, lo: int, hi: int, name: str) -> torch.Tensor:
    """Check that every element of integer tensor ``x`` lies in ``[lo, hi]``.

    Returns ``x`` as ``torch.int64``. Raises ``ValueError`` naming ``name``, the first offending
    value and its index if an element is out of range, or if ``x`` is not an integer tensor
    (floating, complex and bool dtypes are refused: a golden model never guesses a rounding).
    """
    x64 = _as_int64(x, name)
    bad = (x64 < lo) | (x64 > hi)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        value = int(x64[index]) if index else int(x64)
        raise ValueError(f"{name} holds {value} at index {index}, outside [{lo}, {hi}]")
    return x64


def check_range(x: torch.Tensor, bits: int, name: str) -> torch.Tensor:
    """Check that integer tensor ``x`` fits signed ``bits`` bits; return it as ``torch.int64``.

    Raises ``ValueError`` naming ``name`` and the offending value (see ``check_bounds``).
    """
    lo, hi = signed_range(bits)
    try:
        return check_bounds(x, lo, hi, name)
    except ValueError as err:
        raise ValueError(f"{err} (the signed {bits}-bit range)") from None


def wrap(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's-complement wrap of integer ``x`` to signed ``bits`` bits (``1 <= bits <= 64``).

    This is what a ``bits``-wide register keeps: the result is congruent to ``x`` modulo
    ``2**bits`` and lies in ``signed_range(bits)``. Input of any integer dtype; output int64.
    (Input is first converted to int64, so values are taken modulo ``2**64`` already.)
    """
    _check_bits(bits)
    x64 = _as_int64(x, "x")
    if bits == 64:
        return x64.clone()
    low = x64 & ((1 << bits) - 1)
    sign = (low >> (bits - 1)) & 1
    return low - (sign << bits)


def saturate(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Clamp integer ``x`` to the signed range of ``bits`` bits; int64 out."""
    lo, hi = signed_range(bits)
    return _as_int64(x, "x").clamp(lo, hi)


def gemm_int(
    a: torch.Tensor, b: torch.Tensor, *, in_bits: int = 8, acc_bits: int = 32
) -> torch.Tensor:
    """Integer matrix product as a wrapping ``acc_bits`` accumulator computes it.

    ``a`` is (M, K) and ``b`` is (K, N), integer dtypes, every element a signed ``in_bits`` value
    (``1 <= in_bits <= 16``). Returns the (M, N) ``torch.int64`` tensor
    ``wrap(a @ b, acc_bits)``, ``1 <= acc_bits <= 64``. K = 0 gives zeros.

    The exact product is formed with int64 integer matmul (no float anywhere) and cannot overflow:
    each product is at most ``2**(2*in_bits - 2)`` in magnitude and K is limited so that
    ``K * 2**(2*in_bits - 2) < 2**63``. Because wrapping commutes with addition, wrapping the exact
    sum once equals wrapping after each MAC, in any order of summation — which is what a
    hardware accumulator of ``acc_bits`` bits that overflows silently computes.

    Raises ``ValueError`` for non-2D operands, mismatched inner dimensions, non-integer dtypes,
    any element outside the signed ``in_bits`` range, or a K too large for exact int64 sums.
    """
    if isinstance(in_bits, bool) or not isinstance(in_bits, int) or not 1 <= in_bits <= 16:
        raise ValueError(f"in_bits must be an integer in [1, 16], not {in_bits!r}")
    _check_bits(acc_bits, "acc_bits")
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 2-D tensor, not {shape}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"inner dimensions differ: a is {tuple(a.shape)} (K={a.shape[1]}), "
            f"b is {tuple(b.shape)} (K={b.shape[0]})"
        )
    k_max = ((1 << 63) - 1) >> (2 * in_bits - 2)
    if a.shape[1] > k_max:
        raise ValueError(f"K={a.shape[1]} is too large for exact int64 sums (at most {k_max})")
    a64 = check_range(a, in_bits, "a")
    b64 = check_range(b, in_bits, "b")
    if a64.shape[1] == 0:
        return torch.zeros(a64.shape[0], b64.shape[1], dtype=torch.int64)
    return wrap(a64 @ b64, acc_bits)
