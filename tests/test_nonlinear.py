"""The integer non-linears (``golden.nonlinear``) and the integer encoder block
(``golden.layer``): I-ViT's operators exactly, their float error, and bad input refused."""

from __future__ import annotations

import ivit_reference as ref
import pytest
import torch

from golden.layer import EncoderBlock, IntEncoderBlock, layer_error
from golden.nonlinear import (
    INT31_MAX,
    gelu_out_scale,
    gelu_x0,
    i_layernorm,
    ivit_sqrt,
    layernorm_constants,
    round_half_even_div,
    shift_exp,
    shift_gelu,
    shiftmax,
    softmax_out_scale,
    softmax_x0,
)


def _ints(t: torch.Tensor) -> torch.Tensor:
    assert bool((t == t.floor()).all()), "the reference left the integers"
    return t.to(torch.int64)


# --- I-ViT's code, transcribed in float64 (exact there), equals the int64 golden ---------------


@pytest.mark.parametrize("seed", range(6))
def test_shiftmax_equals_ivit(seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(25):
        d = int(torch.randint(1, 300, (1,), generator=gen))
        scale = float(torch.empty(1).uniform_(0.002, 1.0, generator=gen))
        x = torch.randint(-128, 128, (4, d), generator=gen)
        for bits in (8, 16):
            assert torch.equal(shiftmax(x, scale, out_bits=bits),
                               _ints(ref.int_softmax(x, scale, output_bit=bits)))


@pytest.mark.parametrize("seed", range(6))
def test_shift_gelu_equals_ivit(seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(25):
        d = int(torch.randint(1, 800, (1,), generator=gen))
        scale = float(torch.empty(1).uniform_(0.003, 1.0, generator=gen))
        x = torch.randint(-128, 128, (3, d), generator=gen)
        # rows wholly negative: e^(-max) of a negative maximum shifts far left (saturates)
        x[2] = -torch.randint(1, 129, (d,), generator=gen)
        assert torch.equal(shift_gelu(x, scale), _ints(ref.int_gelu(x, scale)))


@pytest.mark.parametrize("seed", range(6))
def test_layernorm_equals_ivit(seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(20):
        d = int(torch.randint(1, 1100, (1,), generator=gen))
        x = torch.randint(-32768, 32768, (3, d), generator=gen)
        x = x // int(torch.randint(1, 2000, (1,), generator=gen))   # small and large variances
        gamma = torch.randn(d, generator=gen) * 0.5
        beta = torch.randn(d, generator=gen) * 0.2
        gamma[gamma.abs() < 1e-3] = 0.5
        c = layernorm_constants(gamma, beta)
        assert torch.equal(i_layernorm(x, c.bias_int), _ints(ref.int_layernorm(x, gamma, beta)))


def test_float32_reference_rounds_where_int64_does_not():
    """I-ViT's own float32 arithmetic rounds ``y * factor`` (up to 2**48): the named quirk
    that is *not* copied. The float64 transcription and the golden agree on every element."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(-32768, 32768, (8, 768), generator=gen)
    gamma, beta = torch.ones(768), torch.zeros(768)
    c = layernorm_constants(gamma, beta)
    golden = i_layernorm(x, c.bias_int)
    assert torch.equal(golden, _ints(ref.int_layernorm(x, gamma, beta)))
    f32 = ref.int_layernorm(x, gamma, beta, dtype=torch.float32).to(torch.int64)
    assert int((f32 != golden).sum()) > 100


# --- the quirks, the widths and the extremes ---------------------------------------------------


def test_sqrt_is_ivits_ten_steps():
    v = torch.tensor([10_000, 0, 1, 1 << 32, 1 << 40, 12_345_678_901])
    k = ivit_sqrt(v)
    assert k.tolist()[:4] == [108, 64, 64, 65536]   # not converged below ~2**14, as I-ViT
    assert int(k[4]) == 1 << 20
    assert int(k[5]) == 111_111                       # converged: floor(sqrt(v))
    assert int(ivit_sqrt(torch.tensor([10_000]), iterations=16)) == 100


def test_round_half_even_div():
    num = torch.arange(-20, 21)
    for den in (1, 2, 3, 4, 7, 10):
        want = torch.round(num.to(torch.float64) / den).to(torch.int64)
        assert torch.equal(round_half_even_div(num, den), want)


def test_shift_exp_bounds_and_shape():
    x0 = softmax_x0(0.05)
    assert x0 == -20
    x = torch.arange(-300, 1)
    e = shift_exp(x, x0, 15)
    assert int(e[-1]) == (-2 * x0) << 14   # exp(0) = 2**15 |x0|... at the top of its range
    assert bool((e[1:] >= e[:-1]).all())    # monotonic
    assert int(e.max()) < 1 << 31
    assert gelu_x0(0.05) == -12             # floor(-1 / (1.702 * 0.05)) in float32


def test_shiftmax_extremes():
    # rows of length 1: everything in the one element
    assert shiftmax(torch.tensor([[5], [-128]]), 0.1).tolist() == [[127], [127]]
    # all equal: uniform
    out = shiftmax(torch.full((1, 37), -128), 0.1)
    assert len(set(out.flatten().tolist())) == 1
    # one huge: it takes (almost) all, the rest nothing
    x = torch.full((1, 50), -128)
    x[0, 17] = 127
    out = shiftmax(x, 0.1)
    assert int(out[0, 17]) == 127 and int(out.sum()) == 127
    # outputs never leave [0, 2**(b-1) - 1], on the largest rows too
    x = torch.randint(-128, 128, (5, 4099), generator=torch.Generator().manual_seed(3))
    for bits in (8, 16):
        out = shiftmax(x, 0.01, out_bits=bits)
        assert int(out.min()) >= 0 and int(out.max()) <= (1 << (bits - 1)) - 1
    assert softmax_out_scale(8) == 2 ** -7


def test_shiftmax_mask_is_the_kept_subset():
    gen = torch.Generator().manual_seed(4)
    n = 23
    x = torch.randint(-128, 128, (n, n), generator=gen)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    out = shiftmax(x, 0.07, mask=causal)
    for i in range(n):
        assert torch.equal(out[i, :i + 1], shiftmax(x[i:i + 1, :i + 1], 0.07)[0])
        assert int(out[i, i + 1:].abs().sum()) == 0


def test_gelu_shape_and_range():
    x = torch.arange(-128, 128)[None, :]
    y = shift_gelu(x, 0.05)
    assert int(y[0, 128]) == 0                  # gelu(0) = 0
    s = gelu_out_scale(0.05)
    real = y.to(torch.float64) * s
    ref_gelu = torch.nn.functional.gelu(x.to(torch.float64) * 0.05)
    assert float((real - ref_gelu).abs().max()) < 0.25   # inputs +-6.4
    assert int(y.abs().max()) < 128 * 128


def test_layernorm_widths():
    x = torch.tensor([[32767, -32768] * 384])
    c = layernorm_constants(torch.ones(768), torch.zeros(768))
    y = i_layernorm(x, c.bias_int)
    assert int(y.abs().max()) <= 1 << 30
    flat = i_layernorm(torch.full((1, 10), 1234), c.bias_int[:10])   # zero variance: 0, bias
    assert torch.equal(flat, c.bias_int[:10][None, :])


@pytest.mark.parametrize("call, message", [
    (lambda: shiftmax(torch.tensor([[0.5]]), 0.1), "integer dtype"),
    (lambda: shiftmax(torch.tensor([[200]]), 0.1), "outside"),
    (lambda: shiftmax(torch.tensor([[1]]), 0.0), "scale must be"),
    (lambda: shiftmax(torch.tensor([[1]]), 1e-6), "too small"),
    (lambda: shiftmax(torch.zeros(2, 3, dtype=torch.int64), 0.1,
                      mask=torch.tensor([[True] * 3, [False] * 3])), "every element masked"),
    (lambda: shiftmax(torch.zeros(2, 3, dtype=torch.int64), 0.1,
                      mask=torch.ones(4, dtype=torch.bool)), "does not broadcast"),
    (lambda: shiftmax(torch.zeros(2, 0, dtype=torch.int64), 0.1), "D >= 1"),
    (lambda: shift_gelu(torch.tensor([[1]]), 0.001), "too small"),
    (lambda: layernorm_constants(torch.tensor([1.0, 0.0]), torch.zeros(2)), "gamma is 0"),
    (lambda: i_layernorm(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(4)), "bias_int"),
    (lambda: ivit_sqrt(torch.tensor([4]), iterations=0), "iterations"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the block ----------------------------------------------------------------------------------


def _block(dim, heads, ffn, causal, seed):
    torch.manual_seed(seed)
    block = EncoderBlock(dim, heads, ffn, causal=causal)
    with torch.no_grad():
        for norm in (block.norm1, block.norm2):
            norm.weight.normal_(1, 0.2)
            norm.bias.normal_(0, 0.1)
        block.norm2.weight[0] = -0.7             # a negative gamma takes the sign path
    return block


@pytest.mark.parametrize("dim, heads, ffn, n, causal",
                         [(48, 3, 96, 29, False), (64, 2, 256, 17, True)])
def test_int_block_tracks_float(dim, heads, ffn, n, causal):
    block = _block(dim, heads, ffn, causal, seed=dim)
    gen = torch.Generator().manual_seed(n)
    calib, test = torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen)
    ib = IntEncoderBlock.from_float(block, calib)
    out, trace = ib.forward(ib.quantize_input(test))
    with torch.no_grad():
        want, ftrace = block.run(test)
    err = layer_error(want, ib.dequantize_output(out))
    assert err.cosine > 0.995 and err.mean_rel < 0.02, err
    # the integer steps each stay in their widths and follow the float steps
    for name, bits in (("ln1", 8), ("qkv", 8), ("logits", 8), ("probs", 8), ("attn", 8),
                       ("x2", 16), ("ln2", 8), ("fc1", 8), ("gelu", 8), ("out", 16)):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        assert int(trace[name].min()) >= lo and int(trace[name].max()) <= hi, name
    deq = trace["ln2"].to(torch.float64) * ib.scales["ln2"]
    assert float(torch.nn.functional.cosine_similarity(deq.flatten(), ftrace["ln2"].double()
                                                       .flatten(), dim=0)) > 0.99
    if causal:
        assert int(trace["probs"].triu(1).abs().sum()) == 0
    # a second run is the same integers
    again, _ = ib.forward(ib.quantize_input(test))
    assert torch.equal(out, again)


def test_block_refuses_bad_shapes():
    with pytest.raises(ValueError, match="multiple of heads"):
        EncoderBlock(10, 3, 20)
    block = _block(16, 2, 32, False, 0)
    ib = IntEncoderBlock.from_float(block, torch.randn(5, 16))
    with pytest.raises(ValueError, match=r"\(tokens, 16\)"):
        ib.forward(torch.zeros(5, 15, dtype=torch.int64))
    with pytest.raises(ValueError, match="outside"):
        ib.forward(torch.full((5, 16), 40_000))
    assert INT31_MAX == 2 ** 31 - 1
