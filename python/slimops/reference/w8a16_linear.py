"""Reference for the W8A16 linear op."""

import numpy as np


def w8a16_linear(x, w_int8, w_scale, bias=None):
    """y = x @ (w_int8 * w_scale[:, None])^T + bias, all in float64 (the kernels
    accumulate in float32 in a fixed order, within tolerance of this)."""
    w = np.asarray(w_int8).astype(np.float64) * np.asarray(w_scale, np.float64).reshape(-1, 1)
    y = np.asarray(x, np.float64) @ w.T
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y
