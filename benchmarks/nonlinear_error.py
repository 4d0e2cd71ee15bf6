"""Integer vs float: the error of each integer non-linear (``golden.nonlinear``, I-ViT's scheme)
and of a whole encoder block (``golden.layer``), over realistic input ranges.

    python benchmarks/nonlinear_error.py [--seed S] [--rows R]

Softmax: int8 logits whose float range is +-4, +-8, +-16 (rows of 197, Gaussian with a third of
the range as deviation, then clipped), against ``torch.softmax`` of the same dequantized
logits, in probability units. GELU: int8 inputs of range +-4, +-8, +-16 (Gaussian), against
exact GELU of the dequantized input, in the output's units. Layernorm: 16-bit residual-stream
rows at three magnitudes, gamma ~ N(1, 0.2), beta ~ N(0, 0.1), against ``F.layer_norm``. The
block: DeiT-Tiny's (192, 3 heads, 768) and DeiT-Small's (384, 6, 1536) at 197 tokens, GPT-2's
shape at 64 tokens with the causal mask, random weights (PyTorch's default init, layernorm as
above), calibrated on one input and measured on another.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golden.layer import EncoderBlock, IntEncoderBlock, layer_error  # noqa: E402
from golden.nonlinear import (  # noqa: E402
    gelu_out_scale,
    i_layernorm,
    layernorm_constants,
    shift_gelu,
    shiftmax,
    softmax_out_scale,
)


def _int8(x: torch.Tensor, limit: float) -> tuple[torch.Tensor, float]:
    scale = limit / 127
    return torch.round(x / scale).clamp(-128, 127).to(torch.int64), scale


def softmax_rows(gen: torch.Generator, rows: int):
    for limit in (4.0, 8.0, 16.0):
        x, s = _int8(torch.randn(rows, 197, generator=gen) * limit / 3, limit)
        ref = torch.softmax(x.to(torch.float64) * s, dim=-1)
        for bits in (8, 16):
            got = shiftmax(x, s, out_bits=bits).to(torch.float64) * softmax_out_scale(bits)
            yield f"softmax, logits +-{limit:g}, {bits}-bit out", (got - ref).abs()


def gelu_rows(gen: torch.Generator, rows: int):
    for limit in (4.0, 8.0, 16.0):
        x, s = _int8(torch.randn(rows, 768, generator=gen) * limit / 3, limit)
        ref = torch.nn.functional.gelu(x.to(torch.float64) * s)
        got = shift_gelu(x, s).to(torch.float64) * gelu_out_scale(s)
        yield f"GELU, input +-{limit:g}", (got - ref).abs()


def layernorm_rows(gen: torch.Generator, rows: int):
    d = 768
    gamma = torch.randn(d, generator=gen) * 0.2 + 1
    beta = torch.randn(d, generator=gen) * 0.1
    c = layernorm_constants(gamma, beta)
    for peak in (300, 3000, 30000):
        x = (torch.randn(rows, d, generator=gen) * peak / 4).round().clamp(-32768, 32767)
        x = x.to(torch.int64)
        s = 1.0 / 1000   # any: layernorm drops its input's scale
        ref = torch.nn.functional.layer_norm(x.to(torch.float64) * s, (d,), gamma.double(),
                                             beta.double(), eps=0.0)
        got = i_layernorm(x, c.bias_int).to(torch.float64) * c.out_scale.double()
        yield f"layernorm, 16-bit rows of |x| ~{peak}", (got - ref).abs()


def block_rows(gen: torch.Generator):
    for name, dim, heads, ffn, n, causal in (("DeiT-Tiny block", 192, 3, 768, 197, False),
                                             ("DeiT-Small block", 384, 6, 1536, 197, False),
                                             ("GPT-2 block, causal", 768, 12, 3072, 64, True)):
        torch.manual_seed(int(torch.randint(0, 2 ** 31, (1,), generator=gen)))
        block = EncoderBlock(dim, heads, ffn, causal=causal)
        with torch.no_grad():
            for norm in (block.norm1, block.norm2):
                norm.weight.normal_(1, 0.2)
                norm.bias.normal_(0, 0.1)
        calib, test = torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen)
        ib = IntEncoderBlock.from_float(block, calib)
        with torch.no_grad():
            ref = block(test)
        out, _ = ib.forward(ib.quantize_input(test))
        yield name, layer_error(ref, ib.dequantize_output(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=256, help="rows per function case")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{'function, inputs':44} {'max abs err':>12} {'mean abs err':>13}")
    for rows in (softmax_rows(gen, args.rows), gelu_rows(gen, args.rows),
                 layernorm_rows(gen, args.rows)):
        for label, err in rows:
            print(f"{label:44} {float(err.max()):12.5f} {float(err.mean()):13.6f}")
    print()
    print(f"{'encoder block (int vs float)':28} {'max abs':>9} {'mean abs':>9} "
          f"{'max/peak':>9} {'mean/peak':>10} {'cosine':>8}")
    for label, e in block_rows(gen):
        print(f"{label:28} {e.max_abs:9.4f} {e.mean_abs:9.4f} {e.max_rel:9.4f} "
              f"{e.mean_rel:10.5f} {e.cosine:8.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
