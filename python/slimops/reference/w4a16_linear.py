"""Reference for the W4A16 linear op (4-bit group-wise weights, float activations)."""

import numpy as np


def round_to_bf16(a):
    """float32 values rounded to the nearest bfloat16 (ties to even), as float32; NaN stays NaN."""
    a = np.asarray(a, dtype=np.float32)
    bits = a.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(a), a, rounded)


def w4a16_linear(x, w_packed, w_scale, w_zero_point, group_size, bias=None, bf16=False):
    """y = x @ W^T + bias in float64, W = (u - z) * s group by group.

    x: float [..., K]. w_packed: uint8 [N, ceil(K/2)], the 4-bit values u of
    row n two per byte, element 2i in the low nibble of byte i and 2i+1 in
    the high one (quant.pack_int4's layout; an odd K's padding nibble is
    ignored). w_scale: float32 [N, G] with s = w_scale[n, k // group_size].
    w_zero_point: None for symmetric weights, whose z is the nibble offset 8,
    or int32 [N, G] for asymmetric ones. group_size: g > 0 dividing K, or -1
    for one group of K (per output channel). bias: None or [N].

    Everything here is exact or float64. The GPU kernel instead keeps the
    activations in their own dtype (fp16, bf16 or fp32), forms u - z exactly
    in that dtype and multiplies it by the scale rounded to that dtype (two
    roundings per weight), accumulates the dot products in float32 and adds
    the bias in float32 before casting to the activation dtype; it is held to
    this reference within the roundoff that implies.

    bf16=True gives the CPU kernels' operands: x rounded to bfloat16 (from
    float32), W = bf16(float32(u - z) * s); the products and their sum are
    still float64 here (the kernels' products are exact in float32 too).
    """
    x = np.asarray(x, dtype=np.float64)
    k = x.shape[-1]
    w_packed = np.asarray(w_packed)
    if w_packed.dtype != np.uint8 or w_packed.ndim != 2 or w_packed.shape[1] != (k + 1) // 2:
        raise ValueError(f"w_packed must be uint8 [N, {(k + 1) // 2}] for K={k}, "
                         f"got {w_packed.dtype}{w_packed.shape}")
    n = w_packed.shape[0]
    g = max(k, 1) if group_size == -1 else group_size
    if not isinstance(g, (int, np.integer)) or g <= 0 or k % g:
        raise ValueError(f"group_size={group_size} must be -1 or a positive divisor of K={k}")
    groups = 1 if group_size == -1 else k // g
    w_scale = np.asarray(w_scale)
    if w_scale.dtype != np.float32 or w_scale.shape != (n, groups):
        raise ValueError(f"w_scale must be float32 [{n}, {groups}], got {w_scale.dtype}{w_scale.shape}")
    if w_zero_point is None:
        z = np.full((n, groups), 8, np.int64)
    else:
        z = np.asarray(w_zero_point)
        if z.dtype != np.int32 or z.shape != (n, groups):
            raise ValueError(f"w_zero_point must be None or int32 [{n}, {groups}], got {z.dtype}{z.shape}")

    u = np.stack([w_packed & 0xF, w_packed >> 4], axis=-1).reshape(n, -1)[:, :k].astype(np.int64)
    group = np.arange(k) // g
    if bf16:
        x = round_to_bf16(x.astype(np.float32)).astype(np.float64)
        w = round_to_bf16((u - z[:, group]).astype(np.float32) * w_scale[:, group]).astype(np.float64)
    else:
        w = (u - z[:, group]).astype(np.float64) * w_scale.astype(np.float64)[:, group]
    y = x @ w.T
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(n)
    return y
