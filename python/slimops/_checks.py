"""Argument checks shared by every backend and the fake implementations.

They read only metadata (shapes, dtypes, devices), never data, so they cost
a few microseconds and work under torch.compile's fake tensors.
"""

import math

import torch

from . import _C

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Largest K the int8 kernels accept: 127 * 128 * K must fit in int32.
INT8_MAX_K = _C.int8_linear_max_k
# Largest K the W4A8 kernels accept: 127 * 15 * K must fit in int32.
W4A8_MAX_K = _C.w4a8_linear_max_k


def check_activation(op: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"slimops.{op}: x must be a tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"slimops.{op}: x must be float32, float16 or bfloat16, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"slimops.{op}: x must have at least one dimension, got a scalar")
    if x.layout != torch.strided:
        raise TypeError(f"slimops.{op}: x must be a dense (strided) tensor, got layout {x.layout}")


def check_int8_weight(op, x, w_int8, w_scale, bias, **others) -> None:
    """Checks shared by the ops taking a per-channel int8 weight (the layout of
    slimops.quantize(w, bits=8)): x, w_int8 [N, K] contiguous, float32 w_scale
    with N elements, an optional float bias [N]; `others` (tensors or None) must
    be dense and on x's device."""
    check_activation(op, x)
    check_placement(op, x, w_int8=w_int8, w_scale=w_scale, bias=bias, **others)
    if w_int8.dtype != torch.int8 or w_int8.dim() != 2:
        raise TypeError(f"slimops.{op}: w_int8 must be an int8 [N, K] tensor, got {w_int8.dtype} {tuple(w_int8.shape)}")
    n, k = w_int8.shape
    if x.shape[-1] != k:
        raise ValueError(f"slimops.{op}: x has {x.shape[-1]} features but w_int8 is [N={n}, K={k}]")
    if not w_int8.is_contiguous():
        raise ValueError(f"slimops.{op}: w_int8 must be contiguous (call .contiguous() once when preparing the weight)")
    if w_scale.dtype != torch.float32 or w_scale.numel() != n or w_scale.dim() > 2:
        raise ValueError(
            f"slimops.{op}: w_scale must be float32 with N={n} elements, got {w_scale.dtype} {tuple(w_scale.shape)}"
        )
    if bias is not None and (not bias.is_floating_point() or tuple(bias.shape) != (n,)):
        raise ValueError(f"slimops.{op}: bias must be a float [N={n}] tensor, got {bias.dtype} {tuple(bias.shape)}")


def check_int8_linear(x, w_int8, w_scale, bias, x_scale=None) -> None:
    op = "int8_linear"
    check_int8_weight(op, x, w_int8, w_scale, bias, x_scale=x_scale)
    if x_scale is not None and (x_scale.dtype != torch.float32 or x_scale.numel() != 1):
        raise ValueError(
            f"slimops.{op}: x_scale (a static activation scale) must be one float32 value, "
            f"got {x_scale.dtype} {tuple(x_scale.shape)}"
        )
    k = w_int8.shape[1]
    if k > INT8_MAX_K:
        raise ValueError(f"slimops.{op}: K={k} exceeds {INT8_MAX_K}, beyond which int32 accumulation could overflow")


def check_w8a16_linear(x, w_int8, w_scale, bias) -> None:
    check_int8_weight("w8a16_linear", x, w_int8, w_scale, bias)


def check_int4_linear(op, x, w_packed, w_scale, w_zero_point, group_size, bias) -> None:
    """Checks shared by the ops taking a 4-bit group-wise weight (the layout of
    slimops.quantize(w, bits=4, ...): packed nibbles, scales, zero points)."""
    check_activation(op, x)
    check_placement(op, x, w_packed=w_packed, w_scale=w_scale, w_zero_point=w_zero_point, bias=bias)
    if w_packed.dtype != torch.uint8 or w_packed.dim() != 2:
        raise TypeError(
            f"slimops.{op}: w_packed must be a uint8 [N, ceil(K/2)] tensor, got {w_packed.dtype} {tuple(w_packed.shape)}"
        )
    k = x.shape[-1]
    n, kh = w_packed.shape
    if kh != (k + 1) // 2:
        raise ValueError(f"slimops.{op}: x has K={k} features, so w_packed needs ceil(K/2)={(k + 1) // 2} columns, got {kh}")
    if not w_packed.is_contiguous():
        raise ValueError(f"slimops.{op}: w_packed must be contiguous (call .contiguous() once when preparing the weight)")
    if not isinstance(group_size, int) or not (group_size == -1 or (group_size > 0 and k % group_size == 0)):
        raise ValueError(
            f"slimops.{op}: group_size={group_size} does not divide K={k}: use a positive divisor of K or -1 (per channel)"
        )
    groups = 1 if group_size == -1 else k // group_size
    if w_scale.dtype != torch.float32 or tuple(w_scale.shape) != (n, groups):
        raise ValueError(
            f"slimops.{op}: w_scale must be float32 [N={n}, G={groups}] (K={k}, group_size={group_size}), "
            f"got {w_scale.dtype} {tuple(w_scale.shape)}"
        )
    if w_zero_point is not None and (w_zero_point.dtype != torch.int32 or tuple(w_zero_point.shape) != (n, groups)):
        raise ValueError(
            f"slimops.{op}: w_zero_point must be None (symmetric) or int32 [N={n}, G={groups}], "
            f"got {w_zero_point.dtype} {tuple(w_zero_point.shape)}"
        )
    if bias is not None and (not bias.is_floating_point() or tuple(bias.shape) != (n,)):
        raise ValueError(f"slimops.{op}: bias must be a float [N={n}] tensor, got {bias.dtype} {tuple(bias.shape)}")


def check_w4a8_linear(x, w_packed, w_scale, w_zero_point, group_size, bias) -> None:
    check_int4_linear("w4a8_linear", x, w_packed, w_scale, w_zero_point, group_size, bias)
    if x.shape[-1] > W4A8_MAX_K:
        raise ValueError(
            f"slimops.w4a8_linear: K={x.shape[-1]} exceeds {W4A8_MAX_K}, beyond which int32 accumulation could overflow"
        )


def check_placement(op: str, x: torch.Tensor, **tensors) -> None:
    """Every tensor given (None allowed) is dense and on x's device. One pass:
    this runs on every call, where microseconds count at M=1."""
    device = x.device
    for name, t in tensors.items():
        if t is None:
            continue
        if t.layout != torch.strided:
            raise TypeError(f"slimops.{op}: {name} must be a dense (strided) tensor, got layout {t.layout}")
        if t.device != device:
            raise ValueError(f"slimops.{op}: {name} is on {t.device} but x is on {device}")


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """x viewed as [rows, K] with unit column stride and non-overlapping rows,
    copying only when the kernels could not walk it (transposed, broadcast or
    overlapping views)."""
    k = x.shape[-1]
    x2 = x if x.dim() == 2 else x.reshape(math.prod(x.shape[:-1]), k)
    if (k > 1 and x2.stride(-1) != 1) or (x2.shape[0] > 1 and x2.stride(0) < k):
        x2 = x2.contiguous()
    return x2


DWSEP_ACTIVATIONS = ("none", "relu", "relu6", "silu", "hardswish")
# float64 is for gradcheck: only the plain-torch path takes it.
DWSEP_DTYPES = FLOAT_DTYPES + (torch.float64,)


def _dwsep_pairs(name, values, count, minimum):
    ok = len(values) == count
    for v in values:  # a plain loop: this runs three times on every call
        ok = ok and type(v) is int and v >= minimum
    if not ok:
        raise ValueError(f"slimops.dwsep_conv2d: {name} must be {count} integers >= {minimum}, got {list(values)}")


def dwsep_output_size(h, w, kh, kw, stride, padding, dilation) -> tuple[int, int]:
    """(Ho, Wo) of the depthwise convolution, as torch's conv2d computes them."""
    ho = (h + padding[0] + padding[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + padding[2] + padding[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return ho, wo


def check_dwsep_conv2d(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2, residual):
    """Checks of the fused depthwise-separable convolution; returns the output's
    spatial size (Ho, Wo). Each tensor attribute is read once: these checks run
    on every call of a layer, and at batch 1 the late MobileNetV2 blocks take
    well under 100 us."""
    op = "dwsep_conv2d"
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"slimops.{op}: x must be a 4-D [B, C, H, W] tensor, got {getattr(x, 'shape', type(x))}")
    dtype = x.dtype
    if dtype not in DWSEP_DTYPES:
        raise TypeError(f"slimops.{op}: x must be float32, float16, bfloat16 or float64, got {dtype}")
    if x.layout != torch.strided:
        raise TypeError(f"slimops.{op}: x must be a dense (strided) tensor, got layout {x.layout}")
    for name, t, optional in (("dw_weight", dw_weight, False), ("dw_bias", dw_bias, True),
                              ("pw_weight", pw_weight, False), ("pw_bias", pw_bias, True)):
        if not isinstance(t, torch.Tensor) and not (optional and t is None):
            raise TypeError(f"slimops.{op}: {name} must be a tensor{' or None' if optional else ''}, "
                            f"got {type(t).__name__}")
    check_placement(op, x, dw_weight=dw_weight, dw_bias=dw_bias, pw_weight=pw_weight, pw_bias=pw_bias)
    _, c, h, w = x.shape
    dw_shape, pw_shape = dw_weight.shape, pw_weight.shape
    if len(dw_shape) != 4 or dw_shape[0] != c or dw_shape[1] != 1 or dw_shape[2] < 1 or dw_shape[3] < 1:
        raise ValueError(f"slimops.{op}: dw_weight must be [C={c}, 1, KH, KW] (channel multiplier 1), "
                         f"got {tuple(dw_shape)}")
    if len(pw_shape) != 4 or pw_shape[1] != c or pw_shape[2] != 1 or pw_shape[3] != 1:
        raise ValueError(f"slimops.{op}: pw_weight must be [O, C={c}, 1, 1], got {tuple(pw_shape)}")
    o = pw_shape[0]
    for name, t, length in (("dw_bias", dw_bias, c), ("pw_bias", pw_bias, o)):
        if t is not None and (t.dim() != 1 or t.shape[0] != length):
            raise ValueError(f"slimops.{op}: {name} must be [{length}], got {tuple(t.shape)}")
    for name, t in (("dw_weight", dw_weight), ("dw_bias", dw_bias), ("pw_weight", pw_weight), ("pw_bias", pw_bias)):
        if t is not None and t.dtype != dtype:
            raise TypeError(f"slimops.{op}: {name} must have x's dtype {dtype}, got {t.dtype}")
    _dwsep_pairs("stride", stride, 2, 1)
    _dwsep_pairs("padding (top, bottom, left, right)", padding, 4, 0)
    _dwsep_pairs("dilation", dilation, 2, 1)
    if act1 not in DWSEP_ACTIVATIONS:
        raise ValueError(f"slimops.{op}: act1={act1!r} is not one of {DWSEP_ACTIVATIONS}")
    if act2 not in DWSEP_ACTIVATIONS:
        raise ValueError(f"slimops.{op}: act2={act2!r} is not one of {DWSEP_ACTIVATIONS}")
    kh, kw = dw_shape[2], dw_shape[3]
    ho, wo = dwsep_output_size(h, w, kh, kw, stride, padding, dilation)
    if ho < 1 or wo < 1:
        raise ValueError(f"slimops.{op}: the padded input ({h + padding[0] + padding[1]}x"
                         f"{w + padding[2] + padding[3]}) is smaller than the dilated {kh}x{kw} kernel")
    if residual and (o != c or ho != h or wo != w):
        raise ValueError(f"slimops.{op}: residual needs O == C and an output of x's size, got O={o}, C={c}, "
                         f"output {ho}x{wo} from {h}x{w}")
    return ho, wo


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether x is laid out NHWC (and not also plain NCHW, as when H = W = 1):
    the fused convolution returns its output in the input's memory format."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


# ---- sparse linear ops (the arrays of slimops.formats.sparse, layout version 1) ----
# These checks read metadata only. Whether the indices are sorted and in range is
# data, checked once by the format classes when a weight is built or loaded; the
# plain-torch implementations index in ways that raise rather than read out of bounds.
SPARSE_VALUE_DTYPES = FLOAT_DTYPES + (torch.int8,)
SPARSE_PTR_DTYPES = (torch.int32, torch.int64)
SPARSE_IDX_DTYPES = (torch.int16, torch.int32)
NM_GROUP_SIZES = (4, 8)


def _check_array(op, name, t, dtypes, shape) -> None:
    """t is a contiguous tensor of one of dtypes with exactly this shape."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"slimops.{op}: {name} must be a tensor, got {type(t).__name__}")
    if t.dtype not in dtypes or tuple(t.shape) != tuple(shape):
        allowed = "/".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"slimops.{op}: {name} must be {allowed} {tuple(shape)}, got {t.dtype} {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"slimops.{op}: {name} must be contiguous (kernels read it as a flat array)")


def _check_sparse_common(op, x, values, scale, n, bias, **indices) -> None:
    """x, placement, the int8 values <-> scale pairing and the bias of every sparse op."""
    check_activation(op, x)
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"slimops.{op}: values must be a tensor, got {type(values).__name__}")
    check_placement(op, x, values=values, scale=scale, bias=bias, **indices)
    if values.dtype not in SPARSE_VALUE_DTYPES:
        raise TypeError(f"slimops.{op}: values must be float32, float16, bfloat16 or int8, got {values.dtype}")
    if values.dtype == torch.int8:
        if scale is None:
            raise ValueError(f"slimops.{op}: int8 values need a float32 per-output-channel scale [N={n}]")
        _check_array(op, "scale", scale, (torch.float32,), (n,))
    elif scale is not None:
        raise ValueError(f"slimops.{op}: {values.dtype} values take no scale (only int8 values do); pass None")
    if bias is not None and (not bias.is_floating_point() or tuple(bias.shape) != (n,)):
        raise ValueError(f"slimops.{op}: bias must be a float [N={n}] tensor, got {bias.dtype} {tuple(bias.shape)}")


def _check_out_features(op, n) -> None:
    if type(n) is not int or n < 0:
        raise ValueError(f"slimops.{op}: n (the output features N) must be a non-negative int, got {n!r}")


def _check_compressed_rows(op, ptr, idx, rows, ptr_name, idx_name) -> None:
    _check_array(op, ptr_name, ptr, SPARSE_PTR_DTYPES, (rows + 1,))
    if not isinstance(idx, torch.Tensor) or idx.dim() != 1:
        raise ValueError(f"slimops.{op}: {idx_name} must be a 1-D tensor, got {getattr(idx, 'shape', type(idx))}")
    _check_array(op, idx_name, idx, SPARSE_IDX_DTYPES, idx.shape)


def check_csr_linear(x, row_ptr, col_idx, values, scale, n, bias) -> None:
    op = "csr_linear"
    _check_out_features(op, n)
    _check_sparse_common(op, x, values, scale, n, bias, row_ptr=row_ptr, col_idx=col_idx)
    _check_compressed_rows(op, row_ptr, col_idx, n, "row_ptr", "col_idx")
    _check_array(op, "values", values, SPARSE_VALUE_DTYPES, col_idx.shape)


def check_bsr_linear(x, block_row_ptr, block_col_idx, values, scale, n, bias) -> None:
    """The block size (bn, bk) is values.shape[1:]."""
    op = "bsr_linear"
    _check_out_features(op, n)
    _check_sparse_common(op, x, values, scale, n, bias, block_row_ptr=block_row_ptr, block_col_idx=block_col_idx)
    if values.dim() != 3 or min(values.shape[1:]) < 1:
        raise ValueError(f"slimops.{op}: values must be [nblocks, bn, bk] with bn, bk >= 1, got {tuple(values.shape)}")
    bn, bk = values.shape[1:]
    k = x.shape[-1]
    if n % bn or k % bk:
        raise ValueError(f"slimops.{op}: the block {bn}x{bk} (values.shape[1:]) does not divide N={n} x K={k}")
    _check_compressed_rows(op, block_row_ptr, block_col_idx, n // bn, "block_row_ptr", "block_col_idx")
    _check_array(op, "values", values, SPARSE_VALUE_DTYPES, (block_col_idx.numel(), bn, bk))


def nm_packed_width(kept_per_row, pattern_m) -> int:
    """Bytes per row of N:M indices: 2-bit positions (4 a byte) for m = 4, 4-bit (2 a byte) for m = 8."""
    per_byte = 4 if pattern_m == 4 else 2
    return -(-kept_per_row // per_byte)


def check_nm_linear(x, values, indices, scale, pattern_n, pattern_m, bias) -> None:
    """N (the output features) is values.shape[0]."""
    op = "nm_linear"
    if type(pattern_m) is not int or type(pattern_n) is not int or pattern_m not in NM_GROUP_SIZES \
            or not 1 <= pattern_n < pattern_m:
        raise ValueError(f"slimops.{op}: pattern {pattern_n}:{pattern_m} is not supported "
                         f"(pattern_m in {NM_GROUP_SIZES}, 1 <= pattern_n < pattern_m)")
    if not isinstance(values, torch.Tensor) or values.dim() != 2:
        raise ValueError(f"slimops.{op}: values must be a 2-D [N, K/m * n] tensor, "
                         f"got {getattr(values, 'shape', type(values))}")
    n = values.shape[0]
    _check_sparse_common(op, x, values, scale, n, bias, indices=indices)
    k = x.shape[-1]
    if k % pattern_m:
        raise ValueError(f"slimops.{op}: x has K={k} features, not a multiple of the group size m={pattern_m}")
    kept = k // pattern_m * pattern_n
    _check_array(op, "values", values, SPARSE_VALUE_DTYPES, (n, kept))
    _check_array(op, "indices", indices, (torch.uint8,), (n, nm_packed_width(kept, pattern_m)))
