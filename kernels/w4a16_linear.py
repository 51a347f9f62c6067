"""W4A16 linear: y = x @ dequant(W)^T + bias, W stored as 4-bit group-wise integers.

x is float [M, K] (fp16, bf16 or fp32); w_packed is uint8 [N, ceil(K/2)], two
4-bit values u per byte (element 2i in the low nibble, 2i+1 in the high one,
see slimops.quantization.pack_int4); W[n, k] = (u - z) * s with s = w_scale[n, g]
and z = w_zero_point[n, g] (asymmetric) or 8 (symmetric), g = k // group_size.

The weight is dequantized inside the K loop, in registers: each packed tile is
read from memory once (half a byte per weight, the point of the format), u - z
is formed exactly in x's dtype, multiplied by the scale rounded to x's dtype
(two roundings per weight, as in Marlin; an fp16 scale below 2**-14 is
subnormal and loses relative precision), and ``tl.dot`` accumulates in float32.
Zero points must lie in 0..15, like the nibbles. The bias is added in float32 in
the epilogue and the output is cast to x's dtype.
"""
import contextlib

import torch
import triton
import triton.language as tl

from . import _interpreter_compat

_interpreter_compat.apply()


@triton.jit
def _biased_float(u, dtype: tl.constexpr):
    """2**p + u exactly in dtype, for integers 0 <= u < 16, without an int-to-float
    conversion (those issue at a quarter of the integer rate): OR u into the
    mantissa of 2**p, whose unit in the last place is 1 (fp16 1024, bf16 128,
    fp32 2**23). The difference of two such values is exact."""
    if dtype == tl.float16:
        return (u.to(tl.int16) | 0x6400).to(tl.float16, bitcast=True)
    elif dtype == tl.bfloat16:
        return (u.to(tl.int16) | 0x4300).to(tl.bfloat16, bitcast=True)
    else:
        return (u.to(tl.int32) | 0x4B000000).to(tl.float32, bitcast=True)


@triton.jit
def _dequantize(u, z, s, SCALE_GROUPS: tl.constexpr):
    """(u - z) * s in s's dtype. u: [BLOCK_N, BLOCK_K // 2] nibbles of one parity
    and z: [BLOCK_N, SCALE_GROUPS] zero points, both as _biased_float; s:
    [BLOCK_N, SCALE_GROUPS] scales. The columns of u fall into SCALE_GROUPS
    consecutive runs of one group each."""
    block_n: tl.constexpr = u.shape[0]
    cols: tl.constexpr = u.shape[1]
    u3 = tl.reshape(u, (block_n, SCALE_GROUPS, cols // SCALE_GROUPS))
    return tl.reshape((u3 - z[:, :, None]) * s[:, :, None], (block_n, cols))


@triton.jit
def _w4a16_linear_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, bias_ptr, y_ptr,
    M, N, K, M_BUCKET,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_sn, stride_sg, stride_zn, stride_zg,
    stride_ym, stride_yn,
    GROUP_K: tl.constexpr, HAS_ZERO_POINT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # M_BUCKET only keys the autotuner's cache (configs are tuned per M range, not per M).
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

    HALF_K: tl.constexpr = BLOCK_K // 2
    # Scale groups one K tile spans: BLOCK_K and GROUP_K are powers of two, so
    # either a tile holds whole groups or a group holds whole tiles (then 1).
    SCALE_GROUPS: tl.constexpr = (BLOCK_K + GROUP_K - 1) // GROUP_K
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_kp = tl.arange(0, HALF_K)
    offs_g = tl.arange(0, SCALE_GROUPS)
    # Rows/columns past the edge are wrapped onto valid ones (their results are
    # never stored), so only the K tail needs a load mask inside the loop.
    # Row offsets are int64 (M*K or N*K may exceed 2**31 elements); the launcher
    # keeps M, N, K and the per-step pointer increments within int32.
    rows_x = (offs_m % M).to(tl.int64)
    rows_w = (offs_n % N).to(tl.int64)
    x_ptrs = x_ptr + rows_x[:, None] * stride_xm + offs_k[None, :].to(tl.int64) * stride_xk
    w_ptrs = w_ptr + rows_w[:, None] * stride_wn + offs_kp[None, :].to(tl.int64) * stride_wk
    s_row = scale_ptr + rows_w[:, None] * stride_sn
    z_row = zero_ptr + rows_w[:, None] * stride_zn
    packed_k = (K + 1) // 2
    num_groups = tl.cdiv(K, GROUP_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_start in range(0, K, BLOCK_K):
        x = tl.load(x_ptrs, mask=offs_k[None, :] < K - k_start, other=0.0)
        p = tl.load(w_ptrs, mask=offs_kp[None, :] < packed_k - k_start // 2, other=0)
        g = k_start // GROUP_K + offs_g
        g_mask = g[None, :] < num_groups
        dtype = x_ptr.dtype.element_ty
        s = tl.load(s_row + g[None, :] * stride_sg, mask=g_mask, other=0.0).to(dtype)
        if HAS_ZERO_POINT:
            z = tl.load(z_row + g[None, :] * stride_zg, mask=g_mask, other=0)
        else:
            z = tl.full((BLOCK_N, SCALE_GROUPS), 8, tl.int32)
        z = _biased_float(z, dtype)
        lo = _dequantize(_biased_float(p & 0xF, dtype), z, s, SCALE_GROUPS)
        hi = _dequantize(_biased_float(p >> 4, dtype), z, s, SCALE_GROUPS)
        # Interleave the two nibble tiles back into K order (column 2i from the
        # low nibble, 2i+1 from the high): tl.interleave is join + reshape, which
        # both the interpreter and compiled Triton 3.6 support, and it keeps a
        # single tl.dot over the full BLOCK_K with x loaded contiguously (the
        # alternative, two dots against x's even and odd columns, would load x
        # with stride 2 and halve the dot's K). The [BLOCK_N, BLOCK_K] tile is
        # transposed for the dot; the compiler folds that into the operand layout.
        w = tl.interleave(lo, hi)
        # ieee: fp32 activations get a true fp32 dot, not TF32 (fp16/bf16 ignore it).
        acc = tl.dot(x, tl.trans(w), acc, input_precision="ieee")
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += HALF_K * stride_wk

    m_mask = offs_m < M
    n_mask = offs_n < N
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    y_ptrs = (y_ptr + offs_m[:, None].to(tl.int64) * stride_ym
              + offs_n[None, :].to(tl.int64) * stride_yn)
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def _config(block_m, block_n, block_k, num_warps, num_stages, group_m=8):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": group_m},
                         num_warps=num_warps, num_stages=num_stages)


# (M buckets the config is tried for, config). Sized for H100 (sm_90, 228 KB
# shared memory per SM, 132 SMs). Small M streams the weight: BLOCK_M 16 (the
# smallest tl.dot tile), narrow N tiles so every SM gets work, long K tiles so
# many packed loads are in flight. Large M is compute bound and wants big tiles
# for operand reuse; the dequantized weight tile is shared by BLOCK_M rows.
CONFIGS = (
    ((16,), _config(16, 32, 256, 4, 4)),
    ((16,), _config(16, 64, 128, 4, 4)),
    ((16,), _config(16, 128, 128, 4, 3)),
    ((64,), _config(32, 64, 128, 4, 4)),
    ((64, 256), _config(64, 64, 128, 4, 4)),
    ((256, 4096), _config(64, 128, 64, 4, 4)),
    ((256, 4096), _config(128, 128, 64, 8, 3)),
    ((4096,), _config(128, 256, 64, 8, 3)),
)
M_BUCKETS = (16, 64, 256, 4096)


def m_bucket(m: int) -> int:
    """The autotuning key for M: the smallest bucket holding m (the last takes the rest)."""
    return next((b for b in M_BUCKETS if m <= b), M_BUCKETS[-1])


def _configs_for_bucket(configs, named_args, **kwargs):
    return [c for buckets, c in CONFIGS if named_args["M_BUCKET"] in buckets]


_w4a16_linear_tuned = triton.autotune(
    configs=[c for _, c in CONFIGS],
    key=["M_BUCKET", "N", "K", "GROUP_K", "HAS_ZERO_POINT"],
    prune_configs_by={"early_config_prune": _configs_for_bucket},
)(_w4a16_linear_kernel)

_ACT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_BLOCK = {"M": max(c.kwargs["BLOCK_M"] for _, c in CONFIGS),
              "N": max(c.kwargs["BLOCK_N"] for _, c in CONFIGS),
              "K": max(c.kwargs["BLOCK_K"] for _, c in CONFIGS)}


def w4a16_linear(x2d, w_packed, w_scale, w_zero_point, group_size, bias=None, *, config=None):
    """y[m, n] = sum_k x2d[m, k] * W[n, k] + bias[n], W = (u - z) * s group-wise.

    x2d: [M, K] float32, float16 or bfloat16 (any strides). w_packed: uint8
    [N, ceil(K/2)] (pack_int4 layout). w_scale: float32 [N, G]. w_zero_point:
    None (symmetric, z = 8) or int32 [N, G]. group_size: -1 (G = 1) or a power
    of two dividing K (G = K // group_size). bias: None or N elements of any
    float dtype. config: a triton.Config from CONFIGS to run instead of
    autotuning. Returns a new [M, N] tensor of x2d's dtype on x2d's device.
    """
    if x2d.dim() != 2 or x2d.dtype not in _ACT_DTYPES:
        raise ValueError(f"x2d must be 2-D of {_ACT_DTYPES}, got {x2d.dtype}{tuple(x2d.shape)}")
    m, k = x2d.shape
    if w_packed.dim() != 2 or w_packed.dtype != torch.uint8 or w_packed.shape[1] != (k + 1) // 2:
        raise ValueError(f"w_packed must be uint8 [N, {(k + 1) // 2}] (two 4-bit values per byte, K={k}), "
                         f"got {w_packed.dtype}{tuple(w_packed.shape)}")
    n = w_packed.shape[0]
    group_k = _group_k(group_size, k)
    groups = k // group_size if group_size != -1 else 1
    if w_scale.dtype != torch.float32 or tuple(w_scale.shape) != (n, groups):
        raise ValueError(f"w_scale must be float32 [{n}, {groups}] (N, K // group_size), "
                         f"got {w_scale.dtype}{tuple(w_scale.shape)}")
    if w_zero_point is not None and (w_zero_point.dtype != torch.int32 or tuple(w_zero_point.shape) != (n, groups)):
        raise ValueError(f"w_zero_point must be None (symmetric) or int32 [{n}, {groups}], "
                         f"got {w_zero_point.dtype}{tuple(w_zero_point.shape)}")
    if bias is not None:
        if bias.numel() != n or not bias.is_floating_point():
            raise ValueError(f"bias must have {n} elements of a float dtype, got {bias.dtype}{tuple(bias.shape)}")
        bias = bias.reshape(n).contiguous()
    for name, t in (("w_packed", w_packed), ("w_scale", w_scale), ("w_zero_point", w_zero_point), ("bias", bias)):
        if t is not None and t.device != x2d.device:
            raise ValueError(f"{name} is on {t.device} but x2d is on {x2d.device}")
    if config is not None and not any(config is c for _, c in CONFIGS):
        raise ValueError("config must be one of w4a16_linear.CONFIGS' configs")
    blocks = _MAX_BLOCK if config is None else {d: config.kwargs[f"BLOCK_{d}"] for d in "MNK"}
    check_int32_sizes(m, n, k, blocks)

    y = torch.empty((m, n), dtype=x2d.dtype, device=x2d.device)
    if m == 0 or n == 0:
        return y
    # The kernel advances its pointers by BLOCK_K * stride in int32 arithmetic;
    # a K-stride that large (a transposed view with millions of rows) is copied instead.
    x2d = x2d if x2d.stride(1) * blocks["K"] < 2**31 else x2d.contiguous()
    w_packed = w_packed if w_packed.stride(1) * blocks["K"] < 2**31 else w_packed.contiguous()
    zero = w_zero_point if w_zero_point is not None else w_scale
    args = (x2d, w_packed, w_scale, zero, bias if bias is not None else w_scale, y,
            m, n, k, m_bucket(m),
            x2d.stride(0), x2d.stride(1), w_packed.stride(0), w_packed.stride(1),
            w_scale.stride(0), w_scale.stride(1), zero.stride(0), zero.stride(1), y.stride(0), y.stride(1))
    flags = dict(GROUP_K=group_k, HAS_ZERO_POINT=w_zero_point is not None, HAS_BIAS=bias is not None)
    # Triton launches on the current CUDA device; make that x2d's device.
    with torch.cuda.device(x2d.device) if x2d.is_cuda else contextlib.nullcontext():
        if config is None:
            def grid(meta):
                return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)
            _w4a16_linear_tuned[grid](*args, **flags)
        else:
            grid = (triton.cdiv(m, config.kwargs["BLOCK_M"]) * triton.cdiv(n, config.kwargs["BLOCK_N"]),)
            _w4a16_linear_kernel[grid](*args, **flags, **config.kwargs,
                                       num_warps=config.num_warps, num_stages=config.num_stages)
    return y


def _group_k(group_size, k):
    """The kernel's GROUP_K: the group size, or for one group per row (-1) a power
    of two >= K, so that every K tile falls in group 0."""
    if group_size == -1:
        return max(triton.next_power_of_2(k), 2)
    if not isinstance(group_size, int) or group_size < 2 or group_size & (group_size - 1) or k % group_size:
        raise ValueError(f"group_size={group_size} is not supported with K={k}: the Triton W4A16 kernel "
                         f"takes -1 (per channel) or a power of two >= 2 that divides K")
    return group_size


def check_int32_sizes(m, n, k, blocks):
    """The kernel indexes rows, columns and K steps in int32, and tl.cdiv(M, BLOCK_M)
    computes M + BLOCK_M - 1 (likewise N and the K loop): refuse sizes where that wraps."""
    for name, size in (("M", m), ("N", n), ("K", k)):
        if size + blocks[name] - 1 > 2**31 - 1:
            raise ValueError(f"{name}={size} is too large for the Triton W4A16 linear kernel's int32 indexing: "
                             f"{name} + BLOCK_{name} - 1 must be below 2**31 (BLOCK_{name}={blocks[name]})")
