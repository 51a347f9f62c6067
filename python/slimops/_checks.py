"""Argument checks shared by every backend and the fake implementations.

They read only metadata (shapes, dtypes, devices), never data, so they cost
a few microseconds and work under torch.compile's fake tensors.
"""

import math

import torch

from . import _C

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Largest K the int8 kernels accept: 127 * 128 * K must fit in int32.
INT8_MAX_K = _C.int8_linear_max_k


def check_activation(op: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"slimops.{op}: x must be a tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"slimops.{op}: x must be float32, float16 or bfloat16, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"slimops.{op}: x must have at least one dimension, got a scalar")
    check_strided(op, x=x)


def check_int8_linear(x, w_int8, w_scale, bias) -> None:
    op = "int8_linear"
    check_activation(op, x)
    check_strided(op, w_int8=w_int8, w_scale=w_scale, bias=bias)
    if w_int8.dtype != torch.int8 or w_int8.dim() != 2:
        raise TypeError(f"slimops.{op}: w_int8 must be an int8 [N, K] tensor, got {w_int8.dtype} {tuple(w_int8.shape)}")
    n, k = w_int8.shape
    if x.shape[-1] != k:
        raise ValueError(f"slimops.{op}: x has {x.shape[-1]} features but w_int8 is [N={n}, K={k}]")
    if k > INT8_MAX_K:
        raise ValueError(f"slimops.{op}: K={k} exceeds {INT8_MAX_K}, beyond which int32 accumulation could overflow")
    if not w_int8.is_contiguous():
        raise ValueError(f"slimops.{op}: w_int8 must be contiguous (call .contiguous() once when preparing the weight)")
    if w_scale.dtype != torch.float32 or w_scale.numel() != n or w_scale.dim() > 2:
        raise ValueError(
            f"slimops.{op}: w_scale must be float32 with N={n} elements, got {w_scale.dtype} {tuple(w_scale.shape)}"
        )
    if bias is not None and (not bias.is_floating_point() or tuple(bias.shape) != (n,)):
        raise ValueError(f"slimops.{op}: bias must be a float [N={n}] tensor, got {bias.dtype} {tuple(bias.shape)}")
    for name, t in (("w_int8", w_int8), ("w_scale", w_scale), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"slimops.{op}: {name} is on {t.device} but x is on {x.device}")


def check_strided(op: str, **tensors) -> None:
    for name, t in tensors.items():
        if t is not None and t.layout != torch.strided:
            raise TypeError(f"slimops.{op}: {name} must be a dense (strided) tensor, got layout {t.layout}")


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """x viewed as [rows, K] with unit column stride and non-overlapping rows,
    copying only when the kernels could not walk it (transposed, broadcast or
    overlapping views)."""
    k = x.shape[-1]
    x2 = x if x.dim() == 2 else x.reshape(math.prod(x.shape[:-1]), k)
    if (k > 1 and x2.stride(-1) != 1) or (x2.shape[0] > 1 and x2.stride(0) < k):
        x2 = x2.contiguous()
    return x2
