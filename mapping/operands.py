"""A GEMM's operands, where they go in memory, and the result the golden model expects.

Shared by RTL co-simulation (:mod:`sim.cosim`) and the FPGA host driver (:mod:`fpga.host`):
both lay operands out as the plan's :class:`~mapping.gemm.Layout` says, run the plan's program
and compare every element of what comes back with :func:`golden_result`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from golden import gemm_int, quantize_multiplier, requantize
from golden.nonlinear import shiftmax_x0
from rtl.config import EngineConfig
from rtl.isa import Q_BLOCK

from .gemm import GemmPlan

__all__ = ["GemmOperands", "golden_result", "make_operands", "memory_image", "read_result"]


@dataclass
class GemmOperands:
    a: torch.Tensor
    b: torch.Tensor
    bias: torch.Tensor | None = None
    multiplier: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    zero_point: int = 0


def make_operands(m: int, k: int, n: int, *, seed: int, requant: bool,
                  softmax: bool = False) -> GemmOperands:
    """Random int8 operands and, for ``requant``, per-channel parameters that keep outputs in
    range (scales spread around 1 / (sqrt(K) * 64), a bias of a few LSBs, a small zero point).
    ``softmax``: attention logits instead, one scale for every channel (the softmax store
    applies one channel block to a whole row), no bias, zero point 0, spread over most of
    int8."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int64)
    b = torch.randint(-128, 128, (k, n), generator=gen, dtype=torch.int64)
    ops = GemmOperands(a, b)
    if softmax:
        scale = float(torch.empty(1, dtype=torch.float64).uniform_(1, 4, generator=gen)) \
            / (k ** 0.5 * 128)
        mult, shift = quantize_multiplier(scale)
        ops.multiplier = torch.full((n,), mult, dtype=torch.int64)
        ops.shift = torch.full((n,), shift, dtype=torch.int64)
        ops.bias = torch.zeros(n, dtype=torch.int64)
    elif requant:
        scales = torch.rand(n, generator=gen, dtype=torch.float64) * 2 / (k ** 0.5 * 64)
        pairs = [quantize_multiplier(float(s) + 1e-9) for s in scales]
        ops.multiplier = torch.tensor([p[0] for p in pairs], dtype=torch.int64)
        ops.shift = torch.tensor([p[1] for p in pairs], dtype=torch.int64)
        ops.bias = torch.randint(-5000, 5000, (n,), generator=gen, dtype=torch.int64)
        ops.zero_point = int(torch.randint(-10, 11, (1,), generator=gen))
    return ops


def golden_result(cfg: EngineConfig, ops: GemmOperands, requant: bool,
                  softmax_x0: int | None = None, causal: bool = False) -> torch.Tensor:
    """What the engine must produce: C (int32), requantized, or its rows through Shiftmax
    with ``softmax_x0`` (``causal``: element j of row i only if j <= i)."""
    acc = gemm_int(ops.a, ops.b, in_bits=8, acc_bits=cfg.acc_bits)
    if not requant:
        return acc
    out = requantize(acc, ops.multiplier, ops.shift, bias=ops.bias, zero_point=ops.zero_point)
    if softmax_x0 is None:
        return out
    mask = None
    if causal:
        m, n = out.shape
        mask = torch.arange(n)[None, :] <= torch.arange(m)[:, None]
    return shiftmax_x0(out, softmax_x0, mask=mask)


def memory_image(plan: GemmPlan, ops: GemmOperands) -> bytes:
    """The operands (and requantization parameters) laid out as ``plan.layout`` says."""
    cfg, lay = plan.config, plan.layout
    image = np.zeros(lay.size, dtype=np.uint8)
    a = ops.a.numpy().astype(np.int8)
    a_mem = a.T if lay.a_transposed else a
    rows, cols = a_mem.shape
    for i in range(rows):
        image[lay.a_addr + i * lay.lda: lay.a_addr + i * lay.lda + cols] = a_mem[i].view(np.uint8)
    b = ops.b.numpy().astype(np.int8)
    for i in range(b.shape[0]):
        image[lay.b_addr + i * lay.ldb: lay.b_addr + i * lay.ldb + b.shape[1]] = \
            b[i].view(np.uint8)
    if plan.requant:
        c = cfg.cols
        nt = -(-plan.n // c)
        q = np.zeros((nt, len(Q_BLOCK), c), dtype=np.int32)
        values = {"bias": ops.bias, "multiplier": ops.multiplier, "shift": ops.shift}
        for row, name in enumerate(Q_BLOCK):
            for j in range(plan.n):
                q[j // c, row, j % c] = int(values[name][j])
        raw = q.astype("<i4").tobytes()
        image[lay.q_addr: lay.q_addr + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return image.tobytes()


def read_result(plan: GemmPlan, region: bytes) -> torch.Tensor:
    lay = plan.layout
    dtype = np.int8 if plan.requant else np.dtype("<i4")
    flat = np.frombuffer(region, dtype=dtype)
    out = flat.reshape(plan.m, lay.ldc // lay.c_elem_bytes)[:, :plan.n]
    return torch.from_numpy(out.astype(np.int64))
