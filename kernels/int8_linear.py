"""W8A8 linear: y = float(q @ w^T) * x_scale[m] * w_scale[n] + bias[n].

q is int8 [M, K] (per-token quantized activations), w is int8 [N, K] as stored
(read transposed through its strides, never copied). The int8 products are
accumulated exactly in int32 by ``tl.dot``; the scale/bias epilogue runs in
float32 and is fused into the store.
"""
import contextlib
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import _interpreter_compat

_interpreter_compat.apply()


@triton.jit
def _int8_linear_kernel(
    q_ptr, w_ptr, x_scale_ptr, w_scale_ptr, bias_ptr, y_ptr,
    M, N, K,
    stride_qm, stride_qk, stride_wn, stride_wk, stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # Grouped tile order: GROUP_M row-tiles walk the N tiles together, so the
    # weight tiles they share are still in L2 when the next row-tile needs them.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pids_per_group = GROUP_M * num_pid_n
    first_pid_m = (pid // pids_per_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % pids_per_group) % group_size_m
    pid_n = (pid % pids_per_group) // group_size_m

    # int32 tile offsets: the launcher's check_int32_sizes keeps them from wrapping.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Rows/columns past the edge are wrapped onto valid ones (their results are
    # never stored), so only the K tail needs a load mask inside the loop.
    # Offsets are int64: M*K or N*K may exceed 2**31 elements. (The per-step
    # pointer increments stay int32; the launcher keeps BLOCK_K * K-stride small.)
    rows_q = (offs_m % M).to(tl.int64)
    rows_w = (offs_n % N).to(tl.int64)
    cols = offs_k.to(tl.int64)
    q_ptrs = q_ptr + rows_q[:, None] * stride_qm + cols[None, :] * stride_qk
    w_ptrs = w_ptr + cols[:, None] * stride_wk + rows_w[None, :] * stride_wn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k_start in range(0, K, BLOCK_K):
        k_mask = offs_k < K - k_start
        a = tl.load(q_ptrs, mask=k_mask[None, :], other=0)
        b = tl.load(w_ptrs, mask=k_mask[:, None], other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        q_ptrs += BLOCK_K * stride_qk
        w_ptrs += BLOCK_K * stride_wk

    m_mask = offs_m < M
    n_mask = offs_n < N
    x_scale = tl.load(x_scale_ptr + offs_m, mask=m_mask, other=0.0)
    w_scale = tl.load(w_scale_ptr + offs_n, mask=n_mask, other=0.0)
    y = acc.to(tl.float32) * x_scale[:, None] * w_scale[None, :]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0)
        y += bias.to(tl.float32)[None, :]

    y_ptrs = (y_ptr + offs_m[:, None].to(tl.int64) * stride_ym
              + offs_n[None, :].to(tl.int64) * stride_yn)
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


@dataclass(frozen=True)
class Int8LinearConfig:
    block_m: int
    block_n: int
    block_k: int
    group_m: int
    num_warps: int
    num_stages: int


# (largest M the config is meant for, config), smallest first; picked by M only.
# Sized for H100 (sm_90, 228 KB shared memory): small M streams the weight, so
# narrow N tiles keep every SM busy and long K tiles keep many loads in flight;
# large M is compute bound and wants big tiles for operand reuse.
CONFIGS = (
    (16, Int8LinearConfig(16, 64, 256, 8, 4, 4)),
    (64, Int8LinearConfig(64, 64, 256, 8, 4, 4)),
    (256, Int8LinearConfig(64, 128, 128, 8, 4, 4)),
    (None, Int8LinearConfig(128, 256, 128, 8, 8, 3)),
)


def pick_config(m: int) -> Int8LinearConfig:
    for max_m, config in CONFIGS:
        if max_m is None or m <= max_m:
            return config
    raise AssertionError("CONFIGS must end with a catch-all entry")


_OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def int8_linear(q, x_scale, w, w_scale, bias=None, out_dtype=torch.float32, *, config=None):
    """y[m, n] = float(sum_k q[m, k] * w[n, k]) * x_scale[m] * w_scale[n] + bias[n].

    q: int8 [M, K]; x_scale: float32 with M elements; w: int8 [N, K];
    w_scale: float32 with N elements ([N] or [N, 1]); bias: None or any float
    dtype with N elements. Returns a new [M, N] tensor of out_dtype on q's device.
    """
    if q.dtype != torch.int8 or w.dtype != torch.int8 or q.dim() != 2 or w.dim() != 2:
        raise ValueError(f"q and w must be 2-D int8, got {q.dtype}{tuple(q.shape)} and {w.dtype}{tuple(w.shape)}")
    (m, k), (n, k_w) = q.shape, w.shape
    if k != k_w:
        raise ValueError(f"q has K={k} but w has K={k_w}")
    if out_dtype not in _OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {_OUT_DTYPES}, got {out_dtype}")
    cfg = config or pick_config(m)
    check_int32_sizes(m, n, k, cfg)
    x_scale = _vector(x_scale, m, "x_scale", torch.float32)
    w_scale = _vector(w_scale, n, "w_scale", torch.float32)
    if bias is not None:
        bias = _vector(bias, n, "bias", None)
    for name, t in (("x_scale", x_scale), ("w", w), ("w_scale", w_scale), ("bias", bias)):
        if t is not None and t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")

    y = torch.empty((m, n), dtype=out_dtype, device=q.device)
    if m == 0 or n == 0:
        return y
    # The kernel advances its pointers by BLOCK_K * stride(1) in int32 arithmetic;
    # a K-stride that large (a transposed view with millions of rows) is copied instead.
    q, w = (t if t.stride(1) * cfg.block_k < 2**31 else t.contiguous() for t in (q, w))
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n),)
    # Triton launches on the current CUDA device; make that q's device.
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        _int8_linear_kernel[grid](
            q, w, x_scale, w_scale, bias if bias is not None else w_scale, y,
            m, n, k,
            q.stride(0), q.stride(1), w.stride(0), w.stride(1), y.stride(0), y.stride(1),
            HAS_BIAS=bias is not None,
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
    return y


def check_int32_sizes(m, n, k, cfg):
    """The kernel indexes rows, columns and K steps in int32, and tl.cdiv(M, BLOCK_M)
    computes M + BLOCK_M - 1 (likewise N and the K loop): refuse sizes where that wraps."""
    for name, size, block in (("M", m, cfg.block_m), ("N", n, cfg.block_n), ("K", k, cfg.block_k)):
        if size + block - 1 > 2**31 - 1:
            raise ValueError(f"{name}={size} is too large for the Triton int8 linear kernel's int32 indexing: "
                             f"{name} + BLOCK_{name} - 1 must be below 2**31 (BLOCK_{name}={block})")


def _vector(t, length, name, dtype):
    if t.numel() != length or (dtype is not None and t.dtype != dtype) or not t.is_floating_point():
        want = dtype or "a float dtype"
        raise ValueError(f"{name} must have {length} elements of {want}, got {t.dtype}{tuple(t.shape)}")
    return t.reshape(length).contiguous()
