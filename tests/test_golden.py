"""Golden integer models against independent references: Python ints, gemmlowp's definitions
written out again here, float math, and PyTorch's own quantized Linear (FBGEMM)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from golden import (
    QuantLinear,
    check_range,
    gemm_int,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantized_linear_fbgemm,
    requantize,
    rounding_divide_by_pot,
    saturate,
    saturating_rounding_doubling_high_mul,
    wrap,
)

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

# torch 2.13 deprecates creating quantized tensors; the check against torch.ao needs them.
torch_quantized_deprecation = pytest.mark.filterwarnings(
    "ignore:torch.quantize_per_tensor, torch.quantize_per_channel and other quantized tensor "
    "creation functions:UserWarning"
)


# ---- independent scalar references (Python ints, written from the definitions) --------------


def wrap_ref(v: int, bits: int) -> int:
    return (v + 2 ** (bits - 1)) % 2**bits - 2 ** (bits - 1)


def gemm_ref(a: list[list[int]], b: list[list[int]], acc_bits: int) -> list[list[int]]:
    """One MAC at a time into a register of acc_bits bits that wraps."""
    m, k, n = len(a), len(b), len(b[0])
    out = [[0] * n for _ in range(m)]
    for i in range(m):
        for j in range(n):
            acc = 0
            for t in range(k):
                acc = wrap_ref(acc + a[i][t] * b[t][j], acc_bits)
            out[i][j] = acc
    return out


def c_div(p: int, q: int) -> int:
    """C integer division: truncate toward zero."""
    r = abs(p) // abs(q)
    return r if (p >= 0) == (q > 0) else -r


def srdhm_ref(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def rdbpot_ref(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def mbqm_ref(x: int, multiplier: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    shifted = min(max(x * 2**left, INT32_MIN), INT32_MAX)  # our documented choice: saturate
    return rdbpot_ref(srdhm_ref(shifted, multiplier), right)


def quantize_multiplier_ref(real: float) -> tuple[int, int]:
    """Exact rational arithmetic: real = m * 2**(shift - 31), m rounded half away from zero."""
    r = Fraction(real)
    shift = 0
    while r >= Fraction(2) ** shift:
        shift += 1
    while r < Fraction(2) ** (shift - 1):
        shift -= 1
    scaled = r * Fraction(2) ** (31 - shift)
    m = int(scaled + Fraction(1, 2))  # floor of a positive number
    if m == 2**31:
        m, shift = 2**30, shift + 1
    return (0, 0) if shift < -31 else (m, shift)


def rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- gemm -----------------------------------------------------------------------------------


@pytest.mark.parametrize("acc_bits", [32, 20, 16])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 1), (3, 1, 5), (5, 13, 7), (11, 17, 2)])
def test_gemm_matches_wrapping_mac_reference(shape: tuple[int, int, int], acc_bits: int) -> None:
    m, k, n = shape
    g = rng(m * 100 + k * 10 + n + acc_bits)
    a = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), generator=g, dtype=torch.int8)
    expected = torch.tensor(gemm_ref(a.tolist(), b.tolist(), acc_bits), dtype=torch.int64)
    got = gemm_int(a, b, acc_bits=acc_bits)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)


@pytest.mark.parametrize("acc_bits", [32, 20, 16])
def test_gemm_minus128_squared_wraps(acc_bits: int) -> None:
    k = 64  # 64 * 16384 = 2**20: fits 32 bits, is exactly one wrap at 20, many at 16
    a = torch.full((2, k), -128, dtype=torch.int8)
    b = torch.full((k, 3), -128, dtype=torch.int8)
    exact = a.to(torch.int64) @ b.to(torch.int64)
    got = gemm_int(a, b, acc_bits=acc_bits)
    assert torch.equal(got, torch.tensor(gemm_ref(a.tolist(), b.tolist(), acc_bits)))
    assert torch.equal(got == exact, torch.full_like(got, acc_bits == 32, dtype=torch.bool))


def test_gemm_wider_operands_and_order_independence() -> None:
    g = rng(7)
    a = torch.randint(-(2**11), 2**11, (4, 9), generator=g)
    b = torch.randint(-(2**11), 2**11, (9, 5), generator=g)
    expected = torch.tensor(gemm_ref(a.tolist(), b.tolist(), 20))
    assert torch.equal(gemm_int(a, b, in_bits=12, acc_bits=20), expected)
    perm = torch.randperm(9, generator=g)
    assert torch.equal(gemm_int(a[:, perm], b[perm], in_bits=12, acc_bits=20), expected)


def test_gemm_rejects_bad_operands() -> None:
    a = torch.zeros(2, 3, dtype=torch.int8)
    with pytest.raises(ValueError, match=r"inner dimensions differ.*K=3.*K=4"):
        gemm_int(a, torch.zeros(4, 2, dtype=torch.int8))
    with pytest.raises(ValueError, match="b must be a 2-D tensor"):
        gemm_int(a, torch.zeros(3, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"b holds 128 at index \(1, 0\)"):
        gemm_int(a, torch.tensor([[0, 0], [128, 0], [0, 0]]))
    with pytest.raises(ValueError, match=r"a holds -129"):
        gemm_int(torch.full((2, 3), -129), torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer dtype"):
        gemm_int(a.float(), torch.zeros(3, 2, dtype=torch.int8))
    with pytest.raises(ValueError, match="in_bits"):
        gemm_int(a, torch.zeros(3, 2, dtype=torch.int8), in_bits=0)


@pytest.mark.parametrize("bits", [1, 2, 8, 16, 20, 32, 63, 64])
def test_wrap_and_saturate_match_python_ints(bits: int) -> None:
    g = rng(bits)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    values = torch.randint(-(2**62), 2**62, (200,), generator=g, dtype=torch.int64).tolist()
    values += [
        v for v in (lo, hi, lo - 1, hi + 1, 0, -1, 2**63 - 1, -(2**63)) if -(2**63) <= v < 2**63
    ]
    x = torch.tensor(values, dtype=torch.int64)
    assert wrap(x, bits).tolist() == [wrap_ref(v, bits) for v in values]
    assert saturate(x, bits).tolist() == [min(max(v, lo), hi) for v in values]


def test_check_range_names_tensor_and_value() -> None:
    assert torch.equal(
        check_range(torch.tensor([127, -128], dtype=torch.int8), 8, "w"), torch.tensor([127, -128])
    )
    with pytest.raises(ValueError, match=r"acc holds 32768 at index \(2,\).*signed 16-bit"):
        check_range(torch.tensor([0, 5, 32768]), 16, "acc")
    with pytest.raises(ValueError, match="acc must have an integer dtype"):
        check_range(torch.tensor([0.0]), 16, "acc")
    with pytest.raises(ValueError, match="acc must have an integer dtype"):
        check_range(torch.tensor([True]), 16, "acc")


# ---- gemmlowp fixed point -------------------------------------------------------------------


@pytest.mark.parametrize(
    "real",
    [
        0.5,
        0.25,
        1.0,
        0.75,
        1 - 2**-31,
        1 - 2**-32,
        1 - 2**-33,
        2**-31,
        2**-32,
        2**-33,
        3.0,
        1e-3,
        0.1,
        12345.678,
        2**-20 * (1 - 2**-40),
        0.5 + 2**-32,
        0.5 + 3 * 2**-32,
    ],  # q * 2**31 = even + 0.5, odd + 0.5: ties away from zero
)
def test_quantize_multiplier_matches_exact_rational(real: float) -> None:
    assert quantize_multiplier(real) == quantize_multiplier_ref(real)


def test_quantize_multiplier_known_values_and_fixup() -> None:
    assert quantize_multiplier(0.5) == (2**30, 0)
    assert quantize_multiplier(0.25) == (2**30, -1)
    assert quantize_multiplier(1.0) == (2**30, 1)
    assert quantize_multiplier(1 - 2**-31) == (2**31 - 1, 0)  # no fixup: q*2**31 = 2**31 - 1
    assert quantize_multiplier(1 - 2**-33) == (2**30, 1)  # rounds to 2**31 -> fixup
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2**-40) == (0, 0)  # shift < -31 flushes to zero
    with pytest.raises(ValueError, match="finite and >= 0"):
        quantize_multiplier(-0.5)
    with pytest.raises(ValueError, match="finite and >= 0"):
        quantize_multiplier(float("nan"))


def test_quantize_multiplier_random_against_rational() -> None:
    gen = np.random.default_rng(3)
    for real in np.exp(gen.uniform(-21, 5, 300)).tolist():
        m, s = quantize_multiplier(real)
        assert (m, s) == quantize_multiplier_ref(real)
        assert 2**30 <= m < 2**31
        assert abs(Fraction(m) * Fraction(2) ** (s - 31) - Fraction(real)) <= (
            Fraction(2) ** (s - 32)
        )


SRDHM_CORNERS = [
    INT32_MIN,
    INT32_MIN + 1,
    -(2**30) - 1,
    -(2**30),
    -3,
    -1,
    0,
    1,
    3,
    2**30,
    2**30 + 1,
    INT32_MAX - 1,
    INT32_MAX,
]


def test_srdhm_corners_against_scalar_definition() -> None:
    a = torch.tensor(SRDHM_CORNERS)[:, None]
    b = torch.tensor(SRDHM_CORNERS)[None, :]
    got = saturating_rounding_doubling_high_mul(a, b)
    expected = [[srdhm_ref(x, y) for y in SRDHM_CORNERS] for x in SRDHM_CORNERS]
    assert got.tolist() == expected
    assert int(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN)) == INT32_MAX
    # Exact ties: +0.5 rounds up, -0.5 and -1.5 round toward +inf too (gemmlowp's nudge).
    assert saturating_rounding_doubling_high_mul(torch.tensor([1, -1, -3, 3]), 2**30).tolist() == [
        srdhm_ref(v, 2**30) for v in (1, -1, -3, 3)
    ]
    assert saturating_rounding_doubling_high_mul(torch.tensor([1, -1, -3]), 2**30).tolist() == [
        1,
        0,
        -1,
    ]


def test_srdhm_random_against_scalar_definition() -> None:
    g = rng(11)
    a = torch.randint(INT32_MIN, INT32_MAX, (2000,), generator=g)
    b = torch.randint(INT32_MIN, INT32_MAX, (2000,), generator=g)
    got = saturating_rounding_doubling_high_mul(a, b).tolist()
    assert got == [srdhm_ref(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True)]


def test_rounding_divide_by_pot_ties_and_all_exponents() -> None:
    assert rounding_divide_by_pot(torch.tensor([5, -5, 3, -3, 4, -4]), 1).tolist() == [
        3,
        -3,
        2,
        -2,
        2,
        -2,
    ]
    g = rng(12)
    x = torch.cat(
        [
            torch.randint(INT32_MIN, INT32_MAX, (64,), generator=g),
            torch.tensor([INT32_MIN, INT32_MAX, 0, -1, 1, -(2**30), 2**30]),
        ]
    )
    e = torch.arange(32)
    got = rounding_divide_by_pot(x[:, None], e[None, :])
    expected = [[rdbpot_ref(v, s) for s in range(32)] for v in x.tolist()]
    assert got.tolist() == expected
    with pytest.raises(ValueError, match="exponent holds 32"):
        rounding_divide_by_pot(x, 32)


def test_multiply_by_quantized_multiplier_per_channel() -> None:
    g = rng(13)
    n = 12
    x = torch.randint(INT32_MIN, INT32_MAX, (20, n), generator=g)
    x[0] = torch.tensor([INT32_MIN, INT32_MAX] * (n // 2))  # saturating left shifts
    multiplier = torch.randint(2**30, 2**31, (n,), generator=g)
    shift = torch.tensor([-31, -20, -9, -5, -1, 0, 0, 1, 2, 5, -3, 3])
    got = multiply_by_quantized_multiplier(x, multiplier, shift)
    expected = [
        [mbqm_ref(v, int(multiplier[j]), int(shift[j])) for j, v in enumerate(row)]
        for row in x.tolist()
    ]
    assert got.tolist() == expected
    assert got.min() >= INT32_MIN and got.max() <= INT32_MAX


def test_requantize_within_one_lsb_of_float() -> None:
    g = rng(14)
    m, n = 64, 24
    acc = torch.randint(-(2**20), 2**20, (m, n), generator=g)
    bias = torch.randint(-(2**16), 2**16, (n,), generator=g)
    reals = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-15, -5, generator=g))
    pairs = [quantize_multiplier(r) for r in reals.tolist()]
    multiplier = torch.tensor([p[0] for p in pairs])
    shift = torch.tensor([p[1] for p in pairs])
    zp = -7
    got = requantize(acc, multiplier, shift, bias=bias, zero_point=zp)
    real = (acc + bias).to(torch.float64) * reals
    expected = (torch.round(real) + zp).clamp(-128, 127).to(torch.int64)
    diff = (got - expected).abs()
    assert int(diff.max()) <= 1
    assert float((diff == 0).double().mean()) > 0.95
    assert int(got.min()) == -128 and int(got.max()) == 127  # the data reaches both rails


def test_requantize_saturation_relu_and_bias_wrap() -> None:
    multiplier, shift = quantize_multiplier(0.01)
    acc = torch.tensor([[10**6, -(10**6), 0, 300, -300, INT32_MAX]])
    bias = torch.tensor([0, 0, 0, 0, 0, 1])  # INT32_MAX + 1 wraps to INT32_MIN
    plain = requantize(acc, multiplier, shift, bias=bias, zero_point=5, qmin=-100, qmax=90)
    relu = requantize(
        acc, multiplier, shift, bias=bias, zero_point=5, qmin=-100, qmax=90, relu=True
    )
    ref = [
        mbqm_ref(wrap_ref(a + b, 32), multiplier, shift) + 5
        for a, b in zip(acc[0].tolist(), bias.tolist(), strict=True)
    ]
    assert plain[0].tolist() == [min(max(v, -100), 90) for v in ref]
    assert relu[0].tolist() == [min(max(v, 5), 90) for v in ref]
    assert plain[0].tolist()[:2] == [90, -100] and relu[0].tolist()[1] == 5
    with pytest.raises(ValueError, match="zero_point"):
        requantize(acc, multiplier, shift, zero_point=200)
    with pytest.raises(ValueError, match="acc holds"):
        requantize(torch.tensor([[2**31]]), multiplier, shift)


# ---- FBGEMM, against torch.ao.nn.quantized.Linear -------------------------------------------


@pytest.fixture
def fbgemm_engine() -> Iterator[None]:
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no fbgemm engine")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    yield
    torch.backends.quantized.engine = previous


def torch_linear(
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    w_zp: torch.Tensor,
    bias: torch.Tensor | None,
    out_scale: float,
    out_zp: int,
    *,
    per_channel: bool,
    relu: bool = False,
) -> torch.nn.Module:
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    n, k = w_q.shape
    if per_channel:
        w = torch._make_per_channel_quantized_tensor(w_q.to(torch.int8), w_scale, w_zp, 0)
    else:
        w = torch._make_per_tensor_quantized_tensor(w_q.to(torch.int8), float(w_scale), int(w_zp))
    layer = nniq.LinearReLU(k, n) if relu else nnq.Linear(k, n)
    layer.set_weight_bias(w, bias)
    layer.scale = out_scale
    layer.zero_point = out_zp
    return layer


def torch_input(x_q: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
    """quint8 activations through torch.quantize_per_tensor, checked to hold exactly ``x_q``."""
    x = torch.quantize_per_tensor((x_q - zp).to(torch.float32) * scale, scale, zp, torch.quint8)
    assert torch.equal(x.int_repr().to(torch.int64), x_q.to(torch.int64))
    return x


FBGEMM_CASES = [
    # (M, K, N, x_zp, out_zp, w_zp)
    (1, 1, 1, 0, 0, 0),
    (4, 16, 8, 128, 128, 0),
    (7, 33, 19, 255, 3, 2),
    (16, 64, 40, 17, 250, -3),
    (3, 130, 9, 90, 64, 1),
]


@torch_quantized_deprecation
@pytest.mark.usefixtures("fbgemm_engine")
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("case", FBGEMM_CASES)
def test_fbgemm_equals_torch_quantized_linear(
    case: tuple[int, int, int, int, int, int], per_channel: bool, with_bias: bool
) -> None:
    m, k, n, x_zp, out_zp, w_zp = case
    g = rng(m * 1000 + k * 10 + n + 7 * per_channel + with_bias)
    x_q = torch.randint(0, 256, (m, k), generator=g)
    w_q = torch.randint(-128, 128, (n, k), generator=g)
    x_scale = float(torch.empty(()).uniform_(0.002, 0.05, generator=g))
    out_scale = float(torch.empty(()).uniform_(0.02, 0.4, generator=g))
    if per_channel:
        w_scale = torch.empty(n, dtype=torch.float64).uniform_(0.001, 0.02, generator=g)
        w_zero = torch.randint(-abs(w_zp), abs(w_zp) + 1, (n,), generator=g)
    else:
        w_scale = torch.tensor(float(torch.empty(()).uniform_(0.001, 0.02, generator=g)))
        w_zero = torch.tensor(w_zp)
    bias = torch.randn(n, generator=g) * 3 if with_bias else None

    layer = torch_linear(w_q, w_scale, w_zero, bias, out_scale, out_zp, per_channel=per_channel)
    expected = layer(torch_input(x_q, x_scale, x_zp)).int_repr().to(torch.int64)
    got = quantized_linear_fbgemm(
        x_q,
        x_scale,
        x_zp,
        w_q,
        w_scale if per_channel else float(w_scale),
        w_zero if per_channel else int(w_zero),
        bias,
        out_scale,
        out_zp,
    )
    assert torch.equal(got, expected)
    if m * n > 1:  # not a degenerate all-zero-point output
        assert int((expected != out_zp).sum()) > 0


@torch_quantized_deprecation
@pytest.mark.usefixtures("fbgemm_engine")
@pytest.mark.parametrize("per_channel", [False, True])
def test_fbgemm_linear_relu_equals_torch(per_channel: bool) -> None:
    g = rng(21 + per_channel)
    n, k = 24, 40
    x_q = torch.randint(0, 256, (9, k), generator=g)
    w_q = torch.randint(-128, 128, (n, k), generator=g)
    w_scale = torch.full((n,) if per_channel else (), 0.01, dtype=torch.float64)
    w_zero = torch.zeros(n if per_channel else (), dtype=torch.int64)
    bias = torch.randn(n, generator=g)
    layer = torch_linear(w_q, w_scale, w_zero, bias, 0.2, 100, per_channel=per_channel, relu=True)
    expected = layer(torch_input(x_q, 0.02, 120)).int_repr().to(torch.int64)
    got = quantized_linear_fbgemm(
        x_q,
        0.02,
        120,
        w_q,
        w_scale if per_channel else 0.01,
        w_zero if per_channel else 0,
        bias,
        0.2,
        100,
        relu=True,
    )
    assert torch.equal(got, expected)
    assert int((expected == 100).sum()) > 0 and int((expected > 100).sum()) > 0


def _bias_rounding_cases(count: int) -> list[tuple[float, float, float, float]]:
    """Scales and biases where bias/s_xw and bias*(1/s_xw) round to different outputs."""
    gen = np.random.default_rng(5)
    f32 = np.float32
    found: list[tuple[float, float, float, float]] = []
    while len(found) < count:
        xs, ws, os_ = (f32(gen.uniform(*r)) for r in ((1e-3, 5e-2), (1e-3, 2e-2), (5e-2, 0.5)))
        s_xw = f32(xs * ws)
        mult = f32(s_xw / os_)
        bias = f32((gen.integers(-100, 100) + 0.5) * float(os_))
        by_div = np.rint(f32(f32(bias / s_xw) * mult))
        by_rcp = np.rint(f32(f32(bias * f32(1.0 / float(s_xw))) * mult))
        if by_div != by_rcp:
            found.append((float(xs), float(ws), float(os_), float(bias)))
    return found


@torch_quantized_deprecation
@pytest.mark.usefixtures("fbgemm_engine")
def test_fbgemm_bias_reciprocal_per_tensor_division_per_channel() -> None:
    """Per-tensor FBGEMM multiplies bias by a reciprocal; per-channel divides. Cases where the
    two disagree after rounding must still match torch in both granularities."""
    k, n = 5, 3
    x_q = torch.full((1, k), 7)  # equal to the zero point: the integer part is exactly 0
    w_q = torch.randint(-128, 128, (n, k), generator=rng(22))
    outputs: dict[bool, list[int]] = {False: [], True: []}
    for xs, ws, os_, b in _bias_rounding_cases(4):
        bias = torch.full((n,), b)
        for per_channel in (False, True):
            w_scale = torch.full((n,), ws, dtype=torch.float64) if per_channel else torch.tensor(ws)
            w_zero = torch.zeros(n, dtype=torch.int64) if per_channel else torch.tensor(0)
            layer = torch_linear(w_q, w_scale, w_zero, bias, os_, 128, per_channel=per_channel)
            expected = layer(torch_input(x_q, xs, 7)).int_repr().to(torch.int64)
            got = quantized_linear_fbgemm(
                x_q,
                xs,
                7,
                w_q,
                w_scale if per_channel else ws,
                w_zero if per_channel else 0,
                bias,
                os_,
                128,
            )
            assert torch.equal(got, expected)
            outputs[per_channel].append(int(got[0, 0]))
    assert all(a != b for a, b in zip(outputs[False], outputs[True], strict=True))


@torch_quantized_deprecation
@pytest.mark.usefixtures("fbgemm_engine")
def test_fbgemm_float_to_int32_overflow_gives_zero_like_torch() -> None:
    """cvtps2dq turns an out-of-int32 float into INT32_MIN: a huge positive bias gives 0."""
    k, n = 4, 6
    w_q = torch.randint(-128, 128, (n, k), generator=rng(23))
    bias = torch.tensor([1e9, -1e9, 1e6, 3e4, 1e38, 1.0])
    x_q = torch.randint(0, 256, (3, k), generator=rng(24))
    layer = torch_linear(
        w_q, torch.tensor(0.01), torch.tensor(0), bias, 0.1, 100, per_channel=False
    )
    expected = layer(torch_input(x_q, 0.01, 3)).int_repr().to(torch.int64)
    got = quantized_linear_fbgemm(x_q, 0.01, 3, w_q, 0.01, 0, bias, 0.1, 100)
    assert torch.equal(got, expected)
    assert got[:, 0].tolist() == [0, 0, 0] and got[:, 2].tolist() == [255, 255, 255]


_PAIR_SATURATION_SCRIPT = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("ignore")
    import torch
    import torch.ao.nn.quantized as nnq
    from golden import fbgemm_int16_pair_saturation, quantized_linear_fbgemm

    torch.backends.quantized.engine = "fbgemm"
    g = torch.Generator().manual_seed(0)
    m, k, n = 6, 37, 11
    x_q = torch.randint(200, 256, (m, k), generator=g)  # large u8 ...
    w_q = torch.randint(-128, 128, (n, k), generator=g)
    w_q[:, ::2] = -128  # ... times -128 pairs overflow int16
    w = torch._make_per_tensor_quantized_tensor(w_q.to(torch.int8), 1e-4, 0)
    layer = nnq.Linear(k, n)
    layer.set_weight_bias(w, None)
    layer.scale, layer.zero_point = 0.05, 128
    x = torch.quantize_per_tensor(x_q.float() * 0.01, 0.01, 0, torch.quint8)
    assert torch.equal(x.int_repr().to(torch.int64), x_q)
    out = layer(x).int_repr().to(torch.int64)
    args = (x_q, 0.01, 0, w_q, 1e-4, 0, None, 0.05, 128)
    auto = quantized_linear_fbgemm(*args)
    exact = quantized_linear_fbgemm(*args, int16_pair_saturation=False)
    print(fbgemm_int16_pair_saturation(), torch.equal(auto, out), torch.equal(exact, out))
    """
)


def _has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or not _has_avx2(),
    reason="FBGEMM's AVX2 kernel needs an x86 host with AVX2",
)
def test_fbgemm_avx2_int16_pair_saturation_in_subprocess() -> None:
    """Force FBGEMM's pre-VNNI kernel (FBGEMM reads the variable once per process, hence the
    subprocess): the golden model must predict its int16 saturation, and the exact product must
    then disagree with torch."""
    env = dict(os.environ, FBGEMM_ENABLE_INSTRUCTIONS="AVX2")
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", _PAIR_SATURATION_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "False"]


def test_fbgemm_rejects_bad_arguments() -> None:
    x_q = torch.zeros(2, 3, dtype=torch.int64)
    w_q = torch.zeros(4, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="x_q holds 256"):
        quantized_linear_fbgemm(x_q + 256, 0.1, 0, w_q, 0.1, 0, None, 0.1, 0)
    with pytest.raises(ValueError, match="per-channel w_scale needs N=4"):
        quantized_linear_fbgemm(x_q, 0.1, 0, w_q, [0.1, 0.2], 0, None, 0.1, 0)
    with pytest.raises(ValueError, match="out_zero_point"):
        quantized_linear_fbgemm(x_q, 0.1, 0, w_q, 0.1, 0, None, 0.1, -1)
    with pytest.raises(ValueError, match="x_scale must be finite and > 0"):
        quantized_linear_fbgemm(x_q, 0.0, 0, w_q, 0.1, 0, None, 0.1, 0)


# ---- QuantLinear ----------------------------------------------------------------------------


def _calibrated_layer(
    seed: int, k: int, n: int, *, bias: bool = True
) -> tuple[torch.nn.Linear, torch.Tensor, QuantLinear]:
    torch.manual_seed(seed)
    linear = torch.nn.Linear(k, n, bias=bias)
    x = torch.randn(32, k) * 2 + 0.5
    in_scale = float(x.max() - x.min()) / 255
    in_zp = int(round(-128 - float(x.min()) / in_scale))
    with torch.no_grad():
        y = linear(x)
    out_scale = float(y.max() - y.min()) / 255
    out_zp = int(round(-128 - float(y.min()) / out_scale))
    layer = QuantLinear.from_float(linear, in_scale, in_zp, out_scale, out_zp)
    x_q = (torch.round(x / layer.in_scale) + layer.in_zero_point).clamp(-128, 127)
    return linear, x_q.to(torch.int64), layer


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1), (16, 8), (37, 23), (64, 48)])
def test_quant_linear_gemmlowp_within_one_lsb_of_float(shape: tuple[int, int], bias: bool) -> None:
    k, n = shape
    _, x_q, layer = _calibrated_layer(k * 31 + n, k, n, bias=bias)
    got = layer.forward_int(x_q, mode="gemmlowp")

    # The float layer the integers stand for, in float64 (exact for these magnitudes).
    float_layer = torch.nn.Linear(k, n, dtype=torch.float64)
    w_scale = layer.weight_scale.to(torch.float64)
    with torch.no_grad():
        float_layer.weight.copy_(layer.weight_q * w_scale[:, None])
        float_layer.bias.copy_(layer.bias_q * layer.in_scale * w_scale)
        y = float_layer((x_q - layer.in_zero_point).to(torch.float64) * layer.in_scale)
    expected = (torch.round(y / layer.out_scale) + layer.out_zero_point).clamp(-128, 127)
    diff = (got - expected.to(torch.int64)).abs()
    assert int(diff.max()) <= 1
    assert got.shape == (32, n) and got.dtype == torch.int64


def test_quant_linear_input_zero_point_folding_is_exact() -> None:
    _, x_q, layer = _calibrated_layer(41, 29, 13)
    assert layer.in_zero_point != 0
    # Subtract the zero point instead (9-bit operands) and requantize: must be identical.
    acc = gemm_int(x_q - layer.in_zero_point, layer.weight_q.T, in_bits=9, acc_bits=32)
    multiplier, shift = layer.requant_params
    expected = requantize(
        acc, multiplier, shift, bias=layer.bias_q, zero_point=layer.out_zero_point
    )
    assert torch.equal(layer.forward_int(x_q), expected)
    assert multiplier.shape == shift.shape == (13,)
    assert bool(((multiplier >= 2**30) & (multiplier < 2**31)).all())


@torch_quantized_deprecation
@pytest.mark.usefixtures("fbgemm_engine")
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(16, 8), (37, 23)])
def test_quant_linear_fbgemm_equals_torch(shape: tuple[int, int], bias: bool) -> None:
    k, n = shape
    _, x_q, layer = _calibrated_layer(k * 17 + n, k, n, bias=bias)
    torch_layer = torch_linear(
        layer.weight_q,
        layer.weight_scale.to(torch.float64),
        torch.zeros(n, dtype=torch.int64),
        layer.bias_float,
        layer.out_scale,
        layer.out_zero_point + 128,
        per_channel=True,
    )
    x = torch_input(x_q + 128, layer.in_scale, layer.in_zero_point + 128)
    expected = torch_layer(x).int_repr().to(torch.int64) - 128
    got = layer.forward_int(x_q, mode="fbgemm")
    assert torch.equal(got, expected)
    gemmlowp = layer.forward_int(x_q, mode="gemmlowp")
    assert int((gemmlowp - got).abs().max()) <= 1  # the two arithmetics differ by rounding only


def test_quant_linear_validates() -> None:
    linear = torch.nn.Linear(4, 3)
    layer = QuantLinear.from_float(linear, 0.1, 0, 0.1, 0)
    assert int(layer.weight_q.abs().max()) == 127 and int(layer.weight_q.min()) >= -127
    with pytest.raises(ValueError, match="mode must be"):
        layer.forward_int(torch.zeros(1, 4, dtype=torch.int64), mode="float")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x_q has K=5"):
        layer.forward_int(torch.zeros(1, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="in_zero_point"):
        QuantLinear.from_float(linear, 0.1, 128, 0.1, 0)
    with pytest.raises(ValueError, match="in_scale must be finite and > 0"):
        QuantLinear.from_float(linear, -0.1, 0, 0.1, 0)
