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
