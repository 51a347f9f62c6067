"""Plain-torch implementations: correct on any device, fast on none.

They follow the same definitions as the NumPy references; the integer matmul
runs in float64, which is exact for every product sum below 2^53.
"""

import torch


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
    c127 = torch.full_like(amax, 127.0)
    scale = amax / c127
    inv = c127 / amax
    inv = torch.where(torch.isfinite(inv), inv, 0.0)
    q = torch.round(safe * inv[..., None]).clamp(-127, 127).to(torch.int8)
    scale = torch.where(finite, scale, float("nan"))
    return q, scale


def int8_linear(x, w_int8, w_scale, bias):
    q, x_scale = quantize_per_token(x)
    acc = q.double() @ w_int8.double().T
    y = acc * x_scale.double()[..., None] * w_scale.reshape(-1).double()
    if bias is not None:
        y = y + bias.double()
    return y.to(x.dtype)
