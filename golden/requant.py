"""Requantization of int32 accumulators back to 8-bit activations, bit-exact.

Two arithmetics live here, side by side:

* **gemmlowp / TFLite fixed point** (the default, what the engine's requantize unit computes): a
  per-output-channel int32 ``multiplier`` in ``[2**30, 2**31)`` and a power-of-two ``shift``,
  applied as TFLite's reference ``MultiplyByQuantizedMultiplier`` — a saturating rounding
  doubling high multiply followed by a rounding (half away from zero) right shift.
* **FBGEMM** (``torch.ao.nn.quantized.Linear`` with ``torch.backends.quantized.engine =
  "fbgemm"``), reproduced bit for bit, float32 rounding steps included, so a model quantized by
  PyTorch can be checked element by element.

All integer tensors are returned as ``torch.int64``. Per-channel parameters are 1-D tensors over
the *last* dimension and broadcast against it (shape ``(N,)`` against ``(..., N)``).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from golden.gemm import check_bounds, check_range, gemm_int, wrap

__all__ = [
    "QuantLinear",
    "fbgemm_int16_pair_saturation",
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "quantized_linear_fbgemm",
    "requantize",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

IntLike = int | torch.Tensor
ScaleLike = float | Sequence[float] | torch.Tensor


# ---------------------------------------------------------------------------------------------
# gemmlowp / TFLite fixed point
# ---------------------------------------------------------------------------------------------


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``real ~= multiplier * 2**shift / 2**31``.

    ``real`` must be finite and ``>= 0`` (a requantization scale; negative scales are refused
    with ``ValueError`` rather than producing TFLite's negative multiplier). Returns
    ``(multiplier, shift)`` with ``multiplier`` in ``[2**30, 2**31)`` — or ``(0, 0)`` for
    ``real == 0`` and for ``real < ~2**-32`` (shift below -31 flushes to zero, as TFLite does) —
    and ``shift > 0`` meaning a left shift. Exactly TFLite's steps: ``q, shift = frexp(real)``,
    ``q_fixed = round(q * 2**31)`` rounding half away from zero, and when that rounds up to
    ``2**31`` it becomes ``2**30`` with ``shift + 1``. The single-rounding build's clamp of
    ``shift`` to 30 is not applied (this is the double-rounding reference).
    """
    real = float(real)
    if not math.isfinite(real) or real < 0.0:
        raise ValueError(f"real multiplier must be finite and >= 0, not {real!r}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    # q * 2**31 is exact in double and < 2**31, so +0.5 then floor is exact round-half-away.
    q_fixed = math.floor(q * (1 << 31) + 0.5)
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def _int_tensor(x: IntLike, name: str) -> torch.Tensor:
    if isinstance(x, bool):
        raise ValueError(f"{name} must be an integer or an integer tensor, not a bool")
    if isinstance(x, int):
        return torch.tensor(x, dtype=torch.int64)
    if isinstance(x, torch.Tensor):
        return x
    raise ValueError(f"{name} must be an integer or an integer tensor, not {type(x).__name__}")


def saturating_rounding_doubling_high_mul(a: IntLike, b: IntLike) -> torch.Tensor:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul``, elementwise with broadcasting.

    ``a`` and ``b`` hold int32 values (ints or integer tensors). Returns the int32 value
    ``(a*b + nudge) / 2**31`` with division truncating toward zero, where
    ``nudge = 2**30`` if ``a*b >= 0`` else ``1 - 2**30`` — i.e. ``a*b / 2**31`` rounded to
    nearest, ties going up (toward +inf: ``+0.5 -> 1`` but ``-0.5 -> 0``, ``-1.5 -> -1``) —
    except that ``INT32_MIN * INT32_MIN`` (the one overflow) saturates to ``INT32_MAX``.
    int64 out.
    """
    a64 = check_range(_int_tensor(a, "a"), 32, "a")
    b64 = check_range(_int_tensor(b, "b"), 32, "b")
    overflow = (a64 == b64) & (a64 == INT32_MIN)
    ab = a64 * b64  # |ab| <= 2**62: exact in int64
    nudge = torch.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = torch.div(ab + nudge, 1 << 31, rounding_mode="trunc")
    return torch.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x: IntLike, exponent: IntLike) -> torch.Tensor:
    """gemmlowp's ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero.

    ``x`` holds int32 values; ``exponent`` is an int or integer tensor in ``[0, 31]``,
    broadcasting against ``x``. Computed exactly as gemmlowp does: ``mask = 2**exponent - 1``,
    ``remainder = x & mask``, ``threshold = (mask >> 1) + (x < 0)``, result
    ``(x >> exponent) + (remainder > threshold)`` with an arithmetic shift. So ``5/2 -> 3``,
    ``-5/2 -> -3``, ``-3/2 -> -2``. int64 out.
    """
    x64 = check_range(_int_tensor(x, "x"), 32, "x")
    e64 = check_bounds(_int_tensor(exponent, "exponent"), 0, 31, "exponent")
    mask = torch.bitwise_left_shift(torch.ones_like(e64), e64) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0).to(torch.int64)
    return torch.bitwise_right_shift(x64, e64) + (remainder > threshold).to(torch.int64)


def multiply_by_quantized_multiplier(
    x: IntLike, multiplier: IntLike, shift: IntLike
) -> torch.Tensor:
    """TFLite's reference ``MultiplyByQuantizedMultiplier`` (double rounding), elementwise.

    ``x`` holds int32 values, ``multiplier`` int32 values (normally from ``quantize_multiplier``),
    ``shift`` integers in ``[-31, 31]``; per-channel ``multiplier``/``shift`` of shape ``(N,)``
    broadcast over the last dimension of ``x``. With ``left = max(shift, 0)`` and
    ``right = max(-shift, 0)`` the result is
    ``rounding_divide_by_pot(srdhm(x * 2**left, multiplier), right)``. int64 out, int32 range.

    The left shift: TFLite writes ``x * (1 << left_shift)`` in int32, which is undefined
    behaviour in C++ when it overflows (and wraps on real compilers). Here it **saturates** to
    int32 instead, as gemmlowp's own ``SaturatingRoundingMultiplyByPOT`` does; the hardware does
    the same. The two agree whenever TFLite's product fits in int32.
    """
    x64 = check_range(_int_tensor(x, "x"), 32, "x")
    m64 = check_range(_int_tensor(multiplier, "multiplier"), 32, "multiplier")
    s64 = check_bounds(_int_tensor(shift, "shift"), -31, 31, "shift")
    left = s64.clamp(min=0)
    right = (-s64).clamp(min=0)
    shifted = torch.bitwise_left_shift(x64, left).clamp(INT32_MIN, INT32_MAX)  # |.| <= 2**62
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m64), right)


def _check_int(value: int, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
    return value


def requantize(
    acc: torch.Tensor,
    multiplier: IntLike,
    shift: IntLike,
    *,
    bias: torch.Tensor | None = None,
    zero_point: int = 0,
    qmin: int = -128,
    qmax: int = 127,
    relu: bool = False,
) -> torch.Tensor:
    """int32 accumulators -> 8-bit outputs, gemmlowp fixed point (what the engine computes).

    ``acc`` is ``(..., N)`` (normally ``(M, N)``) with int32 values; ``multiplier``/``shift`` are
    scalars or ``(N,)`` per-output-channel tensors (see ``multiply_by_quantized_multiplier``);
    ``bias`` is ``None`` or an ``(N,)`` int32 tensor at the accumulator's scale (zero point 0).
    Steps, as TFLite's reference integer FullyConnected:

    1. ``acc + bias``, **wrapped** to int32. TFLite adds bias in plain int32 with no
       saturation; wrapping is also what the engine does, since bias is preloaded into the same
       wrapping accumulator the MACs add into, so the result cannot depend on summation order.
    2. ``multiply_by_quantized_multiplier``.
    3. ``+ zero_point`` (in ``[qmin, qmax]``), then clamp to ``[qmin, qmax]``; with ``relu`` the
       lower bound is ``max(qmin, zero_point)``, i.e. real value 0.

    Returns int64 values in ``[qmin, qmax]`` with the shape of ``acc``.
    """
    if not isinstance(acc, torch.Tensor) or acc.dim() < 1:
        raise ValueError("acc must be a tensor with at least one dimension (..., N)")
    acc64 = check_range(acc, 32, "acc")
    _check_int(qmin, "qmin", INT32_MIN, INT32_MAX)
    _check_int(qmax, "qmax", qmin, INT32_MAX)
    _check_int(zero_point, "zero_point", qmin, qmax)
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.dim() != 1 or bias.shape[0] != acc.shape[-1]:
            raise ValueError(f"bias must be a 1-D tensor of N={acc.shape[-1]} int32 values")
        acc64 = wrap(acc64 + check_range(bias, 32, "bias"), 32)
    scaled = multiply_by_quantized_multiplier(acc64, multiplier, shift)
    lo = max(qmin, zero_point) if relu else qmin
    return (scaled + zero_point).clamp(lo, qmax)


# ---------------------------------------------------------------------------------------------
# FBGEMM (torch.ao quantized Linear), bit-exact
# ---------------------------------------------------------------------------------------------

# FBGEMM_ENABLE_INSTRUCTIONS values and, per detected ISA, the ISAs it may be forced down to
# (fbgemm src/Utils.cc: fbgemmEnvGetIsa, isaSupportMap, fbgemmInstructionSet).
_FBGEMM_ENV_ISA = {
    "AVX2": "avx2",
    "AVX512": "avx512",
    "AVX512_E1": "avx512_vnni",
    "AVX512_256": "avx512_ymm",
    "AVX512_E1_256": "avx512_vnni_ymm",
}
_FBGEMM_ISA_SUPPORT = {
    "avx2": {"avx2"},
    "avx512": {"avx512", "avx512_ymm", "avx2"},
    "avx512_vnni": {"avx512_vnni", "avx512_vnni_ymm", "avx512", "avx512_ymm", "avx2"},
}


@functools.cache
def _cpu_flags() -> frozenset[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return None


def fbgemm_int16_pair_saturation() -> bool:
    """Whether FBGEMM's int8 GEMM on this host saturates pairs of products to int16.

    Without AVX512-VNNI, FBGEMM's u8 x s8 kernel is built on ``vpmaddubsw``, which adds the
    products of two adjacent k (``2j``, ``2j+1``) into a *saturating* int16 before widening to
    int32; with VNNI (``vpdpbusd``) products go straight into int32 and nothing saturates. This
    mirrors FBGEMM's dispatch: the ISA detected from ``/proc/cpuinfo`` flags, optionally forced
    lower by ``FBGEMM_ENABLE_INSTRUCTIONS`` (which FBGEMM reads once per process, so set it
    before torch first runs a quantized op). Returns ``False`` when the flags cannot be read or
    the CPU has no AVX2 (where FBGEMM does not run at all).
    """
    flags = _cpu_flags()
    if flags is None:
        return False
    if "avx512_vnni" in flags:
        detected = "avx512_vnni"
    elif {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        detected = "avx512"
    elif "avx2" in flags:
        detected = "avx2"
    else:
        return False
    forced = _FBGEMM_ENV_ISA.get(os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "").upper())
    isa = forced if forced in _FBGEMM_ISA_SUPPORT[detected] else detected
    return isa not in ("avx512_vnni", "avx512_vnni_ymm")


def _u8s8_pair_saturating_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` with each adjacent-k pair of products saturated to int16 (vpmaddubsw)."""
    m, k = x.shape
    n = w.shape[0]
    if k % 2:
        x = torch.nn.functional.pad(x, (0, 1))
        w = torch.nn.functional.pad(w, (0, 1))
    xp = x.view(m, -1, 2)
    wp = w.view(n, -1, 2)
    out = torch.empty(m, n, dtype=torch.int64)
    rows = max(1, (1 << 22) // max(1, n * xp.shape[1]))  # bound the (rows, N, K/2) temporary
    for start in range(0, m, rows):
        xs = xp[start : start + rows, None]
        pairs = xs[..., 0] * wp[None, ..., 0] + xs[..., 1] * wp[None, ..., 1]
        out[start : start + rows] = pairs.clamp(-(1 << 15), (1 << 15) - 1).sum(-1)
    return out


def _scale_tensor(value: ScaleLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.dim() > 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a float or a 1-D sequence of floats")
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"{name} must be finite and > 0, got {t.tolist()}")
    return t


def _f32(value: float) -> torch.Tensor:
    return torch.tensor(float(value), dtype=torch.float32)  # round to nearest, like static_cast


def quantized_linear_fbgemm(
    x_q: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    w_q: torch.Tensor,
    w_scale: ScaleLike,
    w_zero_point: IntLike,
    bias: torch.Tensor | None,
    out_scale: float,
    out_zero_point: int,
    *,
    relu: bool = False,
    int16_pair_saturation: bool | None = None,
) -> torch.Tensor:
    """``torch.ao.nn.quantized.Linear`` on the ``fbgemm`` engine, bit for bit; int64 out.

    Inputs, as torch takes them: ``x_q`` ``(..., K)`` integers in ``[0, 255]`` (the quint8
    activation's ``int_repr()``) with ``x_scale``/``x_zero_point`` (``[0, 255]``); ``w_q``
    ``(N, K)`` integers in ``[-128, 127]`` (qint8) with ``w_scale``/``w_zero_point`` either
    scalars (per-tensor) or 1-D of length N (per-channel, axis 0); ``bias`` ``None`` or ``(N,)``
    float (used as float32); ``out_scale``/``out_zero_point`` (``[0, 255]``). ``relu`` gives
    ``linear_relu``. Returns the quint8 output's ``int_repr()`` values, ``(..., N)`` in
    ``[0, 255]``.

    The arithmetic (aten ``qlinear.cpp`` + FBGEMM ``requantizeOutputProcessingAvx2``):

    1. ``acc = x_q @ w_q.T`` in int32 (wrapping). If ``int16_pair_saturation`` (default: ask
       ``fbgemm_int16_pair_saturation()`` about this host), each pair of products
       ``(2j, 2j+1)`` is first saturated to int16, as ``vpmaddubsw`` does.
    2. ``raw = acc - x_zp * col_offset[n] - row_offset[m] * w_zp[n]`` in int32, with
       ``col_offset[n] = sum_k w_q[n, k] - K * w_zp[n]`` and ``row_offset[m] = sum_k x_q[m, k]``.
    3. float32 throughout: ``s_xw = f32(x_scale) * f32(w_scale)``,
       ``mult = s_xw / f32(out_scale)``; ``f = f32(raw) + bias_term``, where ``bias_term`` is
       ``bias / s_xw`` per-channel but ``bias * f32(1.0 / double(s_xw))`` (a reciprocal,
       computed in double) per-tensor — the two differ in the last bit and do change outputs.
    4. ``r = round_half_even(f * mult)`` (``cvtps2dq``); a value outside int32 becomes INT32_MIN,
       as the instruction does. Output ``clamp(r + out_zp, out_zp if relu else 0, 255)``.
    """
    if not isinstance(x_q, torch.Tensor) or x_q.dim() < 1:
        raise ValueError("x_q must be a tensor (..., K)")
    if not isinstance(w_q, torch.Tensor) or w_q.dim() != 2:
        raise ValueError("w_q must be a 2-D tensor (N, K)")
    n, k = w_q.shape
    if x_q.shape[-1] != k:
        raise ValueError(f"x_q has K={x_q.shape[-1]} but w_q is {tuple(w_q.shape)} (N, K)")
    x64 = check_bounds(x_q, 0, 255, "x_q").reshape(-1, k)
    w64 = check_range(w_q, 8, "w_q")
    _check_int(x_zero_point, "x_zero_point", 0, 255)
    _check_int(out_zero_point, "out_zero_point", 0, 255)
    xs = _scale_tensor(x_scale, "x_scale")
    os_ = _scale_tensor(out_scale, "out_scale")
    if xs.dim() or os_.dim():
        raise ValueError("x_scale and out_scale must be scalars")
    ws = _scale_tensor(w_scale, "w_scale")
    per_channel = ws.dim() == 1
    wz = check_range(_int_tensor(w_zero_point, "w_zero_point"), 8, "w_zero_point")
    if per_channel and ws.shape[0] != n:
        raise ValueError(f"per-channel w_scale needs N={n} entries, got {ws.shape[0]}")
    if wz.dim() > 1 or (wz.dim() == 1 and (not per_channel or wz.shape[0] != n)):
        raise ValueError("w_zero_point must be a scalar, or 1-D of length N (per-channel only)")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (n,)):
        raise ValueError(f"bias must be None or a tensor of shape ({n},)")
    if int16_pair_saturation is None:
        int16_pair_saturation = fbgemm_int16_pair_saturation()

    if int16_pair_saturation:
        acc = _u8s8_pair_saturating_matmul(x64, w64)
    else:
        acc = x64 @ w64.T
    row_offset = x64.sum(-1, keepdim=True)
    col_offset = w64.sum(-1) - k * wz
    raw = wrap(acc - x_zero_point * col_offset - row_offset * wz, 32)

    s_xw = _f32(float(xs)) * ws.to(torch.float32)  # (N,) or ()
    mult = s_xw / _f32(float(os_))
    f = raw.to(torch.float32)
    if bias is not None:
        b32 = bias.detach().to(torch.float32)
        if per_channel:
            f = f + b32 / s_xw
        else:
            f = f + b32 * _f32(1.0 / float(s_xw))
    r = torch.round(f * mult)
    valid = (r >= INT32_MIN) & (r <= INT32_MAX)  # NaN fails both
    rounded = torch.where(valid, r, 0.0).to(torch.int64)
    rounded = torch.where(valid, rounded, INT32_MIN)
    # packs_epi32 -> adds_epi16(+zp) -> packus_epi16 equals one clamp for zp in [0, 255].
    out = (rounded + out_zero_point).clamp(out_zero_point if relu else 0, 255)
    return out.reshape(*x_q.shape[:-1], n)


# ---------------------------------------------------------------------------------------------
# A golden quantized linear layer
# ---------------------------------------------------------------------------------------------


def _f32_value(value: float, name: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name} must be finite and > 0, not {value!r}")
    return float(torch.tensor(v, dtype=torch.float32))


@dataclass(frozen=True, eq=False)
class QuantLinear:
    """An int8 linear layer ``y = x W^T + b`` as the engine runs it.

    Fields (validated at construction):

    - ``weight_q``: ``(N, K)`` int64 in ``[-127, 127]``, symmetric (zero point 0), per output
      channel ``n`` worth ``weight_q[n] * weight_scale[n]``.
    - ``weight_scale``: ``(N,)`` float32, > 0.
    - ``bias_q``: ``(N,)`` int64 in int32 range, at scale ``in_scale * weight_scale[n]``.
    - ``bias_float``: ``(N,)`` float32 or ``None``: the float bias ``torch.ao`` keeps (used only
      by ``mode="fbgemm"``, which must match torch given the same float layer).
    - ``in_scale``/``out_scale``: float32-representable floats > 0.
    - ``in_zero_point``/``out_zero_point``: in ``[-128, 127]`` — activations are int8.

    ``forward_int`` takes and returns int8 activations in both modes, so results compare
    directly; see its docstring for how each mode handles the input zero point.
    """

    weight_q: torch.Tensor
    weight_scale: torch.Tensor
    bias_q: torch.Tensor
    bias_float: torch.Tensor | None
    in_scale: float
    in_zero_point: int
    out_scale: float
    out_zero_point: int

    def __post_init__(self) -> None:
        if not isinstance(self.weight_q, torch.Tensor) or self.weight_q.dim() != 2:
            raise ValueError("weight_q must be a 2-D tensor (N, K)")
        n = self.weight_q.shape[0]
        check_bounds(self.weight_q, -127, 127, "weight_q")
        if self.weight_q.dtype != torch.int64:
            raise ValueError(f"weight_q must be int64, not {self.weight_q.dtype}")
        for name, t, dtype in (
            ("weight_scale", self.weight_scale, torch.float32),
            ("bias_q", self.bias_q, torch.int64),
            ("bias_float", self.bias_float, torch.float32),
        ):
            if t is None and name == "bias_float":
                continue
            if not isinstance(t, torch.Tensor) or t.shape != (n,) or t.dtype != dtype:
                raise ValueError(f"{name} must be a {dtype} tensor of shape ({n},)")
        if not bool(torch.isfinite(self.weight_scale).all() & (self.weight_scale > 0).all()):
            raise ValueError("weight_scale must be finite and > 0")
        check_range(self.bias_q, 32, "bias_q")
        for name in ("in_scale", "out_scale"):
            value = getattr(self, name)
            if _f32_value(value, name) != value:
                raise ValueError(f"{name} must be exactly representable in float32, not {value!r}")
        _check_int(self.in_zero_point, "in_zero_point", -128, 127)
        _check_int(self.out_zero_point, "out_zero_point", -128, 127)

    @classmethod
    def from_float(
        cls,
        linear: torch.nn.Linear,
        in_scale: float,
        in_zero_point: int,
        out_scale: float,
        out_zero_point: int,
    ) -> QuantLinear:
        """Quantize a float ``torch.nn.Linear`` given calibrated activation parameters.

        ``in_scale``/``out_scale`` (> 0) are rounded to float32; zero points are int8 values.
        Weights: per output channel, ``scale = max|W[n]| / 127`` in float32 (1.0 for an all-zero
        row), ``weight_q = clamp(round_half_even(W / scale), -127, 127)`` in float32 — narrow
        symmetric int8, the TFLite weight convention. Bias:
        ``bias_q = round_half_even(b / (in_scale * scale))`` in float64; ``ValueError`` if it
        leaves int32.
        """
        if not isinstance(linear, torch.nn.Linear):
            raise ValueError(f"linear must be a torch.nn.Linear, not {type(linear).__name__}")
        in_scale = _f32_value(in_scale, "in_scale")
        out_scale = _f32_value(out_scale, "out_scale")
        w = linear.weight.detach().to(torch.float32)
        amax = w.abs().amax(dim=1)
        scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
        weight_q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int64)
        n = w.shape[0]
        if linear.bias is None:
            bias_float = None
            bias_q = torch.zeros(n, dtype=torch.int64)
        else:
            bias_float = linear.bias.detach().to(torch.float32).clone()
            bias_scale = in_scale * scale.to(torch.float64)
            bias_real = torch.round(bias_float.to(torch.float64) / bias_scale)
            if not bool(((bias_real >= INT32_MIN) & (bias_real <= INT32_MAX)).all()):
                raise ValueError("bias does not fit int32 at scale in_scale * weight_scale")
            bias_q = bias_real.to(torch.int64)
        return cls(
            weight_q=weight_q,
            weight_scale=scale,
            bias_q=bias_q,
            bias_float=bias_float,
            in_scale=in_scale,
            in_zero_point=in_zero_point,
            out_scale=out_scale,
            out_zero_point=out_zero_point,
        )

    @property
    def out_features(self) -> int:
        """N."""
        return self.weight_q.shape[0]

    @property
    def in_features(self) -> int:
        """K."""
        return self.weight_q.shape[1]

    @property
    def requant_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(multiplier, shift)``, two ``(N,)`` int64 tensors, for the hardware.

        ``quantize_multiplier(in_scale * weight_scale[n] / out_scale)``, the product and quotient
        taken in float64 as TFLite does.
        """
        pairs = [
            quantize_multiplier(self.in_scale * float(s) / self.out_scale)
            for s in self.weight_scale.tolist()
        ]
        multiplier = torch.tensor([m for m, _ in pairs], dtype=torch.int64)
        shift = torch.tensor([s for _, s in pairs], dtype=torch.int64)
        return multiplier, shift

    @property
    def folded_bias(self) -> torch.Tensor:
        """``(N,)`` int32-range int64: ``wrap32(bias_q[n] - in_zero_point * sum_k weight_q[n, k])``.

        The input zero point folded into the bias, so the array multiplies raw int8 activations:
        ``sum_k (x - zp) w + b == sum_k x w + folded_bias`` modulo ``2**32``, and since the
        accumulator wraps modulo ``2**32`` too the requantized result is identical.
        """
        return wrap(self.bias_q - self.in_zero_point * self.weight_q.sum(dim=1), 32)

    def forward_int(
        self, x_q: torch.Tensor, mode: Literal["gemmlowp", "fbgemm"] = "gemmlowp"
    ) -> torch.Tensor:
        """Run the layer on int8 activations ``x_q`` ``(..., K)``; int64 ``(..., N)`` in int8 range.

        ``mode="gemmlowp"`` (the hardware): ``gemm_int(x_q, weight_q.T)`` with a wrapping int32
        accumulator, plus ``folded_bias`` (the input zero point is folded into the bias, not
        subtracted from ``x``: the array sees plain int8 operands), then ``requantize`` with
        ``requant_params`` and ``out_zero_point``, clamped to ``[-128, 127]``.

        ``mode="fbgemm"``: what ``torch.ao.nn.quantized.Linear`` (engine fbgemm) returns for this
        layer — weights ``weight_q`` per-channel with ``weight_scale``, float bias
        ``bias_float`` — on quint8 input ``x_q + 128`` with zero point ``in_zero_point + 128``
        and output zero point ``out_zero_point + 128``; the quint8 result minus 128 is returned.
        The +128 shift is exact: the same real numbers, in uint8 coding.
        """
        if mode not in ("gemmlowp", "fbgemm"):
            raise ValueError(f"mode must be 'gemmlowp' or 'fbgemm', not {mode!r}")
        if not isinstance(x_q, torch.Tensor) or x_q.dim() < 1:
            raise ValueError("x_q must be a tensor (..., K)")
        if x_q.shape[-1] != self.in_features:
            raise ValueError(f"x_q has K={x_q.shape[-1]}, the layer expects {self.in_features}")
        x64 = check_range(x_q, 8, "x_q")
        if mode == "fbgemm":
            out = quantized_linear_fbgemm(
                x64 + 128,
                self.in_scale,
                self.in_zero_point + 128,
                self.weight_q,
                self.weight_scale,
                torch.zeros(self.out_features, dtype=torch.int64),
                self.bias_float,
                self.out_scale,
                self.out_zero_point + 128,
            )
            return out - 128
        acc = gemm_int(x64.reshape(-1, self.in_features), self.weight_q.T, in_bits=8, acc_bits=32)
        multiplier, shift = self.requant_params
        out = requantize(
            acc,
            multiplier,
            shift,
            bias=self.folded_bias,
            zero_point=self.out_zero_point,
            qmin=-128,
            qmax=127,
        )
        return out.reshape(*x_q.shape[:-1], self.out_features)
