"""CPU kernels in slimops._C (AVX-512 VNNI, AVX2 or scalar, chosen at run time)."""

import math

import torch

from .. import _C
from .._checks import as_rows


def _rows_f32(x: torch.Tensor) -> torch.Tensor:
    """x as float32 [rows, K] rows the kernel can walk (a copy only when needed)."""
    x2 = as_rows(x)
    return x2 if x2.dtype == torch.float32 else x2.float()


def static_scale_value(x_scale: torch.Tensor) -> float:
    value = float(x_scale.reshape(()))
    if not (value > 0 and math.isfinite(value) and math.isfinite(1 / value)):
        raise ValueError(f"slimops.int8_linear: the static activation scale must be positive and finite, got {value}")
    return value


def _bias_f32(bias):
    if bias is None or (bias.dtype == torch.float32 and bias.is_contiguous()):
        return bias
    return bias.to(torch.float32).contiguous()


def _as_output(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The float32 [rows, N] kernel output in x's leading shape and dtype."""
    if x.dim() != 2:
        y = y.reshape(*x.shape[:-1], y.shape[-1])
    return y if x.dtype == torch.float32 else y.to(x.dtype)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x2 = _rows_f32(x)
    rows, cols = x2.shape
    q = torch.empty((rows, cols), dtype=torch.int8)
    scale = torch.empty(rows, dtype=torch.float32)
    _C.quantize_per_token_cpu(
        x2.data_ptr(), rows, cols, x2.stride(0), q.data_ptr(), scale.data_ptr(), torch.get_num_threads()
    )
    return q.reshape(x.shape), scale.reshape(x.shape[:-1])


def int8_linear(x, w_int8, w_scale, bias, x_scale=None):
    x2 = _rows_f32(x)
    rows, k = x2.shape
    n = w_int8.shape[0]
    y = torch.empty((rows, n), dtype=torch.float32)
    # Per-call overhead matters at M=1: convert only what needs it.
    if w_scale.dim() != 1 or not w_scale.is_contiguous():
        w_scale = w_scale.reshape(-1).contiguous()
    bias = _bias_f32(bias)
    _C.int8_linear_cpu(
        x2.data_ptr(),
        rows,
        k,
        x2.stride(0),
        0.0 if x_scale is None else static_scale_value(x_scale),
        w_int8.data_ptr(),
        n,
        w_scale.data_ptr(),
        0 if bias is None else bias.data_ptr(),
        y.data_ptr(),
        torch.get_num_threads(),
    )
    return _as_output(y, x)


def w8a16_linear(x, w_int8, w_scale, bias):
    x2 = _rows_f32(x)
    rows, k = x2.shape
    n = w_int8.shape[0]
    y = torch.empty((rows, n), dtype=torch.float32)
    if w_scale.dim() != 1 or not w_scale.is_contiguous():
        w_scale = w_scale.reshape(-1).contiguous()
    bias = _bias_f32(bias)
    _C.w8a16_linear_cpu(
        x2.data_ptr(),
        rows,
        k,
        x2.stride(0),
        w_int8.data_ptr(),
        n,
        w_scale.data_ptr(),
        0 if bias is None else bias.data_ptr(),
        y.data_ptr(),
        torch.get_num_threads(),
    )
    return _as_output(y, x)


def w4a8_linear(x, w_packed, w_scale, w_zero_point, group_size, bias):
    x2 = _rows_f32(x)
    rows, k = x2.shape
    n = w_packed.shape[0]
    y = torch.empty((rows, n), dtype=torch.float32)
    w_scale = w_scale.contiguous()
    if w_zero_point is not None:
        w_zero_point = w_zero_point.contiguous()
    bias = _bias_f32(bias)
    _C.w4a8_linear_cpu(
        x2.data_ptr(),
        rows,
        k,
        x2.stride(0),
        w_packed.data_ptr(),
        n,
        w_scale.data_ptr(),
        0 if w_zero_point is None else w_zero_point.data_ptr(),
        group_size,
        0 if bias is None else bias.data_ptr(),
        y.data_ptr(),
        torch.get_num_threads(),
    )
    return _as_output(y, x)
