"""Plain-torch implementations: correct on any device, fast on none.

They follow the same definitions as the NumPy references; the integer matmul
runs in float64, which is exact for every product sum below 2^53.
"""

import torch


def quantize_per_token(x: torch.Tensor, static_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token scales, or with static_scale (one float32 value) that scale for every row."""
    xf = x.float()
    finite = torch.isfinite(xf).all(dim=-1)
    safe = torch.where(finite[..., None], xf, 0.0)
    if xf.shape[-1] == 0:
        amax = torch.zeros(xf.shape[:-1], dtype=torch.float32, device=x.device)
    else:
        amax = safe.abs().amax(dim=-1)
    # Tensor / tensor divisions: torch may compute a division involving a
    # scalar as a reciprocal times the scalar (scalar / tensor on the CPU,
    # tensor / scalar on CUDA), which is not the correctly rounded quotient
    # the kernels and the reference use.
    if static_scale is None:
        c127 = torch.full_like(amax, 127.0)
        scale = amax / c127
        inv = c127 / amax
    else:
        scale = static_scale.reshape(()).expand(amax.shape)
        inv = torch.ones_like(scale) / scale
    inv = torch.where(torch.isfinite(inv), inv, 0.0)
    q = torch.round(safe * inv[..., None]).clamp(-127, 127).to(torch.int8)
    scale = torch.where(finite, scale, float("nan"))
    return q, scale


def check_static_scale(op: str, x_scale: torch.Tensor) -> None:
    """A static activation scale must be positive and finite (and so its inverse):
    read on the host for CPU tensors, asserted on the device otherwise."""
    ok = (x_scale > 0) & torch.isfinite(x_scale) & torch.isfinite(1 / x_scale)
    if x_scale.device.type == "cpu":
        if not bool(ok.all()):
            raise ValueError(f"slimops.{op}: the static activation scale must be positive and finite, got {x_scale}")
    else:
        torch._assert_async(ok.all(), f"slimops.{op}: the static activation scale must be positive and finite")


def int8_linear(x, w_int8, w_scale, bias, x_scale=None):
    if x_scale is not None:
        check_static_scale("int8_linear", x_scale)
    q, x_scale = quantize_per_token(x, x_scale)
    acc = q.double() @ w_int8.double().T
    y = acc * x_scale.double()[..., None] * w_scale.reshape(-1).double()
    if bias is not None:
        y = y + bias.double()
    return y.to(x.dtype)


def w8a16_linear(x, w_int8, w_scale, bias):
    w = w_int8.float() * w_scale.reshape(-1, 1)
    bias = None if bias is None else bias.float()
    return torch.nn.functional.linear(x.float(), w, bias).to(x.dtype)


def int4_weight(w_packed, w_zero_point, groups, k):
    """(u - z) as int16 [N, G, K / G] from the packed nibbles (z = 8 when symmetric).
    Zero points outside 0..15 are refused: on the host for CPU tensors, by a
    device-side assert elsewhere (no host sync per call)."""
    if w_zero_point is not None and w_zero_point.numel():
        ok = ((w_zero_point >= 0) & (w_zero_point <= 15)).all()
        message = "slimops: a 4-bit zero point is outside 0..15"
        if w_zero_point.device.type == "cpu":
            if not bool(ok):
                raise ValueError(message)
        else:
            torch._assert_async(ok, message)
    n = w_packed.shape[0]
    p = w_packed.to(torch.int16)
    u = torch.stack([p & 0xF, p >> 4], dim=-1).reshape(n, -1)[:, :k]
    z = torch.full((n, groups), 8, dtype=torch.int16, device=w_packed.device) if w_zero_point is None else w_zero_point
    return u.reshape(n, groups, k // groups if groups else 0) - z[..., None]


def w4a8_linear(x, w_packed, w_scale, w_zero_point, group_size, bias):
    k = x.shape[-1]
    n = w_packed.shape[0]
    groups = w_scale.shape[1]
    q, x_scale = quantize_per_token(x)
    # float64 [N, K] weight (u - z) * s: each product with q is exact, only the
    # order of the float64 sum differs from the reference's group-by-group one.
    w = (int4_weight(w_packed, w_zero_point, groups, k).double() * w_scale.double()[..., None]).reshape(n, k)
    y = (q.reshape(-1, k).double() @ w.T) * x_scale.reshape(-1, 1).double()
    if bias is not None:
        y = y + bias.double()
    return y.reshape(*x.shape[:-1], n).to(x.dtype)


def w4a16_linear(x, w_packed, w_scale, w_zero_point, group_size, bias):
    k = x.shape[-1]
    n = w_packed.shape[0]
    w = (int4_weight(w_packed, w_zero_point, w_scale.shape[1], k).float() * w_scale[..., None]).reshape(n, k)
    bias = None if bias is None else bias.float()
    return torch.nn.functional.linear(x.float(), w, bias).to(x.dtype)


_ACTIVATIONS = {
    "none": lambda v: v,
    "relu": torch.nn.functional.relu,
    "relu6": torch.nn.functional.relu6,
    "silu": torch.nn.functional.silu,
    "hardswish": torch.nn.functional.hardswish,
}


def dwsep_conv2d(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2, residual):
    """The unfused chain in x's dtype (differentiable: the op's backward
    recomputes through it)."""
    top, bottom, left, right = padding
    d = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (left, right, top, bottom)), dw_weight, dw_bias,
                                   stride=tuple(stride), dilation=tuple(dilation), groups=x.shape[1])
    y = _ACTIVATIONS[act2](torch.nn.functional.conv2d(_ACTIVATIONS[act1](d), pw_weight, pw_bias))
    if residual:
        y = y + x
    return y


# ---- sparse linear ops ---------------------------------------------------------
# Each builds the dense float32 [N, K] weight from the compressed arrays (one
# scatter, no host sync) and multiplies densely: correct on any device, and as
# fast as a dense layer at best. The indexing raises on an out-of-range index
# (a device-side assert on CUDA) instead of reading or writing past the weight.
def _in_range_or_raise(idx: torch.Tensor, limit: int) -> torch.Tensor:
    """idx as int64 for indexing; torch indexing wraps negative indices, so they
    are sent to `limit`, past the end, where the indexing raises."""
    idx = idx.long()
    return torch.where(idx < 0, limit, idx)


def _row_of_each(ptr: torch.Tensor, entries: int) -> torch.Tensor:
    """int64 [entries]: the row of each stored entry. A searchsorted rather than a
    repeat_interleave, so the shape is static (no host sync, traceable); an entry
    past ptr[-1] gets row N, out of range."""
    return torch.searchsorted(ptr[1:].long(), torch.arange(entries, device=ptr.device), right=True)


def _dequantized(w: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    return w if scale is None else w * scale[:, None]


def csr_dense_weight(row_ptr, col_idx, values, scale, n, k) -> torch.Tensor:
    rows = _row_of_each(row_ptr, col_idx.numel())
    w = torch.zeros((n, k), dtype=torch.float32, device=values.device)
    w[rows, _in_range_or_raise(col_idx, k)] = values.float()
    return _dequantized(w, scale)


def bsr_dense_weight(block_row_ptr, block_col_idx, values, scale, n, k) -> torch.Tensor:
    bn, bk = values.shape[1:]
    block_rows = _row_of_each(block_row_ptr, block_col_idx.numel())
    blocks = torch.zeros((n // bn, k // bk, bn, bk), dtype=torch.float32, device=values.device)
    blocks[block_rows, _in_range_or_raise(block_col_idx, k // bk)] = values.float()
    return _dequantized(blocks.permute(0, 2, 1, 3).reshape(n, k), scale)


def nm_dense_weight(values, indices, scale, pattern_n, pattern_m, k) -> torch.Tensor:
    """Positions unpacked low bits first (2 bits for m = 4, 4 bits for m = 8) and
    scattered into each group of m; scatter raises on a position >= m (possible
    with 4-bit fields) rather than spilling into the next group."""
    n = values.shape[0]
    groups = k // pattern_m
    bits = 2 if pattern_m == 4 else 4
    shifts = torch.arange(0, 8, bits, device=indices.device)
    fields = ((indices.long()[..., None] >> shifts) & ((1 << bits) - 1)).reshape(n, indices.shape[1] * shifts.numel())
    positions = fields[:, : groups * pattern_n].reshape(n, groups, pattern_n)
    w = torch.zeros((n, groups, pattern_m), dtype=torch.float32, device=values.device)
    w.scatter_(-1, positions, values.float().reshape(n, groups, pattern_n))
    return _dequantized(w.reshape(n, k), scale)


def _dense_linear(x, w, bias):
    return torch.nn.functional.linear(x.float(), w, None if bias is None else bias.float()).to(x.dtype)


def csr_linear(x, row_ptr, col_idx, values, scale, n, bias):
    return _dense_linear(x, csr_dense_weight(row_ptr, col_idx, values, scale, n, x.shape[-1]), bias)


def bsr_linear(x, block_row_ptr, block_col_idx, values, scale, n, bias):
    return _dense_linear(x, bsr_dense_weight(block_row_ptr, block_col_idx, values, scale, n, x.shape[-1]), bias)


def nm_linear(x, values, indices, scale, pattern_n, pattern_m, bias):
    return _dense_linear(x, nm_dense_weight(values, indices, scale, pattern_n, pattern_m, x.shape[-1]), bias)
