"""CUDA implementations: the CUDA C++ kernels in slimops._C (when it was built
with nvcc) and the Triton kernels in slimops.kernels (when triton imports)."""

import importlib.util

import torch

from .. import _C
from .._checks import as_rows, dwsep_output_size
from . import fallback

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

HAS_CUDA_EXTENSION = bool(getattr(_C, "has_cuda", False))
HAS_TRITON = importlib.util.find_spec("triton") is not None


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x2 = as_rows(x)
    rows, cols = x2.shape
    q = torch.empty((rows, cols), dtype=torch.int8, device=x.device)
    scale = torch.empty(rows, dtype=torch.float32, device=x.device)
    with torch.cuda.device(x.device):
        _C.quantize_per_token_cuda(
            x2.data_ptr(),
            _DTYPE_CODES[x.dtype],
            rows,
            cols,
            x2.stride(0),
            q.data_ptr(),
            scale.data_ptr(),
            torch.cuda.current_stream(x.device).cuda_stream,
        )
    return q.reshape(x.shape), scale.reshape(x.shape[:-1])


def int8_linear(x, w_int8, w_scale, bias, x_scale=None):
    from ..kernels.int8_linear import int8_linear as triton_int8_linear

    if x_scale is not None:
        fallback.check_static_scale("int8_linear", x_scale)
        q, row_scale = fallback.quantize_per_token(x, x_scale)
    elif HAS_CUDA_EXTENSION:
        q, row_scale = quantize_per_token(x)
    else:  # without the CUDA extension the activations are quantized by plain torch
        q, row_scale = fallback.quantize_per_token(x)
    n = w_int8.shape[0]
    y = triton_int8_linear(as_rows(q), row_scale.reshape(-1), w_int8, w_scale, bias, out_dtype=x.dtype)
    return y.reshape(*x.shape[:-1], n)


def int8_linear_declines(x, w_int8, w_scale, bias, x_scale=None):
    if not HAS_TRITON:
        return "triton is not installed"
    if x_scale is not None:
        return "static activation scales on CUDA go to the cuda_triton_static kernel"
    return None


def w4a16_linear(x, w_packed, w_scale, w_zero_point, group_size, bias):
    from ..kernels.w4a16_linear import w4a16_linear as triton_w4a16_linear

    y = triton_w4a16_linear(as_rows(x), w_packed, w_scale, w_zero_point, group_size, bias)
    return y.reshape(*x.shape[:-1], w_packed.shape[0])


def w4a16_group_supported(x, w_packed, w_scale, w_zero_point, group_size, bias):
    """The Triton W4A16 kernel takes per-channel groups or power-of-two group sizes."""
    if group_size == -1 or (group_size >= 2 and group_size & (group_size - 1) == 0):
        return None
    return f"group_size={group_size} is not -1 or a power of two"


def dwsep_conv2d(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2, residual):
    from ..kernels.dwsep_conv2d import dwsep_conv2d as triton_dwsep_conv2d

    return triton_dwsep_conv2d(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2,
                               residual)


def dwsep_declines(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2, residual):
    """The Triton kernel needs triton, and sizes its int32 indexing can reach."""
    if not HAS_TRITON:
        return "triton is not installed"
    from ..kernels.dwsep_conv2d import unsupported_reason

    # The op has checked the arguments already.
    ho, wo = dwsep_output_size(*x.shape[2:], *dw_weight.shape[2:], stride, padding, dilation)
    return unsupported_reason(x, pw_weight, padding, ho, wo)


def bsr_linear(x, block_row_ptr, block_col_idx, values, scale, n, bias):
    from ..kernels.bsr_linear import bsr_linear as triton_bsr_linear

    y = triton_bsr_linear(as_rows(x), block_row_ptr, block_col_idx, values, scale, n, bias)
    return y.reshape(*x.shape[:-1], n)


def bsr_linear_declines(x, block_row_ptr, block_col_idx, values, scale, n, bias):
    """The Triton kernel needs triton, blocks of at most 64x64 and sizes its int32 indexing can reach."""
    if not HAS_TRITON:
        return "triton is not installed"
    from ..kernels.bsr_linear import unsupported_reason

    return unsupported_reason(x, values, n)


def nm_linear(x, values, indices, scale, pattern_n, pattern_m, bias):
    from ..kernels.nm_linear import nm_linear as triton_nm_linear

    y = triton_nm_linear(as_rows(x), values, indices, scale, pattern_n, pattern_m, bias)
    return y.reshape(*x.shape[:-1], values.shape[0])


def nm_linear_declines(x, values, indices, scale, pattern_n, pattern_m, bias):
    """The Triton kernel needs triton and sizes its int32 indexing can reach."""
    if not HAS_TRITON:
        return "triton is not installed"
    from ..kernels.nm_linear import unsupported_reason

    return unsupported_reason(x, values)
