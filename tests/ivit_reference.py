"""I-ViT's integer operators, transcribed from ``zkkli/I-ViT``
(``models/quantization_utils/quant_modules.py``: ``IntSoftmax``, ``IntGELU``, ``IntLayerNorm``;
Apache-2.0) with ``.cuda()`` removed and the float dtype a parameter.

The operators take the *integer* input (I-ViT divides a dequantized tensor by its scale again
first; that round trip is left out here) and return I-ViT's integer-valued float tensors. Scales
and constants are float32 tensors, as in I-ViT. With ``dtype=torch.float64`` every intermediate
is below 2**53, so the arithmetic is exact and must equal ``golden.nonlinear`` element for
element; with ``torch.float32`` (I-ViT's own) it rounds above 2**24.
"""

from __future__ import annotations

import torch

floor = torch.floor


def int_exp_shift(x_int, scaling_factor, n):
    x_int = x_int + floor(x_int / 2) - floor(x_int / 2 ** 4)
    with torch.no_grad():
        x0_int = torch.floor(-1.0 / scaling_factor)
    x_int = torch.max(x_int, n * x0_int)
    q = floor(x_int / x0_int)
    r = x_int - x0_int * q
    exp_int = r / 2 - x0_int
    exp_int = torch.clamp(floor(exp_int * 2 ** (n - q)), min=0)
    return exp_int


def int_softmax(x_int, scale, *, output_bit=8, n=15, dtype=torch.float64):
    x_int = x_int.to(dtype)
    scaling_factor = torch.tensor(scale, dtype=torch.float32)
    x_int_max, _ = x_int.max(dim=-1, keepdim=True)
    x_int = x_int - x_int_max
    exp_int = int_exp_shift(x_int, scaling_factor, n)
    exp_int_sum = exp_int.sum(dim=-1, keepdim=True)
    exp_int_sum.clamp_max_(2 ** 31 - 1)
    factor = floor((2 ** 31 - 1) / exp_int_sum)
    return floor(exp_int * factor / 2 ** (31 - output_bit + 1))


def int_gelu(x_int, scale, *, output_bit=8, n=23, dtype=torch.float64):
    pre_x_int = x_int.to(dtype)
    scaling_factor = torch.tensor(scale, dtype=torch.float32)
    scaling_factor_sig = scaling_factor * 1.702
    x_int_max, _ = pre_x_int.max(dim=-1, keepdim=True)
    x_int = pre_x_int - x_int_max
    exp_int = int_exp_shift(x_int, scaling_factor_sig, n)
    exp_int_max = int_exp_shift(-x_int_max, scaling_factor_sig, n)
    exp_int_sum = exp_int + exp_int_max
    exp_int_sum.clamp_max_(2 ** 31 - 1)
    factor = floor((2 ** 31 - 1) / exp_int_sum)
    sigmoid_int = floor(exp_int * factor / 2 ** (31 - output_bit + 1))
    return pre_x_int * sigmoid_int


def int_layernorm(x_int, weight, bias, *, dtype=torch.float64):
    x_int = x_int.to(dtype)
    n = torch.tensor(x_int.shape[-1], dtype=torch.float)
    dim_sqrt = torch.sqrt(n)
    mean_int = torch.round(x_int.mean(axis=-1, keepdim=True))
    y_int = x_int - mean_int
    y_sq_int = y_int ** 2
    var_int = torch.sum(y_sq_int, axis=-1, keepdim=True)
    k = 2 ** 16
    for _ in range(10):
        k_1 = floor((k + floor(var_int / k)) / 2)
        k = k_1
    std_int = k
    factor = floor((2 ** 31 - 1) / std_int)
    y_int = floor(y_int * factor / 2)
    scaling_factor = dim_sqrt / 2 ** 30
    bias = bias.to(torch.float32) / weight.to(torch.float32)
    bias_int = floor(bias / scaling_factor)
    return y_int + bias_int
