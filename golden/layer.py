"""A pre-norm transformer encoder block, float and integer: the layer the engine runs.

Two forms of one block (ViT/DeiT's, and GPT-2's with ``causal=True``):

* :class:`EncoderBlock`, a float ``torch.nn.Module``: ``x + proj(attn(LN1(x)))``, then
  ``x + FC2(GELU(FC1(LN2(x))))``, multi-head attention with ``softmax(Q K^T / sqrt(d))``;
* :class:`IntEncoderBlock`, the integer pipeline that mirrors the hardware step by step, built
  from a float block and calibration inputs by :meth:`IntEncoderBlock.from_float`.

The integer pipeline is I-ViT's block (``zkkli/I-ViT``, ``models/vit_quant.py``) with its
non-linears from :mod:`golden.nonlinear`, and these choices, each forced by the engine:

* every GEMM is int8 x int8 -> int32 (weights per output channel, symmetric; activations per
  tensor, symmetric, scale ``max|x| / 127`` from calibration, as I-ViT's ``QuantAct``); a GEMM's
  bias is int32 at the accumulator's scale;
* every requantization is the engine's (:func:`golden.requant.requantize`, gemmlowp fixed point,
  rounding half away from zero) where I-ViT's ``fixedpoint_mul`` rounds half to even in float64;
* the residual stream is 16-bit, as I-ViT's (``QuantAct(16)``); a residual add requantizes the
  GEMM's accumulator and the stream's old value each to the new 16-bit scale and adds them,
  saturating (I-ViT requantizes the projection to 16 bits once more before that; folded here);
* softmax probabilities are 8-bit (``[0, 127]`` at ``2**-7``), because they are the array's left
  operand in ``P V``; I-ViT's attention keeps 16 (``IntSoftmax(16)``);
* layernorm's output ``(y f) >> 1 + bias`` saturates to int32 before its requantization (reached
  only when ``|beta / gamma| > sqrt(D)``); a channel with negative gamma is negated there and
  requantized by ``|scale|``, the same number;
* attention's ``1 / sqrt(d)`` is folded into the requantization of ``Q K^T``.

:meth:`IntEncoderBlock.forward` returns the block's output and a trace: every integer tensor
the hardware produces, by step name, for comparing the RTL step by step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from golden.gemm import check_range, gemm_int
from golden.nonlinear import (
    gelu_out_scale,
    i_layernorm,
    layernorm_constants,
    shift_gelu,
    shiftmax,
    softmax_out_scale,
)
from golden.requant import INT32_MAX, INT32_MIN, quantize_multiplier, requantize

__all__ = ["EncoderBlock", "IntEncoderBlock", "IntLinear", "LayerError", "Requant", "layer_error"]

#: bits of the residual stream (I-ViT's ``QuantAct(16)``)
RESIDUAL_BITS = 16
#: bits of every GEMM operand
ACT_BITS = 8


class EncoderBlock(nn.Module):
    """A pre-norm encoder block in float: ``dim`` features, ``heads`` heads, an MLP of ``ffn``
    hidden features with exact (erf) GELU; ``causal`` masks attention to earlier tokens (GPT-2).
    Input and output ``(tokens, dim)`` or ``(batch, tokens, dim)``."""

    def __init__(self, dim: int, heads: int, ffn: int, *, causal: bool = False,
                 eps: float = 1e-6):
        super().__init__()
        for name, value in (("dim", dim), ("heads", heads), ("ffn", ffn)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.dim, self.heads, self.ffn, self.causal = dim, heads, ffn, causal
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[0]

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The output and the float value of every step :class:`IntEncoderBlock` quantizes."""
        if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3) or x.shape[-1] != self.dim:
            raise ValueError(f"x must be (tokens, {self.dim}) or (batch, tokens, {self.dim})")
        t: dict[str, torch.Tensor] = {"x": x}
        t["ln1"] = self.norm1(x)
        t["qkv"] = self.qkv(t["ln1"])
        q, k, v = _heads(t["qkv"], self.heads)
        t["logits"] = q @ k.transpose(-2, -1) * self.head_dim ** -0.5
        if self.causal:
            n = x.shape[-2]
            mask = torch.ones(n, n, dtype=torch.bool).tril()
            t["logits"] = t["logits"].masked_fill(~mask, float("-inf"))
        t["probs"] = t["logits"].softmax(dim=-1)
        t["attn"] = _merge(t["probs"] @ v)
        t["x2"] = x + self.proj(t["attn"])
        t["ln2"] = self.norm2(t["x2"])
        t["fc1"] = self.fc1(t["ln2"])
        t["gelu"] = nn.functional.gelu(t["fc1"])
        t["out"] = t["x2"] + self.fc2(t["gelu"])
        return t["out"], t


def _heads(qkv: torch.Tensor, heads: int):
    """``(..., N, 3 D)`` -> q, k, v of ``(..., heads, N, D / heads)`` (I-ViT's layout)."""
    *lead, n, three_d = qkv.shape
    d = three_d // 3
    split = qkv.reshape(*lead, n, 3, heads, d // heads)
    return [split[..., i, :, :].transpose(-3, -2) for i in range(3)]


def _merge(o: torch.Tensor) -> torch.Tensor:
    """``(..., heads, N, dh)`` -> ``(..., N, heads dh)``."""
    return o.transpose(-3, -2).flatten(-2)


@dataclass(frozen=True)
class Requant:
    """One requantization of the engine: ``real ~= multiplier 2**shift / 2**31`` per channel
    (or one for all), into ``[qmin, qmax]``."""

    multiplier: torch.Tensor   # int64, () or (N,)
    shift: torch.Tensor        # int64, () or (N,)
    qmin: int = -128
    qmax: int = 127

    @classmethod
    def of(cls, real: torch.Tensor | float, bits: int | None = ACT_BITS) -> Requant:
        reals = torch.as_tensor(real, dtype=torch.float64).reshape(-1)
        pairs = [quantize_multiplier(float(r)) for r in reals]
        m = torch.tensor([p[0] for p in pairs], dtype=torch.int64)
        s = torch.tensor([p[1] for p in pairs], dtype=torch.int64)
        if torch.as_tensor(real).dim() == 0:
            m, s = m[0], s[0]
        if bits is None:
            return cls(m, s, INT32_MIN, INT32_MAX)
        return cls(m, s, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)

    def __call__(self, acc: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return requantize(acc, self.multiplier, self.shift, bias=bias, qmin=self.qmin,
                          qmax=self.qmax)


@dataclass(frozen=True)
class IntLinear:
    """An int8 linear layer: ``weight`` (out, in) int8, ``bias`` (out,) int32 at the
    accumulator's scale ``in_scale * weight_scale``."""

    weight: torch.Tensor
    bias: torch.Tensor
    weight_scale: torch.Tensor   # float64, (out,)

    @classmethod
    def quantize(cls, linear: nn.Linear, in_scale: float) -> IntLinear:
        w = linear.weight.detach().to(torch.float64)
        scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).eps)
        weight = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int64)
        b = linear.bias.detach().to(torch.float64) if linear.bias is not None \
            else torch.zeros(w.shape[0], dtype=torch.float64)
        bias = torch.round(b / (in_scale * scale)).clamp(INT32_MIN, INT32_MAX).to(torch.int64)
        return cls(weight, bias, scale)

    def acc(self, x: torch.Tensor) -> torch.Tensor:
        """The int32 accumulators of ``x @ weight.T`` (bias added by the requantization)."""
        return gemm_int(x.reshape(-1, x.shape[-1]), self.weight.T).reshape(
            *x.shape[:-1], self.weight.shape[0])


def _max_scale(values: torch.Tensor, bits: int) -> float:
    """I-ViT's symmetric activation scale: ``max|x| / (2**(bits-1) - 1)``, at least float32's
    epsilon."""
    return max(float(values.detach().abs().max()) / ((1 << (bits - 1)) - 1),
               float(torch.finfo(torch.float32).eps))


@dataclass
class IntEncoderBlock:
    """The integer block (module docstring): scales, integer weights and the requantization of
    every step. Build with :meth:`from_float`; run with :meth:`forward`."""

    dim: int
    heads: int
    ffn: int
    causal: bool
    scales: dict[str, float]
    ln1: tuple[torch.Tensor, torch.Tensor]     # (bias_int, sign) per channel
    ln2: tuple[torch.Tensor, torch.Tensor]
    qkv: IntLinear
    proj: IntLinear
    fc1: IntLinear
    fc2: IntLinear
    rq: dict[str, Requant] = field(default_factory=dict)

    @classmethod
    def from_float(cls, block: EncoderBlock, calibration: torch.Tensor) -> IntEncoderBlock:
        """Quantize ``block`` with activation scales from one float run on ``calibration``."""
        with torch.no_grad():
            _, t = block.run(calibration)
        logits = t["logits"]
        if block.causal:
            logits = logits[torch.isfinite(logits)]
        s = {
            "x": _max_scale(t["x"], RESIDUAL_BITS),
            "ln1": _max_scale(t["ln1"], ACT_BITS),
            "qkv": _max_scale(t["qkv"], ACT_BITS),
            "logits": _max_scale(logits, ACT_BITS),
            "probs": softmax_out_scale(ACT_BITS),
            "attn": _max_scale(t["attn"], ACT_BITS),
            "x2": _max_scale(t["x2"], RESIDUAL_BITS),
            "ln2": _max_scale(t["ln2"], ACT_BITS),
            "fc1": _max_scale(t["fc1"], ACT_BITS),
            "gelu": _max_scale(t["gelu"], ACT_BITS),
            "out": _max_scale(t["out"], RESIDUAL_BITS),
        }
        s["gelu_int"] = gelu_out_scale(s["fc1"], ACT_BITS)
        ln = {}
        rq = {}
        for name, norm, out in (("ln1", block.norm1, "ln1"), ("ln2", block.norm2, "ln2")):
            c = layernorm_constants(norm.weight, norm.bias)
            sign = torch.where(c.out_scale < 0, -1, 1).to(torch.int64)
            ln[name] = (c.bias_int, sign)
            rq[name] = Requant.of(c.out_scale.to(torch.float64).abs() / s[out])
        qkv = IntLinear.quantize(block.qkv, s["ln1"])
        proj = IntLinear.quantize(block.proj, s["attn"])
        fc1 = IntLinear.quantize(block.fc1, s["ln2"])
        fc2 = IntLinear.quantize(block.fc2, s["gelu"])
        rq["qkv"] = Requant.of(s["ln1"] * qkv.weight_scale / s["qkv"])
        rq["logits"] = Requant.of(s["qkv"] ** 2 * block.head_dim ** -0.5 / s["logits"])
        rq["attn"] = Requant.of(s["probs"] * s["qkv"] / s["attn"])
        rq["proj"] = Requant.of(s["attn"] * proj.weight_scale / s["x2"], None)
        rq["res1"] = Requant.of(s["x"] / s["x2"], None)
        rq["fc1"] = Requant.of(s["ln2"] * fc1.weight_scale / s["fc1"])
        rq["gelu"] = Requant.of(s["gelu_int"] / s["gelu"])
        rq["fc2"] = Requant.of(s["gelu"] * fc2.weight_scale / s["out"], None)
        rq["res2"] = Requant.of(s["x2"] / s["out"], None)
        return cls(block.dim, block.heads, block.ffn, block.causal, s, ln["ln1"], ln["ln2"],
                   qkv, proj, fc1, fc2, rq)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Float ``x`` -> the 16-bit residual-stream integers at ``scales['x']``."""
        lo, hi = -(1 << (RESIDUAL_BITS - 1)), (1 << (RESIDUAL_BITS - 1)) - 1
        return torch.round(x.detach().to(torch.float64) / self.scales["x"]).clamp(lo, hi) \
            .to(torch.int64)

    def dequantize_output(self, out: torch.Tensor) -> torch.Tensor:
        return out.to(torch.float64) * self.scales["out"]

    def _layernorm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        bias_int, sign = getattr(self, name)
        y = i_layernorm(x, bias_int, in_bits=RESIDUAL_BITS).clamp(INT32_MIN, INT32_MAX)
        return self.rq[name](y * sign)

    def _residual(self, acc: torch.Tensor, bias: torch.Tensor, old: torch.Tensor,
                  gemm: str, stream: str) -> torch.Tensor:
        lo, hi = -(1 << (RESIDUAL_BITS - 1)), (1 << (RESIDUAL_BITS - 1)) - 1
        return (self.rq[gemm](acc, bias) + self.rq[stream](old)).clamp(lo, hi)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x``: ``(tokens, dim)`` 16-bit integers at ``scales['x']`` -> the block's output,
        16-bit at ``scales['out']``, and the trace of every step's integers."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must be a (tokens, {self.dim}) integer tensor")
        x = check_range(x, RESIDUAL_BITS, "x")
        n = x.shape[0]
        t: dict[str, torch.Tensor] = {"x": x}
        t["ln1"] = self._layernorm(x, "ln1")
        t["qkv"] = self.rq["qkv"](self.qkv.acc(t["ln1"]), self.qkv.bias)
        q, k, v = _heads(t["qkv"], self.heads)
        t["logits"] = self.rq["logits"](gemm_int_batched(q, k.transpose(-2, -1)))
        mask = torch.ones(n, n, dtype=torch.bool).tril() if self.causal else None
        t["probs"] = shiftmax(t["logits"], self.scales["logits"], mask=mask)
        t["attn"] = _merge(self.rq["attn"](gemm_int_batched(t["probs"], v)))
        t["x2"] = self._residual(self.proj.acc(t["attn"]), self.proj.bias, x, "proj", "res1")
        t["ln2"] = self._layernorm(t["x2"], "ln2")
        t["fc1"] = self.rq["fc1"](self.fc1.acc(t["ln2"]), self.fc1.bias)
        t["gelu_int"] = shift_gelu(t["fc1"], self.scales["fc1"])
        t["gelu"] = self.rq["gelu"](t["gelu_int"])
        t["out"] = self._residual(self.fc2.acc(t["gelu"]), self.fc2.bias, t["x2"], "fc2", "res2")
        return t["out"], t


def gemm_int_batched(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`golden.gemm.gemm_int` over leading (head) dimensions."""
    if a.dim() == 2:
        return gemm_int(a, b)
    return torch.stack([gemm_int_batched(x, y) for x, y in zip(a, b, strict=True)])


@dataclass(frozen=True)
class LayerError:
    """Integer vs float: the largest and mean absolute difference (in the float output's units),
    both relative to the float output's largest magnitude, and their cosine similarity."""

    max_abs: float
    mean_abs: float
    max_rel: float
    mean_rel: float
    cosine: float


def layer_error(reference: torch.Tensor, approx: torch.Tensor) -> LayerError:
    ref = reference.detach().to(torch.float64).reshape(-1)
    got = approx.detach().to(torch.float64).reshape(-1)
    diff = (got - ref).abs()
    peak = float(ref.abs().max()) or 1.0
    cosine = float(torch.nn.functional.cosine_similarity(ref, got, dim=0))
    return LayerError(float(diff.max()), float(diff.mean()), float(diff.max()) / peak,
                      float(diff.mean()) / peak, cosine)
