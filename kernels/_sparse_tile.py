"""What the sparse linear kernels (bsr_linear, nm_linear) share: the multiply of
an x tile by a weight tile rebuilt in registers, the scale/bias epilogue, the
tile configs and the launch-side checks.

Both kernels compute y = x @ W^T (* scale) + bias with W [N, K] sparse: each
program owns BLOCK_M rows of x and a tile of output features, rebuilds each
[BLOCK_N, BLOCK_K] step of W densely in registers from the compressed arrays
(zeros where nothing is kept) and multiplies it by the matching x tile.

Float order and precision. The weight tile is cast to x's dtype when the values
have x's dtype or are int8 (exact: |int8| <= 128 fits fp16's and bf16's
mantissas); values of another float dtype meet x in float32 (exact too). With
BLOCK_M >= 16 the step is one ``tl.dot`` accumulating in float32 (fp32 operands
as a true fp32 dot, not TF32; the summation order is the hardware's). With
BLOCK_M < 16 (1, 2 or 4 rows: tl.dot needs 16) the products are formed in
float32 (exact for fp16/bf16 operands) and summed per step as a tree, then
added to the float32 accumulator. Epilogue in float32: * scale (int8 values),
+ bias, then the one rounding to x's dtype on the store.
"""
import contextlib
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import _interpreter_compat

_interpreter_compat.apply()


@triton.jit
def accumulate(acc, x, w, MIXED: tl.constexpr, USE_DOT: tl.constexpr):
    """acc [BLOCK_M, BLOCK_N] float32 + x [BLOCK_M, BLOCK_K] @ w [BLOCK_N, BLOCK_K]^T."""
    if MIXED:
        x = x.to(tl.float32)
        w = w.to(tl.float32)
    else:
        w = w.to(x.dtype)
    if USE_DOT:
        # ieee: fp32 operands get a true fp32 dot, not TF32 (fp16/bf16 ignore it).
        acc = tl.dot(x, tl.trans(w), acc, input_precision="ieee")
    else:
        acc += tl.sum(x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
    return acc


@triton.jit
def store_output(acc, y_ptr, scale_ptr, bias_ptr, offs_m, m_mask, offs_n, n_mask, stride_ym, stride_yn,
                 HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr):
    """y[offs_m, offs_n] = acc * scale[offs_n] + bias[offs_n], in y's dtype."""
    if HAS_SCALE:
        acc *= tl.load(scale_ptr + offs_n, mask=n_mask, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n.to(tl.int64)[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


@dataclass(frozen=True)
class TileConfig:
    """block_m: rows of x per program; 1, 2 or 4 take the small-M path (float32
    products summed in registers), 16 or more take tl.dot. block_k: columns of W
    rebuilt per step (for BSR the least width: a step takes whole blocks).
    block_n: output features per program, N:M only (a BSR program takes one
    block row)."""

    block_m: int
    block_k: int
    num_warps: int
    num_stages: int
    block_n: int | None = None

    @property
    def use_dot(self) -> bool:
        return self.block_m >= 16


def pick_config(configs, m: int) -> TileConfig:
    """configs: (largest M, config) pairs, smallest first, the last catching every M."""
    return next(config for max_m, config in configs if max_m is None or m <= max_m)


def is_mixed(x_dtype: torch.dtype, values_dtype: torch.dtype) -> bool:
    """Whether the values meet x in float32 (a float dtype other than x's) rather than in x's dtype."""
    return values_dtype != x_dtype and values_dtype != torch.int8


INT32_MAX = 2**31 - 1


def int32_overflow(name: str, sizes) -> str | None:
    """Why the kernel's int32 indexing cannot take these (what, size) pairs, or None."""
    for what, size in sizes:
        if size > INT32_MAX:
            return f"the Triton {name} kernel indexes in int32: {what} is too large"
    return None


def launch_on(device: torch.device):
    """Triton launches on the current CUDA device: make that the tensors' device."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
