"""Reference for the W8A8 linear op."""

import numpy as np

from .quant import quantize_per_token


def int8_matmul(q, w):
    """Exact integer q @ w^T (int64) of int8 [..., K] and int8 [N, K]."""
    return np.asarray(q).astype(np.int64) @ np.asarray(w).astype(np.int64).T


def int8_linear(x, w_int8, w_scale, bias=None, static_x_scale=None):
    """y = (q @ w^T) * x_scale * w_scale + bias in float64, where (q, x_scale)
    is quantize_per_token(x, static_x_scale). Integer accumulation is exact;
    the float epilogue is float64 (the kernels use float32, within tolerance)."""
    q, x_scale = quantize_per_token(x, static_x_scale)
    acc = int8_matmul(q, w_int8).astype(np.float64)
    y = acc * x_scale[..., None].astype(np.float64) * np.asarray(w_scale, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y
