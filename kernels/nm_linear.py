"""N:M sparse linear: y = x @ W^T (* scale) + bias, W [N, K] keeping pattern_n
of every pattern_m consecutive elements along K (slimops.formats.sparse.NMWeight:
values [N, K/m * n], indices uint8 with 2-bit positions for m = 4 and 4-bit
ones for m = 8, low bits first).

One program owns BLOCK_N output features and BLOCK_M rows of x and walks K in
steps of BLOCK_K dense columns (BLOCK_K // m groups). For each of the n kept
slots of a group it loads the slot's value and unpacks its position, then
drops the value into the dense [BLOCK_N, BLOCK_K // m, m] tile with a one-hot
select (positions within a group are distinct, so each place takes at most one
value, and a position >= m, which a corrupt 4-bit field could hold, selects
nothing rather than reaching another group). The tile is multiplied by the
contiguous x tile; _sparse_tile documents the multiply and the rounding.

Supported: every pattern the format allows (m in {4, 8}, 1 <= n < m), value
dtypes float32/float16/bfloat16 and int8 with a float32 scale.
"""
import math

import torch
import triton
import triton.language as tl

from .._checks import check_nm_linear
from ..formats.sparse import nm_bits_per_index
from ._sparse_tile import TileConfig, accumulate, int32_overflow, is_mixed, launch_on, pick_config, store_output


@triton.jit
def _nm_linear_kernel(
    x_ptr, values_ptr, indices_ptr, scale_ptr, bias_ptr, y_ptr,
    M, N, K, stride_xm, stride_vn, stride_in, stride_ym, stride_yn,
    PATTERN_N: tl.constexpr, PATTERN_M: tl.constexpr, BITS: tl.constexpr,
    MIXED: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr,
):
    # The M tiles of one row tile are neighbouring programs, so they share its
    # compressed weights in L2.
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % num_m
    pid_n = pid // num_m
    GROUPS: tl.constexpr = BLOCK_K // PATTERN_M  # groups per step
    PER_BYTE: tl.constexpr = 8 // BITS

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    offs_g = tl.arange(0, GROUPS)
    place = tl.arange(0, PATTERN_M)[None, None, :]
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    v_rows = values_ptr + offs_n.to(tl.int64)[:, None] * stride_vn
    i_rows = indices_ptr + offs_n.to(tl.int64)[:, None] * stride_in
    dtype = values_ptr.dtype.element_ty

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        group = k0 // PATTERN_M + offs_g
        ok = n_mask[:, None] & (group < K // PATTERN_M)[None, :]
        dense = tl.zeros((BLOCK_N, GROUPS, PATTERN_M), dtype)
        for slot in tl.static_range(PATTERN_N):
            kept = (group * PATTERN_N + slot)[None, :]
            v = tl.load(v_rows + kept, mask=ok, other=0)
            byte = tl.load(i_rows + kept // PER_BYTE, mask=ok, other=0)
            position = (byte.to(tl.int32) >> ((kept % PER_BYTE) * BITS)) & ((1 << BITS) - 1)
            dense = tl.where(position[:, :, None] == place, v[:, :, None], dense)
        w = tl.reshape(dense, (BLOCK_N, BLOCK_K))
        x = tl.load(x_rows + (k0 + offs_k)[None, :], mask=m_mask[:, None] & (k0 + offs_k < K)[None, :], other=0.0)
        acc = accumulate(acc, x, w, MIXED, USE_DOT)

    store_output(acc, y_ptr, scale_ptr, bias_ptr, offs_m, m_mask, offs_n, n_mask, stride_ym, stride_yn,
                 HAS_SCALE, HAS_BIAS)


# (largest M, config), picked by M only; block_k is a multiple of both group
# sizes. Sized for H100/H200 without having run there: small M streams the
# weights in narrow row tiles (N / 16 programs) with long K steps; larger M
# reuses each rebuilt weight tile over more rows of x.
CONFIGS = (
    (1, TileConfig(1, 128, 4, 3, block_n=16)),
    (2, TileConfig(2, 128, 4, 3, block_n=16)),
    (4, TileConfig(4, 64, 4, 3, block_n=16)),
    (16, TileConfig(16, 64, 4, 3, block_n=64)),
    (64, TileConfig(32, 64, 4, 3, block_n=64)),
    (None, TileConfig(64, 64, 8, 3, block_n=128)),
)


def nm_linear(x2d, values, indices, scale, pattern_n, pattern_m, bias=None, *, config=None):
    """The op's arguments with x2d [M, K] (float32, float16 or bfloat16; any row
    stride, a column stride other than 1 is copied away). config: one of
    CONFIGS' configs to run instead of the one picked by M. Returns a new
    [M, N] tensor of x2d's dtype."""
    check_nm_linear(x2d, values, indices, scale, pattern_n, pattern_m, bias)
    if x2d.dim() != 2:
        raise ValueError(f"x2d must be 2-D [M, K], got {tuple(x2d.shape)}")
    if config is not None and not any(config is c for _, c in CONFIGS):
        raise ValueError("config must be one of nm_linear.CONFIGS' configs")
    (m, k), n = x2d.shape, values.shape[0]
    config = config or pick_config(CONFIGS, m)
    reason = unsupported_reason(x2d, values, config)
    if reason is not None:
        raise ValueError(reason)

    y = torch.empty((m, n), dtype=x2d.dtype, device=x2d.device)
    if m == 0 or n == 0:
        return y
    x2d = x2d if x2d.stride(1) == 1 else x2d.contiguous()
    # An absent scale or bias is never read: any tensor stands in for its pointer.
    args = (x2d, values, indices, values if scale is None else scale, values if bias is None else bias.contiguous(),
            y, m, n, k, x2d.stride(0), values.stride(0), indices.stride(0), y.stride(0), y.stride(1))
    flags = dict(PATTERN_N=pattern_n, PATTERN_M=pattern_m, BITS=nm_bits_per_index(pattern_m),
                 MIXED=is_mixed(x2d.dtype, values.dtype), HAS_SCALE=scale is not None, HAS_BIAS=bias is not None,
                 BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, USE_DOT=config.use_dot)
    grid = (triton.cdiv(m, config.block_m) * triton.cdiv(n, config.block_n),)
    with launch_on(x2d.device):
        _nm_linear_kernel[grid](*args, **flags, num_warps=config.num_warps, num_stages=config.num_stages)
    return y


def unsupported_reason(x, values, config=None):
    """Why the kernel cannot take a call the op's checks passed, or None: sizes
    past its int32 indexing (tile ends included). Without a config, that of the
    call's M."""
    m, n, k = math.prod(x.shape[:-1]), values.shape[0], x.shape[-1]
    config = config or pick_config(CONFIGS, m)
    programs = triton.cdiv(m, config.block_m) * triton.cdiv(n, config.block_n)
    return int32_overflow("nm_linear", (("M", m + config.block_m - 1), ("N", n + config.block_n - 1),
                                        ("K", k + config.block_k - 1), ("the program count", programs)))
