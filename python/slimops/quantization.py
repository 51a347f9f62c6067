"""Linear quantization of weights in torch: per-tensor, per-channel and
per-group, symmetric and asymmetric, 8 and 4 bits.

Every step is the float32 operation that ``slimops.reference.quant`` performs
in NumPy (torch.round rounds half to even like np.rint), so both produce the
same integers and scales bit for bit; the tests hold them to that.

Granularity is given by ``group_size``: 0 per tensor, -1 per output channel
(row of the [N, K] weight), g > 0 groups of g consecutive input columns.
"""

import torch

from .formats.quantized import QuantizedWeight
from .reference.quant import qrange  # pure Python: the range definition is shared, not the arithmetic


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    n, k = w.shape
    if group_size == 0:
        return w.reshape(1, 1, n * k)
    if group_size == -1:
        return w.reshape(n, 1, k)
    if group_size < 0 or k % group_size != 0:
        raise ValueError(
            f"group_size={group_size} does not divide K={k}: use a divisor of K, -1 (per channel) or 0 (per tensor)"
        )
    return w.reshape(n, k // group_size, group_size)


def quantization_params(w: torch.Tensor, bits: int = 8, group_size: int = -1, symmetric: bool = True):
    """Scale (float32 [N, G]) and zero point (int32 [N, G], None if symmetric).

    symmetric: scale = max|w| / qmax; asymmetric: the range [min, max] is
    widened to hold 0, scale = (max - min) / (2^b - 1), zero_point =
    rint(-min / scale). An all-zero group gets scale 1.
    """
    g = _grouped(w.float(), group_size)
    qmin, qmax = qrange(bits, symmetric)
    one = torch.ones((), dtype=torch.float32, device=w.device)
    if g.shape[-1] == 0:
        return torch.ones(g.shape[:2], dtype=torch.float32, device=w.device), (
            None if symmetric else torch.zeros(g.shape[:2], dtype=torch.int32, device=w.device)
        )
    if symmetric:
        amax = g.abs().amax(dim=-1)
        # Tensor / tensor: see backends/fallback.py on divisions by a scalar.
        return torch.where(amax > 0, amax / torch.full_like(amax, qmax), one), None
    lo = g.amin(dim=-1).clamp(max=0)
    hi = g.amax(dim=-1).clamp(min=0)
    span = hi - lo
    scale = torch.where(span > 0, span / torch.full_like(span, qmax - qmin), one)
    zero_point = torch.round(-lo / scale).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def quantize_tensor(w: torch.Tensor, bits: int = 8, group_size: int = -1, symmetric: bool = True):
    """(q, scale, zero_point) of a float [N, K] weight: q = clamp(rint(w / scale)
    + zero_point). q is int8 when symmetric, uint8 when asymmetric (4-bit
    values unpacked)."""
    if w.dim() != 2:
        raise ValueError(f"expected a 2-D [N, K] weight, got shape {tuple(w.shape)}")
    if not w.is_floating_point():
        raise TypeError(f"expected a floating-point weight, got {w.dtype}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("cannot quantize a weight holding NaN or Inf")
    scale, zero_point = quantization_params(w, bits, group_size, symmetric)
    qmin, qmax = qrange(bits, symmetric)
    q = torch.round(_grouped(w.float(), group_size) / scale[..., None])
    if zero_point is not None:
        q = q + zero_point[..., None]
    q = q.clamp(qmin, qmax).reshape(w.shape)
    return q.to(torch.int8 if symmetric else torch.uint8), scale, zero_point


def dequantize_tensor(q: torch.Tensor, scale: torch.Tensor, zero_point=None, group_size: int = -1) -> torch.Tensor:
    """float32 (q - zero_point) * scale, the inverse of quantize_tensor."""
    g = _grouped(q.float(), group_size)
    if zero_point is not None:
        g = g - zero_point[..., None].float()
    return (g * scale[..., None]).reshape(q.shape)


def pack_int4(q: torch.Tensor, symmetric: bool = True) -> torch.Tensor:
    """Two 4-bit values per byte along the last axis: element 2i in the low
    nibble, 2i+1 in the high nibble; a nibble holds q + 8 when symmetric
    (-7..7 -> 1..15) and q when asymmetric (0..15). Odd K is padded with a
    nibble that unpacks to 0."""
    u = q.to(torch.int16) + (8 if symmetric else 0)
    if u.numel() and (int(u.min()) < 0 or int(u.max()) > 15):
        raise ValueError("values do not fit in 4 bits")
    if u.shape[-1] % 2:
        u = torch.nn.functional.pad(u, (0, 1), value=8 if symmetric else 0)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).to(torch.uint8)


def unpack_int4(packed: torch.Tensor, k: int, symmetric: bool = True) -> torch.Tensor:
    """Inverse of pack_int4: the first k values along the last axis."""
    p = packed.to(torch.int16)
    u = torch.stack([p & 0xF, p >> 4], dim=-1).reshape(*p.shape[:-1], -1)[..., :k]
    return (u - 8).to(torch.int8) if symmetric else u.to(torch.uint8)


def quantize(w: torch.Tensor, bits: int = 8, group_size: int = -1, symmetric: bool = True) -> QuantizedWeight:
    """Quantize a float [N, K] weight; returns a QuantizedWeight (``.dequantize()``).

    bits 8 or 4; group_size -1 per channel, 0 per tensor, or a divisor of K;
    symmetric (zero point 0, range +-(2^(b-1)-1)) or asymmetric (zero points).
    4-bit values are stored packed two per byte (see pack_int4).
    """
    q, scale, zero_point = quantize_tensor(w, bits, group_size, symmetric)
    qdata = pack_int4(q, symmetric) if bits == 4 else q
    return QuantizedWeight(qdata, scale, zero_point, bits, group_size, symmetric, tuple(w.shape))
