"""Integer softmax, GELU and layernorm: I-ViT's Shiftmax, ShiftGELU and I-LayerNorm, in int64.

The scheme is I-ViT's (Li and Gu, ICCV 2023; code: ``zkkli/I-ViT``,
``models/quantization_utils/quant_modules.py``), followed step for step so its accuracy results
carry over: exponentials by shifts and adds, one integer divide per row (softmax, layernorm) or per
element (GELU's sigmoid), a fixed-iteration integer square root. I-ViT writes these "integers" as
float32 tensors with ``floor``; here every step is an exact int64 operation, so the result is
what a hardware datapath of the stated widths computes.

Where I-ViT's float32 arithmetic rounds (values above 2**24), the results here differ from its code
and agree with its arithmetic's intent; each such place is named below. The reference's other
quirks *are* reproduced, because they change results:

* the square root runs **exactly ten** Newton steps from ``2**16`` (``ivit_sqrt``); they have not
  converged for small variances (a sum of squares of 10,000 gives 108, not 100) nor, the other way,
  for very large ones (above about ``2**42`` it is still falling);
* the layernorm's "variance" is the **sum** of squares (not the mean); ``sqrt(D)`` moves into the
  output scale, and the normalizer has no epsilon;
* the layernorm's mean is ``round`` (half to even) of the exact mean; I-ViT takes it of a float32
  mean, which differs once the row's sum passes ``2**24`` (named, not reproduced);
* the compile-time constants (``x0 = floor(-1 / s)``, ``1.702 s``, the layernorm's bias and
  ``sqrt(D) / 2**30``) are computed in float32, as I-ViT computes them;
* ``exp(x)`` is ``2**(x log2 e)`` with ``log2 e ~ 1 + 1/2 - 1/16`` and ``2**(-r)`` for the
  fraction ``~ 1 - r/2`` (``shift_exp``), clamped below at ``n x0`` (``n = 15`` for softmax,
  ``23`` for GELU);
* GELU is ``x sigmoid(1.702 x)`` with the sigmoid as ``e^(x-m) / (e^(x-m) + e^(-m))`` for the
  row maximum ``m``: a **row reduction** (over the hidden features), not an elementwise function.

Widths (``b`` input bits, ``n`` the shift exponent, ``D`` the row length, ``|x0| < 2**31 / 2**n``
enforced so no exponential reaches 2**31):

========================  ======================================================
softmax input             ``b`` bits (int8 in the engine)
``x - max``               ``b + 1`` bits, ``<= 0``
``shift_exp`` output      ``< 2**31`` (unsigned)
row sum                   clamped to ``2**31 - 1`` (I-ViT's ``clamp_max``)
``(2**31 - 1) // sum``    31 bits, one divide per row
``exp * factor``          ``<= 2**31``; ``>> (32 - out_bits)`` gives ``[0, 2**(out_bits-1) - 1]``
GELU sigmoid              the same per element, one divide per element; output ``x * sigmoid``
                          is ``b + out_bits`` bits
layernorm input           ``b`` bits (16 in I-ViT's residual stream)
``x - mean``              ``b + 1`` bits
sum of squares            ``2 b + 2 + ceil(log2 D)`` bits
``ivit_sqrt``             ten steps of ``(k + v // k) // 2``, ``k`` in 32 bits
``(2**31 - 1) // std``    31 bits, one divide per row
output ``(y f) >> 1``     ``|.| <= 2**30`` (``|y| <= std``), plus the channel's bias
========================  ======================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from golden.gemm import check_range

__all__ = [
    "GELU_N",
    "INT31_MAX",
    "LayerNormConstants",
    "SOFTMAX_N",
    "SQRT_ITERATIONS",
    "SQRT_START",
    "gelu_out_scale",
    "gelu_x0",
    "i_layernorm",
    "ivit_sqrt",
    "layernorm_constants",
    "round_half_even_div",
    "shift_exp",
    "shift_gelu",
    "shiftmax",
    "shiftmax_x0",
    "softmax_out_scale",
    "softmax_x0",
]

INT31_MAX = (1 << 31) - 1
#: I-ViT's ``n`` ("sufficiently large integer") for Shiftmax and ShiftGELU
SOFTMAX_N = 15
GELU_N = 23
#: I-LayerNorm's square root: ten Newton steps from 2**16
SQRT_ITERATIONS = 10
SQRT_START = 1 << 16
#: ShiftGELU's sigmoid approximation ``sigmoid(1.702 x)``
GELU_SIGMOID_FACTOR = 1.702


def _check_scale(scale: float, name: str = "scale") -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{name} must be a finite number > 0, not {scale!r}")
    return float(scale)


def _check_n_x0(x0: int, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 30:
        raise ValueError(f"n must be an integer in [1, 30], not {n!r}")
    if isinstance(x0, bool) or not isinstance(x0, int) or x0 >= 0:
        raise ValueError(f"x0 must be a negative integer, not {x0!r}")
    if -x0 << n >= 1 << 31:
        raise ValueError(
            f"x0 = {x0} with n = {n}: the exponential would reach 2**31 (|x0| * 2**n); the "
            f"input scale is too small for this n (|x0| must stay below 2**{31 - n})")


def _check_out_bits(out_bits: int) -> None:
    if isinstance(out_bits, bool) or not isinstance(out_bits, int) or not 2 <= out_bits <= 16:
        raise ValueError(f"out_bits must be an integer in [2, 16], not {out_bits!r}")


def softmax_x0(scale: float) -> int:
    """Shiftmax's ``x0 = floor(-1 / scale)`` (``-1`` in the input's integer units), in float32 as
    I-ViT computes it."""
    s = torch.tensor(_check_scale(scale), dtype=torch.float32)
    return int(torch.floor(-1.0 / s))


def gelu_x0(scale: float) -> int:
    """ShiftGELU's ``x0 = floor(-1 / (1.702 scale))``, in float32 as I-ViT computes it."""
    s = torch.tensor(_check_scale(scale), dtype=torch.float32) * GELU_SIGMOID_FACTOR
    return int(torch.floor(-1.0 / s))


def softmax_out_scale(out_bits: int = 8) -> float:
    """The scale of ``shiftmax``'s output: ``2**-(out_bits - 1)``."""
    _check_out_bits(out_bits)
    return 2.0 ** -(out_bits - 1)


def gelu_out_scale(scale: float, out_bits: int = 8) -> float:
    """The scale of ``shift_gelu``'s output for an input of ``scale``."""
    _check_out_bits(out_bits)
    return _check_scale(scale) * 2.0 ** -(out_bits - 1)


def shift_exp(x: torch.Tensor, x0: int, n: int) -> torch.Tensor:
    """I-ViT's ``int_exp_shift``: ``~ 2**n exp(x s)`` for integers ``x`` at scale ``s`` with
    ``x0 = floor(-1/s)``; int64 out.

    ``x' = x + (x >> 1) - (x >> 4)`` (``x log2 e``), clamped below at ``n x0``; ``q = x' // x0``,
    ``r = x' - q x0`` (in ``(x0, 0]``); the result is ``floor((r/2 - x0) 2**(n - q))``, i.e.
    ``(r - 2 x0)`` shifted left by ``n - q - 1`` (right by one when ``q = n``). For ``x <= 0`` it
    is below ``2**31`` (see ``_check_n_x0``). Positive ``x`` (ShiftGELU's ``e^(-max)`` of a
    negative row maximum) can shift far left: the result **saturates at** ``2**31 - 1``, where
    I-ViT's float32 reaches ``inf``; both become ``2**31 - 1`` at the row sum's clamp, the only
    place such a value is used.
    """
    _check_n_x0(x0, n)
    x = check_range(x, 32, "x")
    x = x + (x >> 1) - (x >> 4)
    x = torch.maximum(x, torch.full_like(x, n * x0))
    q = torch.div(x, x0, rounding_mode="floor")
    r = x - q * x0
    val = r - 2 * x0                       # in (-x0, -2 x0]: positive, at most 2**(32 - n)
    e = n - 1 - q                          # >= -1
    left = torch.bitwise_left_shift(val, e.clamp(0, 31))
    exp = torch.where(e >= 0, left, val >> 1)
    return exp.clamp(max=INT31_MAX)


def _row_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError("mask must be a bool tensor (True: the element takes part)")
    try:
        keep = torch.broadcast_to(mask, x.shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the input's "
                         f"{tuple(x.shape)}") from None
    empty = ~keep.any(dim=-1)
    if bool(empty.any()):
        index = tuple(int(i) for i in empty.nonzero()[0])
        raise ValueError(f"row {index} has every element masked: its softmax is undefined")
    return keep


def _check_rows(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"{name} must be a tensor of rows (..., D) with D >= 1")


def shiftmax(x: torch.Tensor, scale: float, *, mask: torch.Tensor | None = None,
             in_bits: int = 8, out_bits: int = 8, n: int = SOFTMAX_N) -> torch.Tensor:
    """I-ViT's Shiftmax over the last dimension: ``in_bits`` integers at ``scale`` -> integers in
    ``[0, 2**(out_bits-1) - 1]`` at scale ``2**-(out_bits-1)`` (``softmax_out_scale``).

    Steps: ``m`` = row max; ``e = shift_exp(x - m)``; ``sum`` clamped to ``2**31 - 1``;
    ``factor = (2**31 - 1) // sum``; ``(e factor) >> (32 - out_bits)``. I-ViT's attention uses
    ``out_bits = 16``; the engine's array takes int8 operands, so its layers use 8.

    ``mask`` (bool, broadcast to ``x``; True = kept) is this project's extension for causal
    attention: a masked element takes no part in the maximum and its exponential is 0 (I-ViT has
    no mask). A row with nothing kept is refused.

    I-ViT's float32 ``exp_int * factor`` (up to ``2**31``) rounds to 24 bits before its floor;
    here the product is exact, so outputs can differ by one in the last place where I-ViT's
    rounding crossed an integer.
    """
    return shiftmax_x0(x, softmax_x0(scale), mask=mask, in_bits=in_bits, out_bits=out_bits,
                       n=n)


def shiftmax_x0(x: torch.Tensor, x0: int, *, mask: torch.Tensor | None = None,
                in_bits: int = 8, out_bits: int = 8, n: int = SOFTMAX_N) -> torch.Tensor:
    """:func:`shiftmax` for a given ``x0`` (what the engine's CONFIG holds) instead of the
    scale it comes from."""
    _check_rows(x, "x")
    _check_out_bits(out_bits)
    x = check_range(x, in_bits, "x")
    _check_n_x0(x0, n)
    keep = _row_mask(x, mask)
    low = -(1 << in_bits)
    xm = x if keep is None else torch.where(keep, x, torch.full_like(x, low))
    row_max = xm.amax(dim=-1, keepdim=True)
    exp = shift_exp(xm - row_max if keep is None else torch.where(keep, x - row_max, 0), x0, n)
    if keep is not None:
        exp = torch.where(keep, exp, 0)
    total = exp.sum(dim=-1, keepdim=True).clamp(max=INT31_MAX)
    factor = INT31_MAX // total
    return (exp * factor) >> (32 - out_bits)


def shift_gelu(x: torch.Tensor, scale: float, *, in_bits: int = 8, out_bits: int = 8,
               n: int = GELU_N) -> torch.Tensor:
    """I-ViT's ShiftGELU over rows (last dimension): ``x sigmoid(1.702 x)`` for ``in_bits``
    integers at ``scale``; the output ``x * sigmoid`` is at ``gelu_out_scale(scale, out_bits)``.

    ``m`` = row max; ``e = shift_exp(x - m)``, ``e_m = shift_exp(-m)`` (both at ``1.702 scale``);
    ``sum = e + e_m`` clamped to ``2**31 - 1``; ``factor = (2**31 - 1) // sum`` per element;
    ``sigmoid = (e factor) >> (32 - out_bits)``, in ``[0, 2**(out_bits-1) - 1]``.
    """
    _check_rows(x, "x")
    _check_out_bits(out_bits)
    x = check_range(x, in_bits, "x")
    x0 = gelu_x0(scale)
    _check_n_x0(x0, n)
    row_max = x.amax(dim=-1, keepdim=True)
    exp = shift_exp(x - row_max, x0, n)
    exp_max = shift_exp(-row_max, x0, n)
    total = (exp + exp_max).clamp(max=INT31_MAX)
    factor = INT31_MAX // total
    sigmoid = (exp * factor) >> (32 - out_bits)
    return x * sigmoid


def round_half_even_div(num: torch.Tensor, den: int) -> torch.Tensor:
    """``round(num / den)`` with ties to even (``torch.round``'s rule), exactly, for int64
    ``num`` and a positive integer ``den``."""
    q = torch.div(num, den, rounding_mode="floor")
    twice = 2 * (num - q * den)                    # in [0, 2 den)
    up = (twice > den) | ((twice == den) & (q % 2 == 1))
    return q + up.to(torch.int64)


def ivit_sqrt(v: torch.Tensor, iterations: int = SQRT_ITERATIONS,
              start: int = SQRT_START) -> torch.Tensor:
    """I-LayerNorm's integer square root: ``k = start``, then ``iterations`` times
    ``k = (k + v // k) // 2``. Not converged for small ``v`` with the defaults (``v = 10,000``
    gives 108): that is I-ViT's result and is kept. ``k`` never reaches 0 within 16 steps from
    ``2**16``, so at most 16 are allowed."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) \
            or not 1 <= iterations <= 16:
        raise ValueError(f"iterations must be an integer in [1, 16], not {iterations!r}")
    if isinstance(start, bool) or not isinstance(start, int) or not 1 << 15 <= start <= 1 << 31:
        raise ValueError(f"start must be an integer in [2**15, 2**31], not {start!r}")
    if not isinstance(v, torch.Tensor) or bool((v < 0).any()):
        raise ValueError("v must be a tensor of integers >= 0")
    v = v.to(torch.int64)
    k = torch.full_like(v, start)
    for _ in range(iterations):
        k = (k + v // k) // 2
    return k


@dataclass(frozen=True)
class LayerNormConstants:
    """I-LayerNorm's per-channel constants, computed in float32 from the float layer's
    ``gamma``/``beta`` as I-ViT does: ``bias_int = floor((beta / gamma) / (sqrt(D) / 2**30))``
    and the output scale ``sqrt(D) / 2**30 * gamma`` (float32; negative where gamma is)."""

    bias_int: torch.Tensor    # int64, (D,)
    out_scale: torch.Tensor   # float32, (D,)


def layernorm_constants(gamma: torch.Tensor, beta: torch.Tensor) -> LayerNormConstants:
    """See :class:`LayerNormConstants`. A zero in ``gamma`` is refused (I-ViT divides by it)."""
    if not isinstance(gamma, torch.Tensor) or not isinstance(beta, torch.Tensor) \
            or gamma.dim() != 1 or gamma.shape != beta.shape or gamma.numel() == 0:
        raise ValueError("gamma and beta must be 1-D tensors of the same length D >= 1")
    g = gamma.detach().to(torch.float32)
    b = beta.detach().to(torch.float32)
    if not bool(torch.isfinite(g).all() & torch.isfinite(b).all()):
        raise ValueError("gamma and beta must be finite")
    zero = (g == 0).nonzero()
    if zero.numel():
        raise ValueError(f"gamma is 0 at channel {int(zero[0])}: I-LayerNorm divides beta by "
                         f"gamma, so every channel needs a nonzero gamma")
    dim_sqrt = torch.sqrt(torch.tensor(float(g.numel()), dtype=torch.float32))
    base = dim_sqrt / 2 ** 30
    bias = torch.floor((b / g) / base)
    if bool((bias.abs() >= 2 ** 62).any()):
        raise ValueError("beta / gamma is too large for a 63-bit layernorm bias")
    return LayerNormConstants(bias.to(torch.int64), base * g)


def i_layernorm(x: torch.Tensor, bias_int: torch.Tensor, *, in_bits: int = 16,
                iterations: int = SQRT_ITERATIONS) -> torch.Tensor:
    """I-ViT's I-LayerNorm over rows (last dimension ``D``) of ``in_bits`` integers: int64 out,
    at the per-channel ``LayerNormConstants.out_scale`` (the input's own scale drops out).

    ``mean = round(sum / D)`` (half to even, exact); ``y = x - mean``; ``v = sum(y**2)``;
    ``std = ivit_sqrt(v)``; ``factor = (2**31 - 1) // std``; ``(y factor) >> 1``; ``+ bias_int``.
    I-ViT's float32 ``y * factor / 2`` (up to ``2**48``) and float32 mean round before their
    floor; here both are exact.
    """
    _check_rows(x, "x")
    x = check_range(x, in_bits, "x")
    d = x.shape[-1]
    if not isinstance(bias_int, torch.Tensor) or bias_int.shape != (d,):
        raise ValueError(f"bias_int must be a 1-D tensor of D={d} integers")
    mean = round_half_even_div(x.sum(dim=-1, keepdim=True), d)
    y = x - mean
    std = ivit_sqrt((y * y).sum(dim=-1, keepdim=True), iterations)
    factor = INT31_MAX // std
    return ((y * factor) >> 1) + bias_int.to(torch.int64)
