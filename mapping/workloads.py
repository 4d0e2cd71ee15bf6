"""Workloads: transformer models as lists of operations with shapes and repeat counts.

An :class:`Op` is one operation of one layer, with ``count`` identical instances (layers of the
same shape, heads, windows, images of a batch). GEMM-like ops (``linear``, ``conv`` as im2col,
``matmul`` between activations, ``sign_matmul`` of EcoFormer's hash codes) carry ``(m, k, n)`` for
``C[m x n] = A[m x k] @ B[k x n]``; the rest (``softmax``, ``layernorm``, ``gelu``, ``add``,
``scale``, ``dwconv``, ``hash``, ``divide``) carry the number of elements they produce and, for
``dwconv``, the taps per element.

Sources of the figures:

- ViT / DeiT: Dosovitskiy et al. 2021 (ViT-B/16: 768 wide, 12 layers, 12 heads, MLP 3072, 16x16
  patches), Touvron et al. 2021 (DeiT-Ti 192 / 3 heads, DeiT-S 384 / 6 heads, MLP ratio 4).
- BERT: Devlin et al. 2019 (base 768 / 12 layers / 12 heads / FFN 3072; large 1024 / 24 / 16 /
  4096). GPT-2 (124M): 768 / 12 / 12 / 3072, vocabulary 50257; prefill of ``seq`` tokens, with
  the LM head applied to the last token only (what generation needs).
- PVTv2: Wang et al. 2022, ``whai362/PVT`` ``pvt_v2.py``: overlapping patch embedding (7x7
  stride 4, then 3x3 stride 2, each followed by LayerNorm), spatial-reduction attention with
  ratios 8, 4, 2, 1 (a ratio x ratio stride-ratio conv and a LayerNorm before the K/V
  projection), a depthwise 3x3 conv between the MLP's two linears, a LayerNorm after each stage.
- Swin-T: Liu et al. 2021: 4x4 patches, 96..768 wide, depths 2, 2, 6, 2, heads 3, 6, 12, 24,
  7x7 windows (shifted windows cost the same; the mask and relative position bias are ignored),
  patch merging (LayerNorm of 4C, linear 4C -> 2C) between stages.
- EcoFormer (Liu et al. 2022, ``ziplab/EcoFormer``): per head, RBF kernel distances of each
  query/key to ``m = 25`` anchors, a projection to ``b`` hash bits and their sign, then
  ``G = H^T V``, ``s = H^T 1``, ``(H G) / (H s)``. In their PVTv2 the Q and K projections are
  shared (``to_qk``), attention runs over all tokens (no spatial reduction) in stages 1-3, and
  stage 4 keeps softmax attention.

Batch folds into the M of every linear layer; attention ops count one instance per image and head.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtl.config import ConfigError, read_text_file

__all__ = [
    "ATTENTIONS", "GEMM_KINDS", "MODELS", "Op", "Workload", "WorkloadError", "build",
    "from_scalesim_csv", "from_torch",
]

#: kinds of ops the systolic array runs as a GEMM
GEMM_KINDS = frozenset({"linear", "conv", "matmul", "sign_matmul"})
#: kinds of ops given to the (modeled) vector unit after the accumulator (``relu`` where no GEMM
#: is before it to fuse it; ``gather``: an embedding lookup; ``reduce``: a mean)
VECTOR_KINDS = frozenset({"softmax", "layernorm", "gelu", "add", "scale", "dwconv", "hash",
                          "divide", "relu", "gather", "reduce"})
#: attention variants: softmax (the model's own, e.g. PVTv2's spatial reduction), msa (full
#: softmax attention without spatial reduction: EcoFormer's PVTv2 baseline), ecoformer
ATTENTIONS = ("softmax", "msa", "ecoformer")

#: EcoFormer's anchors per head (``m`` in ziplab/EcoFormer's configs)
ECOFORMER_ANCHORS = 25


class WorkloadError(ConfigError):
    """A workload that cannot be built or mapped; the message says why."""


@dataclass(frozen=True)
class Op:
    """One operation, ``count`` times. Shapes are per instance; ``count`` multiplies everything.

    GEMM kinds: ``m, k, n`` (MACs = m k n per instance). Vector kinds: ``elements`` produced per
    instance; ``dwconv`` does ``taps`` MACs per element. ``bias`` is the number of bias additions
    per instance (counted by the paper's counting only). ``paper`` overrides the paper counting
    (muls, adds) per instance when the EcoFormer paper counts the op by its own formula.
    """

    name: str
    kind: str
    m: int = 0
    k: int = 0
    n: int = 0
    elements: int = 0
    taps: int = 0
    count: int = 1
    bias: int = 0
    paper: tuple[int, int] | None = None
    stage: str = ""
    #: softmax over causally masked scores (GPT-2)
    causal: bool = False

    def __post_init__(self) -> None:
        if self.kind not in GEMM_KINDS | VECTOR_KINDS:
            raise WorkloadError(f"op {self.name!r}: unknown kind {self.kind!r}")
        if self.count < 1:
            raise WorkloadError(f"op {self.name!r}: count must be at least 1, not {self.count}")
        if self.kind in GEMM_KINDS:
            if min(self.m, self.k, self.n) < 1:
                raise WorkloadError(f"op {self.name!r}: GEMM shape {self.m}x{self.k}x{self.n} "
                                    "must be positive")
        elif self.elements < 1:
            raise WorkloadError(f"op {self.name!r}: elements must be positive")

    @property
    def is_gemm(self) -> bool:
        return self.kind in GEMM_KINDS

    @property
    def macs(self) -> int:
        """Multiply-accumulates of all instances (sign_matmul: additions of +-x)."""
        if self.is_gemm:
            return self.m * self.k * self.n * self.count
        if self.kind == "dwconv":
            return self.elements * self.taps * self.count
        return 0

    @property
    def shape(self) -> str:
        """A short shape string: ``MxKxN`` for GEMMs, elements (and taps) otherwise."""
        if self.is_gemm:
            return f"{self.m}x{self.k}x{self.n}"
        if self.kind == "dwconv":
            return f"{self.elements}x{self.taps}"
        return str(self.elements)


@dataclass
class Workload:
    """A model as ops, with the parameters it was built with (for reports)."""

    name: str
    ops: list[Op]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)


# -- builders -------------------------------------------------------------------------------------

class _Builder:
    def __init__(self, batch: int):
        self.batch = batch
        self.ops: list[Op] = []

    def add(self, *args: Any, **kw: Any) -> None:
        self.ops.append(Op(*args, **kw))

    def linear(self, name: str, tokens: int, k: int, n: int, count: int = 1, stage: str = "",
               bias: bool = True) -> None:
        self.add(name, "linear", m=self.batch * tokens, k=k, n=n, count=count, stage=stage,
                 bias=self.batch * tokens * n if bias else 0)

    def conv(self, name: str, h: int, w: int, cin: int, cout: int, kernel: int, stride: int,
             pad: int, count: int = 1, stage: str = "") -> tuple[int, int]:
        ho = (h + 2 * pad - kernel) // stride + 1
        wo = (w + 2 * pad - kernel) // stride + 1
        self.add(name, "conv", m=self.batch * ho * wo, k=cin * kernel * kernel, n=cout,
                 count=count, stage=stage, bias=self.batch * ho * wo * cout)
        return ho, wo

    def vector(self, name: str, kind: str, elements: int, count: int = 1, stage: str = "",
               **kw: Any) -> None:
        self.add(name, kind, elements=self.batch * elements, count=count, stage=stage, **kw)

    def attention(self, prefix: str, n_q: int, n_kv: int, dim: int, heads: int, count: int,
                  stage: str, kind: str, hash_bits: int, shared_qk: bool = False,
                  causal: bool = False) -> None:
        """Per-head attention over ``n_q`` queries and ``n_kv`` keys (projections excluded)."""
        d = dim // heads
        inst = count * self.batch * heads
        if kind == "ecoformer":
            self.ecoformer(prefix, n_q, d, heads, inst, stage, hash_bits, shared_qk)
            return
        self.add(f"{prefix}.qk", "matmul", m=n_q, k=d, n=n_kv, count=inst, stage=stage)
        self.add(f"{prefix}.scale", "scale", elements=n_q * n_kv, count=inst, stage=stage,
                 paper=(n_q * n_kv, 0))
        self.add(f"{prefix}.softmax", "softmax", elements=n_q * n_kv, count=inst, stage=stage,
                 causal=causal)
        self.add(f"{prefix}.av", "matmul", m=n_q, k=n_kv, n=d, count=inst, stage=stage)

    def ecoformer(self, prefix: str, n: int, c: int, heads: int, inst: int, stage: str,
                  b: int, shared_qk: bool) -> None:
        """EcoFormer's hashed attention for one head; ``paper`` holds their get_energy.py terms.

        Their formula (per head, N tokens, C head size, m anchors, b bits) counts the kernel as
        ``2 N m C`` additions and ``2 N m`` multiplies, hashing as ``N m b`` of each,
        ``k_cumsum`` ``N b`` adds, ``D_inv`` ``N b + N`` muls and ``N b`` adds, ``context``
        ``N b C`` adds, ``out`` ``N b C + N C`` adds and the final scaling ``N C`` muls.
        """
        m = ECOFORMER_ANCHORS
        # With a shared Q/K projection one set of codes serves both (their formula: the kernel
        # for Q and K, hashing once); otherwise Q and K are each hashed, and counted so.
        hashed = 1 if shared_qk else 2
        kernel = (2 * n * m, 2 * n * m * c) if shared_qk else (n * m, n * m * c)
        self.add(f"{prefix}.hash_kernel", "matmul", m=n, k=c, n=m, count=inst * hashed,
                 stage=stage, paper=kernel)
        self.add(f"{prefix}.hash_rbf", "hash", elements=n * m, count=inst * hashed, stage=stage,
                 paper=(0, 0))
        self.add(f"{prefix}.hash_proj", "matmul", m=n, k=m, n=b, count=inst * hashed,
                 stage=stage, paper=(n * m * b, n * m * b))
        self.add(f"{prefix}.hash_sign", "hash", elements=n * b, count=inst * hashed,
                 stage=stage, paper=(0, 0))
        self.add(f"{prefix}.htv", "sign_matmul", m=b, k=n, n=c, count=inst, stage=stage,
                 paper=(0, n * b * c))
        self.add(f"{prefix}.ht1", "hash", elements=n * b, count=inst, stage=stage,
                 paper=(0, n * b))
        self.add(f"{prefix}.hg", "sign_matmul", m=n, k=b, n=c, count=inst, stage=stage,
                 paper=(0, n * b * c + n * c))
        self.add(f"{prefix}.hs", "hash", elements=n * b, count=inst, stage=stage,
                 paper=(n * b + n, n * b))
        self.add(f"{prefix}.divide", "divide", elements=n * c, count=inst, stage=stage,
                 paper=(n * c, 0))


def _check_int(name: str, value: int, lo: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise WorkloadError(f"{name} must be an integer >= {lo}, not {value!r}")


def _encoder(b: _Builder, layers: int, tokens: int, dim: int, heads: int, ffn: int,
             attention: str, hash_bits: int, prefix: str = "layer",
             causal: bool = False) -> None:
    """``layers`` pre- or post-norm transformer layers (same ops either way)."""
    if dim % heads:
        raise WorkloadError(f"width {dim} is not divisible by {heads} heads")
    s = prefix
    b.vector(f"{s}.norm1", "layernorm", tokens * dim, count=layers, stage=s)
    b.linear(f"{s}.qkv", tokens, dim, 3 * dim, count=layers, stage=s)
    b.attention(f"{s}.attn", tokens, tokens, dim, heads, layers, s, attention, hash_bits,
                causal=causal)
    b.linear(f"{s}.proj", tokens, dim, dim, count=layers, stage=s)
    b.vector(f"{s}.residual1", "add", tokens * dim, count=layers, stage=s)
    b.vector(f"{s}.norm2", "layernorm", tokens * dim, count=layers, stage=s)
    b.linear(f"{s}.fc1", tokens, dim, ffn, count=layers, stage=s)
    b.vector(f"{s}.gelu", "gelu", tokens * ffn, count=layers, stage=s)
    b.linear(f"{s}.fc2", tokens, ffn, dim, count=layers, stage=s)
    b.vector(f"{s}.residual2", "add", tokens * dim, count=layers, stage=s)


def _vit(name: str, dim: int, depth: int, heads: int, image: int, batch: int, attention: str,
         hash_bits: int, patch: int = 16) -> list[Op]:
    if image % patch:
        raise WorkloadError(f"{name}: image size {image} is not a multiple of the {patch}-pixel "
                            "patch")
    b = _Builder(batch)
    g = image // patch
    b.conv("patch_embed", image, image, 3, dim, patch, patch, 0, stage="embed")
    tokens = g * g + 1  # + class token
    _encoder(b, depth, tokens, dim, heads, 4 * dim, attention, hash_bits, prefix="blocks")
    b.vector("norm", "layernorm", tokens * dim, stage="head")
    b.linear("head", 1, dim, 1000, stage="head")
    return b.ops


def _bert(dim: int, layers: int, heads: int, seq: int, batch: int, attention: str,
          hash_bits: int) -> list[Op]:
    b = _Builder(batch)
    b.vector("embed.norm", "layernorm", seq * dim, stage="embed")
    _encoder(b, layers, seq, dim, heads, 4 * dim, attention, hash_bits)
    return b.ops


def _gpt2(seq: int, batch: int, attention: str, hash_bits: int) -> list[Op]:
    dim, layers, heads, vocab = 768, 12, 12, 50257
    b = _Builder(batch)
    _encoder(b, layers, seq, dim, heads, 4 * dim, attention, hash_bits, causal=True)
    b.vector("ln_f", "layernorm", seq * dim, stage="head")
    b.linear("lm_head", 1, dim, vocab, stage="head", bias=False)
    return b.ops


_PVT = {
    "pvtv2-b0": ([32, 64, 160, 256], [2, 2, 2, 2]),
    "pvtv2-b1": ([64, 128, 320, 512], [2, 2, 2, 2]),
    "pvtv2-b2": ([64, 128, 320, 512], [3, 4, 6, 3]),
}
_PVT_HEADS = [1, 2, 5, 8]
_PVT_MLP = [8, 8, 4, 4]
_PVT_SR = [8, 4, 2, 1]


def _pvt(name: str, image: int, batch: int, attention: str, hash_bits: int) -> list[Op]:
    dims, depths = _PVT[name]
    if image % 32:
        raise WorkloadError(f"{name}: image size {image} is not a multiple of 32")
    b = _Builder(batch)
    h = w = image
    cin = 3
    for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
        s = f"stage{i + 1}"
        kernel, stride = (7, 4) if i == 0 else (3, 2)
        h, w = b.conv(f"{s}.patch_embed", h, w, cin, dim, kernel, stride, kernel // 2, stage=s)
        cin = dim
        n = h * w
        b.vector(f"{s}.patch_norm", "layernorm", n * dim, stage=s)
        heads, sr, hidden = _PVT_HEADS[i], _PVT_SR[i], dim * _PVT_MLP[i]
        # EcoFormer's PVTv2 keeps softmax attention in the last stage
        kind = "softmax" if attention == "ecoformer" and i == 3 else attention
        b.vector(f"{s}.norm1", "layernorm", n * dim, count=depth, stage=s)
        if kind == "softmax" and sr > 1:
            b.linear(f"{s}.q", n, dim, dim, count=depth, stage=s)
            hr, wr = b.conv(f"{s}.sr", h, w, dim, dim, sr, sr, 0, count=depth, stage=s)
            n_kv = hr * wr
            b.vector(f"{s}.sr_norm", "layernorm", n_kv * dim, count=depth, stage=s)
            b.linear(f"{s}.kv", n_kv, dim, 2 * dim, count=depth, stage=s)
        elif kind == "ecoformer":
            n_kv = n
            b.linear(f"{s}.qk", n, dim, dim, count=depth, stage=s, bias=False)
            b.linear(f"{s}.v", n, dim, dim, count=depth, stage=s, bias=False)
        else:
            n_kv = n
            b.linear(f"{s}.qkv", n, dim, 3 * dim, count=depth, stage=s)
        b.attention(f"{s}.attn", n, n_kv, dim, heads, depth, s,
                    "ecoformer" if kind == "ecoformer" else "softmax", hash_bits,
                    shared_qk=True)
        b.linear(f"{s}.proj", n, dim, dim, count=depth, stage=s)
        b.vector(f"{s}.residual1", "add", n * dim, count=depth, stage=s)
        b.vector(f"{s}.norm2", "layernorm", n * dim, count=depth, stage=s)
        b.linear(f"{s}.fc1", n, dim, hidden, count=depth, stage=s)
        b.vector(f"{s}.dwconv", "dwconv", n * hidden, taps=9, count=depth, stage=s,
                 bias=batch * n * hidden)
        b.vector(f"{s}.gelu", "gelu", n * hidden, count=depth, stage=s)
        b.linear(f"{s}.fc2", n, hidden, dim, count=depth, stage=s)
        b.vector(f"{s}.residual2", "add", n * dim, count=depth, stage=s)
        b.vector(f"{s}.norm", "layernorm", n * dim, stage=s)
    b.linear("head", 1, dims[-1], 1000, stage="head")
    return b.ops


def _swin(image: int, batch: int, attention: str, hash_bits: int) -> list[Op]:
    dims, depths, heads_per = [96, 192, 384, 768], [2, 2, 6, 2], [3, 6, 12, 24]
    window = 7
    if image % 32:
        raise WorkloadError(f"swin-t: image size {image} is not a multiple of 32")
    b = _Builder(batch)
    h, w = b.conv("patch_embed", image, image, 3, dims[0], 4, 4, 0, stage="embed")
    b.vector("patch_norm", "layernorm", h * w * dims[0], stage="embed")
    for i, (dim, depth, heads) in enumerate(zip(dims, depths, heads_per, strict=True)):
        s = f"stage{i + 1}"
        if i > 0:
            b.vector(f"{s}.merge_norm", "layernorm", (h // 2) * (w // 2) * 4 * dims[i - 1],
                     stage=s)
            h, w = h // 2, w // 2
            b.linear(f"{s}.merge", h * w, 4 * dims[i - 1], dim, stage=s, bias=False)
        n = h * w
        win = min(window, h)
        windows = math.ceil(h / win) * math.ceil(w / win)
        b.vector(f"{s}.norm1", "layernorm", n * dim, count=depth, stage=s)
        b.linear(f"{s}.qkv", n, dim, 3 * dim, count=depth, stage=s)
        b.attention(f"{s}.attn", win * win, win * win, dim, heads, depth * windows, s,
                    attention, hash_bits)
        b.linear(f"{s}.proj", n, dim, dim, count=depth, stage=s)
        b.vector(f"{s}.residual1", "add", n * dim, count=depth, stage=s)
        b.vector(f"{s}.norm2", "layernorm", n * dim, count=depth, stage=s)
        b.linear(f"{s}.fc1", n, dim, 4 * dim, count=depth, stage=s)
        b.vector(f"{s}.gelu", "gelu", n * 4 * dim, count=depth, stage=s)
        b.linear(f"{s}.fc2", n, 4 * dim, dim, count=depth, stage=s)
        b.vector(f"{s}.residual2", "add", n * dim, count=depth, stage=s)
    b.vector("norm", "layernorm", h * w * dims[-1], stage="head")
    b.linear("head", 1, dims[-1], 1000, stage="head")
    return b.ops


#: model name -> (kind of input: "image" or "seq", default size, builder)
MODELS: dict[str, tuple[str, int]] = {
    "vit-b16": ("image", 224), "deit-tiny": ("image", 224), "deit-small": ("image", 224),
    "bert-base": ("seq", 128), "bert-large": ("seq", 128), "gpt2": ("seq", 1024),
    "pvtv2-b0": ("image", 224), "pvtv2-b1": ("image", 224), "pvtv2-b2": ("image", 224),
    "swin-t": ("image", 224),
}


def build(name: str, *, seq: int | None = None, image_size: int | None = None, batch: int = 1,
          attention: str = "softmax", hash_bits: int = 16) -> Workload:
    """The named model as a :class:`Workload`.

    ``seq`` applies to the language models (bert-base/large default 128 tokens, gpt2 1024),
    ``image_size`` to the vision models (default 224); giving one to a model that has none is
    refused. ``attention`` is ``softmax`` (the model's own), ``msa`` (PVTv2 without spatial
    reduction) or ``ecoformer``; ``hash_bits`` is EcoFormer's ``b``.
    """
    if name not in MODELS:
        raise WorkloadError(f"unknown model {name!r}; known models: {', '.join(MODELS)} "
                            "(or a SCALE-Sim topology .csv)")
    if attention not in ATTENTIONS:
        raise WorkloadError(f"attention must be one of {', '.join(ATTENTIONS)}, "
                            f"not {attention!r}")
    _check_int("batch", batch)
    _check_int("hash_bits", hash_bits)
    kind, default = MODELS[name]
    if kind == "image":
        if seq is not None:
            raise WorkloadError(f"{name} takes --image-size, not --seq")
        size = default if image_size is None else image_size
        _check_int("image size", size)
    else:
        if image_size is not None:
            raise WorkloadError(f"{name} takes --seq, not --image-size")
        size = default if seq is None else seq
        _check_int("seq", size)
    if attention == "msa" and not name.startswith("pvtv2"):
        attention = "softmax"  # only PVTv2 reduces K/V spatially; elsewhere msa is softmax
    if name == "vit-b16":
        ops = _vit(name, 768, 12, 12, size, batch, attention, hash_bits)
    elif name == "deit-tiny":
        ops = _vit(name, 192, 12, 3, size, batch, attention, hash_bits)
    elif name == "deit-small":
        ops = _vit(name, 384, 12, 6, size, batch, attention, hash_bits)
    elif name == "bert-base":
        ops = _bert(768, 12, 12, size, batch, attention, hash_bits)
    elif name == "bert-large":
        ops = _bert(1024, 24, 16, size, batch, attention, hash_bits)
    elif name == "gpt2":
        ops = _gpt2(size, batch, attention, hash_bits)
    elif name.startswith("pvtv2"):
        ops = _pvt(name, size, batch, attention, hash_bits)
    else:
        ops = _swin(size, batch, attention, hash_bits)
    params = {"batch": batch, "attention": attention, "hash_bits": hash_bits,
              ("image_size" if kind == "image" else "seq"): size}
    return Workload(name, ops, params)


# -- SCALE-Sim topology ---------------------------------------------------------------------------

def from_scalesim_csv(path: str | Path) -> Workload:
    """A SCALE-Sim GEMM topology file: a header ``Layer,M,N,K`` then one GEMM per row.

    SCALE-Sim's convention: an ``M x K`` operand times a ``K x N`` operand. Extra columns and a
    trailing comma are tolerated; a row that is not three positive integers is refused by line.
    """
    path = Path(path)
    text = read_text_file(path, "topology file", WorkloadError)
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise WorkloadError(f"{path}: empty topology file")
    header = [h.strip().lower() for h in rows[0]]
    want = ["layer", "m", "n", "k"]
    if header[:4] != want:
        raise WorkloadError(f"{path}: header must start with Layer,M,N,K, not {','.join(rows[0])}")
    ops = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        try:
            name = row[0].strip()
            m, n, k = (int(row[i].strip()) for i in (1, 2, 3))
        except (ValueError, IndexError):
            raise WorkloadError(f"{path}:{line_no}: expected Layer,M,N,K with integer M, N, K, "
                                f"got {','.join(row)}") from None
        if min(m, n, k) < 1:
            raise WorkloadError(f"{path}:{line_no}: M, N, K must be positive")
        ops.append(Op(name or f"layer{line_no - 1}", "linear", m=m, k=k, n=n, stage="csv"))
    if not ops:
        raise WorkloadError(f"{path}: no layers")
    return Workload(path.stem, ops, {"source": str(path)})


# -- torch.fx -------------------------------------------------------------------------------------

def from_torch(module: Any, *example_inputs: Any, name: str | None = None) -> Workload:
    """A ``torch.nn.Module`` as a workload: see :func:`mapping.frontend.from_torch`."""
    from .frontend import from_torch as trace

    return trace(module, *example_inputs, name=name)
