"""Linear quantization in NumPy: per-tensor, per-channel and per-group,
symmetric and asymmetric, 8 and 4 bits; int4 packing; per-token activation
quantization. Scales are float32 and every step is a float32 operation, so
the torch implementation and the kernels can match these values bit for bit.
"""

import numpy as np

_F32 = np.float32


def _grouped(w, group_size):
    """View a [N, K] float32 matrix as [N, G, group] for the given granularity.

    group_size 0 is per tensor, -1 per output channel (row), g > 0 groups of g
    consecutive input columns.
    """
    n, k = w.shape
    if group_size == 0:
        return w.reshape(1, 1, n * k)
    if group_size == -1:
        return w.reshape(n, 1, k)
    if group_size <= 0 or k % group_size != 0:
        raise ValueError(f"K={k} is not a multiple of group_size={group_size}")
    return w.reshape(n, k // group_size, group_size)


def qrange(bits, symmetric):
    """The integer range [qmin, qmax]. Symmetric ranges drop -2^(b-1) so that
    negation is closed (and the int8 AVX2 kernel cannot saturate)."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return -qmax, qmax
    return 0, 2**bits - 1


def quantization_params(w, bits=8, group_size=-1, symmetric=True):
    """Scale (float32 [N, G]) and zero point (int32 [N, G], or None when
    symmetric) of a float [N, K] weight matrix.

    symmetric:  scale = max|w| / qmax.
    asymmetric: the range is widened to hold 0, scale = (max - min) / (2^b - 1),
                zero_point = rint(-min / scale).
    An all-zero group gets scale 1 (its values quantize to 0 either way).
    """
    g = _grouped(np.asarray(w, dtype=_F32), group_size)
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        amax = np.max(np.abs(g), axis=-1) if g.shape[-1] else np.zeros(g.shape[:2], _F32)
        scale = np.where(amax > 0, amax / _F32(qmax), _F32(1)).astype(_F32)
        return scale, None
    lo = np.minimum(np.min(g, axis=-1), _F32(0)) if g.shape[-1] else np.zeros(g.shape[:2], _F32)
    hi = np.maximum(np.max(g, axis=-1), _F32(0)) if g.shape[-1] else np.zeros(g.shape[:2], _F32)
    span = (hi - lo).astype(_F32)
    scale = np.where(span > 0, span / _F32(qmax - qmin), _F32(1)).astype(_F32)
    zero_point = np.clip(np.rint(-lo / scale), qmin, qmax).astype(np.int32)
    return scale, zero_point


def quantize(w, bits=8, group_size=-1, symmetric=True):
    """Quantize a float [N, K] matrix. Returns (q, scale, zero_point): q is
    int8 [N, K] when symmetric and uint8 [N, K] when asymmetric (4-bit values
    are unpacked here; see pack_int4).

    q = clamp(rint(w / scale) + zero_point, qmin, qmax), division in float32.
    """
    w = np.asarray(w, dtype=_F32)
    if not np.all(np.isfinite(w)):
        raise ValueError("cannot quantize a weight holding NaN or Inf")
    scale, zero_point = quantization_params(w, bits, group_size, symmetric)
    qmin, qmax = qrange(bits, symmetric)
    g = _grouped(w, group_size)
    q = np.rint(g / scale[..., None])
    if zero_point is not None:
        q = q + zero_point[..., None]
    q = np.clip(q, qmin, qmax).reshape(w.shape)
    return q.astype(np.int8 if symmetric else np.uint8), scale, zero_point


def dequantize(q, scale, zero_point=None, group_size=-1):
    """Float32 [N, K] from quantized values: (q - zero_point) * scale."""
    q = np.asarray(q)
    g = _grouped(q.astype(_F32), group_size)
    if zero_point is not None:
        g = g - zero_point[..., None].astype(_F32)
    return (g * scale[..., None]).astype(_F32).reshape(q.shape)


def pack_int4(q, symmetric=True):
    """Pack 4-bit values two per byte along the last axis.

    Element 2i goes to the low nibble of byte i, element 2i+1 to the high
    nibble. A nibble holds q + 8 for symmetric values (-7..7 -> 1..15) and q
    itself for asymmetric ones (0..15). An odd last axis is padded with one
    nibble that unpacks to 0.
    """
    u = np.asarray(q).astype(np.int16) + (8 if symmetric else 0)
    if u.size and (u.min() < 0 or u.max() > 15):
        raise ValueError("values do not fit in 4 bits")
    if u.shape[-1] % 2:
        pad = np.full(u.shape[:-1] + (1,), 8 if symmetric else 0, np.int16)
        u = np.concatenate([u, pad], axis=-1)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed, k, symmetric=True):
    """Inverse of pack_int4: the first k values along the last axis."""
    p = np.asarray(packed, dtype=np.uint8)
    u = np.stack([p & 0xF, p >> 4], axis=-1).reshape(p.shape[:-1] + (-1,))[..., :k]
    return (u.astype(np.int16) - 8).astype(np.int8) if symmetric else u.astype(np.uint8)


def quantize_per_token(x, static_scale=None):
    """Dynamic symmetric int8 quantization of each row (token) of x [..., K].

    In float32: amax = max|x|, scale = amax / 127, inv = 127 / amax,
    q = clamp(rint(x * inv), -127, 127). When inv is not finite (amax == 0, or
    amax below 127 / FLT_MAX) q is 0; a row holding NaN or Inf gives q 0 and
    scale NaN (its linear output is NaN).
    static_scale s > 0 replaces max|x| / 127 for every row: inv = 1 / s, in
    float32 (values beyond +-127 clamp).
    Returns (q int8 [..., K], scale float32 [...]).
    """
    x = np.asarray(x, dtype=_F32)
    finite = np.all(np.isfinite(x), axis=-1)
    safe = np.where(finite[..., None], x, _F32(0))
    amax = np.max(np.abs(safe), axis=-1) if x.shape[-1] else np.zeros(x.shape[:-1], _F32)
    with np.errstate(divide="ignore", over="ignore"):
        if static_scale is None:
            scale = (amax / _F32(127)).astype(_F32)
            inv = (_F32(127) / amax).astype(_F32)
        else:
            scale = np.full(amax.shape, static_scale, _F32)
            inv = np.full(amax.shape, _F32(1) / _F32(static_scale), _F32)
    inv = np.where(np.isfinite(inv), inv, _F32(0)).astype(_F32)
    with np.errstate(over="ignore"):  # a static scale may send x * inv past float32: it clamps
        q = np.clip(np.rint(safe * inv[..., None]), -127, 127).astype(np.int8)
    scale = np.where(finite, scale, _F32(np.nan)).astype(_F32)
    return q, scale
