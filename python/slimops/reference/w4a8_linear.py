"""Reference for the W4A8 linear op (4-bit group-wise weights, int8 per-token activations)."""

import numpy as np

from .quant import quantize_per_token


def w4a8_group_sums(q, w_packed, k, w_zero_point, group_size):
    """Exact d[..., n, j] = sum_{k in group j} q[..., k] * (u[n, k] - z[n, j]) (int64), where u are the
    nibbles of w_packed (element 2i in the low nibble of byte i, 2i+1 in the high one) and z is w_zero_point,
    or 8 (the symmetric nibble offset) when it is None."""
    p = np.asarray(w_packed, dtype=np.uint8)
    u = np.stack([p & 0xF, p >> 4], axis=-1).reshape(p.shape[0], -1)[:, :k].astype(np.int64)
    g = k if group_size == -1 else group_size
    groups = k // g if g else 0
    z = np.full((p.shape[0], groups), 8, np.int64) if w_zero_point is None else np.asarray(w_zero_point, np.int64)
    uz = u.reshape(p.shape[0], groups, g) - z[..., None]
    qg = np.asarray(q).astype(np.int64).reshape(*np.shape(q)[:-1], groups, g)
    return np.einsum("...jk,njk->...nj", qg, uz)


def w4a8_linear(x, w_packed, w_scale, w_zero_point, group_size, bias=None):
    """y[m, n] = s_x[m] * sum_j d[m, n, j] * w_scale[n, j] + bias[n] in float64, with (q, s_x) =
    quantize_per_token(x) and d the exact group sums of w4a8_group_sums. The kernels compute the same
    formula in float32 (group sum accumulated in group order), within tolerance of this."""
    x = np.asarray(x, dtype=np.float32)
    q, x_scale = quantize_per_token(x)
    d = w4a8_group_sums(q, w_packed, x.shape[-1], w_zero_point, group_size).astype(np.float64)
    y = (d * np.asarray(w_scale, np.float64)).sum(axis=-1) * x_scale[..., None].astype(np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y
