"""Block-sparse (BSR) linear: y = x @ W^T (* scale) + bias, W [N, K] stored as
bn x bk blocks (slimops.formats.sparse.BSRWeight: block_row_ptr, block_col_idx,
values [nblocks, bn, bk]).

One program owns one block row (bn output features) and BLOCK_M rows of x. It
walks the block row's kept blocks a few at a time: BLOCK_K columns of a step
hold BLOCK_K // BK_PAD consecutive blocks, each bk wide padded to the power of
two BK_PAD (the padding masked off), so narrow blocks still make a wide step.
The step's x columns are gathered from the blocks' column indices and its
values loaded straight into the weight tile; _sparse_tile documents the
multiply and the rounding. An empty block row gives y = bias.

Supported blocks: 1 <= bn, bk <= MAX_BLOCK_SIDE (64), any value, not only
powers of two (bn is padded to a power of two too, to 16 or more on the tl.dot
path: with bn < 16 part of that dot multiplies zeros, but no byte of padding
is read). Larger blocks are declined (their tile would not fit in registers).
"""
import math

import torch
import triton
import triton.language as tl

from .._checks import check_bsr_linear
from ._sparse_tile import TileConfig, accumulate, int32_overflow, is_mixed, launch_on, pick_config, store_output

MAX_BLOCK_SIDE = 64


@triton.jit
def _bsr_linear_kernel(
    x_ptr, ptr_ptr, col_ptr, values_ptr, scale_ptr, bias_ptr, y_ptr,
    M, BLOCK_COLS, NBLOCKS, stride_xm, stride_ym, stride_yn,
    BN: tl.constexpr, BK: tl.constexpr, BK_PAD: tl.constexpr,
    MIXED: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr,
):
    # The M tiles of one block row are neighbouring programs, so they share its
    # blocks in L2.
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % num_m
    block_row = pid // num_m
    BLOCKS_PER_STEP: tl.constexpr = BLOCK_K // BK_PAD

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    offs_r = tl.arange(0, BLOCK_N)
    r_mask = offs_r < BN
    offs_j = tl.arange(0, BLOCK_K)
    step_block = offs_j // BK_PAD  # which of the step's blocks column j falls in
    in_block = offs_j % BK_PAD
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    # The arrays are not validated on the GPU (that would cost a synchronisation), so
    # corrupted ones are clamped to stay in bounds: a wrong answer, never a stray read.
    first = tl.maximum(tl.load(ptr_ptr + block_row), 0)
    end = tl.minimum(tl.load(ptr_ptr + block_row + 1), NBLOCKS)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for b0 in range(first, end, BLOCKS_PER_STEP):
        blk = b0 + step_block
        ok = (in_block < BK) & (blk < end)
        block_col = tl.load(col_ptr + blk, mask=ok, other=0).to(tl.int32)
        ok = ok & (block_col >= 0) & (block_col < BLOCK_COLS)
        cols = block_col * BK + in_block
        x = tl.load(x_rows + cols[None, :], mask=m_mask[:, None] & ok[None, :], other=0.0)
        # int64: nblocks * bn * bk may pass 2**31 even with int32 block pointers.
        w_ptrs = values_ptr + blk.to(tl.int64)[None, :] * (BN * BK) + (offs_r * BK)[:, None] + in_block[None, :]
        w = tl.load(w_ptrs, mask=r_mask[:, None] & ok[None, :], other=0)
        acc = accumulate(acc, x, w, MIXED, USE_DOT)

    store_output(acc, y_ptr, scale_ptr, bias_ptr, offs_m, m_mask, block_row * BN + offs_r, r_mask,
                 stride_ym, stride_yn, HAS_SCALE, HAS_BIAS)


# (largest M, config), picked by M only; block_k is the least step width.
# Sized for H100/H200 without having run there: small M streams the blocks,
# one program per block row; larger M reuses each weight tile over more rows.
CONFIGS = (
    (1, TileConfig(1, 64, 4, 3)),
    (2, TileConfig(2, 64, 4, 3)),
    (4, TileConfig(4, 64, 4, 3)),
    (16, TileConfig(16, 64, 4, 3)),
    (64, TileConfig(32, 64, 4, 3)),
    (None, TileConfig(64, 64, 4, 3)),
)


def tile_shape(block, config):
    """(BLOCK_N, BK_PAD, BLOCK_K) of a bn x bk block under config: bn and bk padded
    to powers of two, to 16 or more where tl.dot takes the tile."""
    bn, bk = block
    least = 16 if config.use_dot else 1
    bk_pad = triton.next_power_of_2(bk)
    return max(least, triton.next_power_of_2(bn)), bk_pad, max(least, bk_pad, config.block_k)


def bsr_linear(x2d, block_row_ptr, block_col_idx, values, scale, n, bias=None, *, config=None):
    """The op's arguments with x2d [M, K] (float32, float16 or bfloat16; any row
    stride, a column stride other than 1 is copied away). config: one of
    CONFIGS' configs to run instead of the one picked by M. Returns a new
    [M, N] tensor of x2d's dtype."""
    check_bsr_linear(x2d, block_row_ptr, block_col_idx, values, scale, n, bias)
    if x2d.dim() != 2:
        raise ValueError(f"x2d must be 2-D [M, K], got {tuple(x2d.shape)}")
    if config is not None and not any(config is c for _, c in CONFIGS):
        raise ValueError("config must be one of bsr_linear.CONFIGS' configs")
    m = x2d.shape[0]
    config = config or pick_config(CONFIGS, m)
    reason = unsupported_reason(x2d, values, n, config)
    if reason is not None:
        raise ValueError(reason)

    y = torch.empty((m, n), dtype=x2d.dtype, device=x2d.device)
    if m == 0 or n == 0:
        return y
    x2d = x2d if x2d.stride(1) == 1 else x2d.contiguous()
    bn, bk = values.shape[1:]
    block_n, bk_pad, block_k = tile_shape((bn, bk), config)
    # An absent scale or bias is never read: any tensor stands in for its pointer.
    args = (x2d, block_row_ptr, block_col_idx, values, values if scale is None else scale,
            values if bias is None else bias.contiguous(), y,
            m, x2d.shape[1] // bk, block_col_idx.numel(), x2d.stride(0), y.stride(0), y.stride(1))
    flags = dict(BN=bn, BK=bk, BK_PAD=bk_pad, MIXED=is_mixed(x2d.dtype, values.dtype), HAS_SCALE=scale is not None,
                 HAS_BIAS=bias is not None, BLOCK_M=config.block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                 USE_DOT=config.use_dot)
    with launch_on(x2d.device):
        _bsr_linear_kernel[(triton.cdiv(m, config.block_m) * (n // bn),)](
            *args, **flags, num_warps=config.num_warps, num_stages=config.num_stages)
    return y


def unsupported_reason(x, values, n, config=None):
    """Why the kernel cannot take a call the op's checks passed, or None: blocks
    over MAX_BLOCK_SIDE, or sizes past its int32 indexing (tile ends included).
    Without a config, that of the call's M."""
    bn, bk = values.shape[1:]
    if max(bn, bk) > MAX_BLOCK_SIDE:
        return f"the Triton bsr_linear kernel takes blocks of at most {MAX_BLOCK_SIDE}x{MAX_BLOCK_SIDE}, got {bn}x{bk}"
    m = math.prod(x.shape[:-1])
    config = config or pick_config(CONFIGS, m)
    block_n, _, block_k = tile_shape((bn, bk), config)
    programs = triton.cdiv(m, config.block_m) * (n // bn)
    return int32_overflow("bsr_linear", (("M", m + config.block_m - 1), ("N", n + block_n - 1),
                                         ("K", x.shape[-1] + block_k - 1), ("the program count", programs)))

