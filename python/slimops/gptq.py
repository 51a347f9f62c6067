"""GPTQ: post-training quantization of a linear layer with second-order error
feedback (Frantar et al., "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", 2022).

Round-to-nearest makes each weight as close as it can on its own. GPTQ aims at
the layer's output instead: it minimizes ||X W^T - X Q^T||^2 over the inputs X
the layer sees, whose curvature is the Hessian H = sum over input rows x of
x x^T. Columns of W [N, K] are quantized one after another; after each, its
rounding error is spread over the columns not yet quantized, in the proportions
the inverse Hessian gives, so that they compensate for it. With U the upper
Cholesky factor of H^-1 (H^-1 = U^T U), quantizing column j with error e moves
the later columns by -(e / U[j, j]) * U[j, j+1:]. Each update is applied at
once inside a block of columns, and to the columns after the block in one
matrix product when the block is done.

The result is an ordinary QuantizedWeight: the scale and zero-point definitions
of slimops.quantize (applied to each group's range, chosen from the
error-updated weights when the group begins), the same packing, so every op and
QuantLinear run it unchanged. Two options go beyond plain GPTQ: act_order and
search_clip (see gptq_quantize).
"""

from dataclasses import dataclass

import torch
from torch import nn

from .formats.quantized import QuantizedWeight
from .quantization import pack_int4, quantization_params
from .reference.quant import qrange

# Columns whose updates to later columns are applied together.
_BLOCK_COLUMNS = 128


@dataclass
class InputHessian:
    """The sum of x x^T over every input row x a layer received (float64 [K, K])
    and the number of rows. GPTQ needs H only up to a positive factor."""

    xtx: torch.Tensor
    rows: int


def collect_hessians(model: nn.Module, calibrate, names=None) -> dict[str, InputHessian]:
    """Run ``calibrate(model)`` with a forward pre-hook on every nn.Linear of
    model (or on the modules named in ``names``) that adds up each layer's
    input rows as an InputHessian. Returns them keyed by module name, in the
    order the layers first ran; a layer that never ran is missing. The hooks
    are removed afterwards, also when calibrate raises."""
    modules = dict(model.named_modules())
    if names is None:
        names = [name for name, m in modules.items() if type(m) is nn.Linear]
    missing = [name for name in names if name not in modules]
    if missing:
        raise ValueError(f"collect_hessians: the model has no modules named {missing}")
    hessians: dict[str, InputHessian] = {}
    handles = [modules[name].register_forward_pre_hook(_accumulating_hook(name, hessians), with_kwargs=True)
               for name in names]
    try:
        with torch.no_grad():
            calibrate(model)
    finally:
        for handle in handles:
            handle.remove()
    return hessians


def _accumulating_hook(name: str, hessians: dict[str, InputHessian]):
    def hook(module, args, kwargs):
        x = (args[0] if args else kwargs["input"]).detach()
        rows = x.reshape(-1, x.shape[-1]).to(torch.float64)
        if name not in hessians:
            k = rows.shape[1]
            hessians[name] = InputHessian(torch.zeros(k, k, dtype=torch.float64, device=rows.device), 0)
        h = hessians[name]
        h.xtx.addmm_(rows.T, rows)
        h.rows += rows.shape[0]

    return hook


def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, bits: int = 4, group_size: int = 128,
                  symmetric: bool = True, damp: float = 0.01, act_order: bool = True,
                  search_clip: bool = True) -> QuantizedWeight:
    """Quantize a float [N, K] weight with GPTQ against the input Hessian
    [K, K] (e.g. ``InputHessian.xtx``; any positive multiple gives the same
    result). bits 4 or 8; group_size -1 (per output channel) or a divisor of K;
    symmetric or with zero points, as in slimops.quantize.

    damp: the fraction of the mean diagonal of H added to its diagonal, which
    keeps the Cholesky factorization stable when inputs are (nearly) linearly
    dependent, as they are with little calibration data.
    act_order: quantize the columns with the largest H[j, j] (the inputs with
    the most energy) first, while many columns are left to take up their error.
    The order only changes within each group, so groups stay runs of
    consecutive columns, as the format needs; per channel it is the full order.
    search_clip: choose each group's range among shrunken copies of [min, max]
    by the error it gives, weighted by H's diagonal; False takes [min, max] as
    slimops.quantize does (with a diagonal H the result is then exactly its).
    """
    _check_arguments(w, hessian, bits, group_size, damp)
    w, hessian = w.detach(), hessian.to(w.device)
    group = w.shape[1] if group_size == -1 else group_size
    order = _column_order(hessian, group) if act_order else None
    if order is not None:
        w, hessian = w[:, order], hessian[order][:, order]
    q, scales, zero_points = _quantize_columns(w, hessian, bits, group, symmetric, damp, search_clip)
    if order is not None:
        q = q[:, torch.argsort(order)]
    return _quantized_weight(q, scales, zero_points, bits, group_size, symmetric)


def _quantize_columns(w, hessian, bits, group, symmetric, damp, search_clip):
    """The GPTQ loop: (q int16 [N, K], scales [N, 1] and zero points (or None)
    per group, in column order)."""
    n, k = w.shape
    # A group must not straddle two blocks: its parameters are chosen from
    # columns that have all received the updates so far. One group of all K
    # columns begins before any update, so any block size suits it.
    block = _BLOCK_COLUMNS if group == k else group * max(1, _BLOCK_COLUMNS // group)
    damped = _damped(hessian, damp)
    u = _inverse_factor(damped, damp)
    importance = damped.diagonal().to(torch.float32)
    work = w.to(torch.float64, copy=True)
    q = torch.empty(n, k, dtype=torch.int16, device=w.device)
    scales, zero_points = [], []
    for start in range(0, k, block):
        end = min(start + block, k)
        errors = torch.empty(n, end - start, dtype=torch.float64, device=w.device)
        for col in range(start, end):
            if col % group == 0:
                # Parameters from the weights as the errors so far have updated them.
                columns = work[:, col:col + group].float()
                if search_clip:
                    scale, zero_point = _searched_params(columns, importance[col:col + group], bits, symmetric)
                else:
                    scale, zero_point = quantization_params(columns, bits, -1, symmetric)
                scales.append(scale)
                zero_points.append(zero_point)
            column = work[:, col:col + 1]
            q[:, col:col + 1], dequantized = _round_columns(column, scale, zero_point, bits, symmetric)
            error = (column - dequantized)[:, 0] / u[col, col]
            work[:, col + 1:end].addr_(error, u[col, col + 1:end], alpha=-1)
            errors[:, col - start] = error
        work[:, end:] -= errors @ u[start:end, end:]
    return q, scales, zero_points


def _column_order(hessian: torch.Tensor, group: int) -> torch.Tensor:
    """Column indices by decreasing H[j, j] within each group of columns."""
    k = hessian.shape[0]
    energy = hessian.diagonal().reshape(k // group, group)
    within = torch.argsort(energy, dim=1, descending=True, stable=True)
    return (within + torch.arange(0, k, group, device=hessian.device)[:, None]).reshape(k)


# Candidate ranges for search_clip: [min, max] shrunk by 0%, 2.5%, ..., 40%.
_CLIP_FACTORS = [1 - i / 40 for i in range(17)]


def _searched_params(columns, importance, bits, symmetric):
    """Per row, the (scale, zero point) of the candidate range whose rounding
    error sum_j H[j, j] (w_j - dequantized w_j)^2 is smallest (the least
    shrunk on ties, so an unweighted group keeps [min, max])."""
    n, g = columns.shape
    factors = torch.tensor(_CLIP_FACTORS, device=columns.device)[:, None, None]
    scale, zero_point = quantization_params((columns * factors).reshape(-1, g), bits, -1, symmetric)
    _, dequantized = _round_columns(columns.repeat(len(_CLIP_FACTORS), 1), scale, zero_point, bits, symmetric)
    error = ((dequantized.reshape(-1, n, g) - columns) ** 2 * importance).sum(dim=2)
    best = error.argmin(dim=0) * n + torch.arange(n, device=columns.device)  # argmin: the first minimum
    return scale[best], None if zero_point is None else zero_point[best]


def _check_arguments(w, hessian, bits, group_size, damp) -> None:
    if w.dim() != 2 or not w.is_floating_point():
        raise ValueError(f"expected a floating-point [N, K] weight, got {w.dtype} {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("cannot quantize a weight holding NaN or Inf")
    k = w.shape[1]
    if tuple(hessian.shape) != (k, k):
        raise ValueError(f"the Hessian must be [K, K] = {(k, k)} for a weight of shape {tuple(w.shape)}, "
                         f"got {tuple(hessian.shape)}")
    if not bool(torch.isfinite(hessian).all()):
        raise ValueError("the Hessian holds NaN or Inf")
    qrange(bits, symmetric=True)  # refuses bits other than 4 and 8
    if group_size != -1 and (group_size <= 0 or k % group_size):
        raise ValueError(f"group_size={group_size} does not divide K={k}: use a divisor of K or -1 (per channel)")
    if not damp >= 0:
        raise ValueError(f"damp must be >= 0, got {damp}")


def _damped(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """float64 H + damp * mean(diag H) * I; the identity for a layer that only
    ever saw zeros (nothing to weigh: plain rounding).

    An input that is always zero has a zero row and column in H: once damped it
    is quantized by plain rounding and takes no error from the others. Its
    weight is kept (it matters for inputs unlike the calibration data)."""
    h = hessian.to(torch.float64, copy=True)
    diagonal = h.diagonal()
    if bool((diagonal < 0).any()):
        raise ValueError("the Hessian has a negative diagonal entry: it is not a sum of x x^T")
    mean_diagonal = float(diagonal.mean())
    if mean_diagonal == 0:
        return torch.eye(h.shape[0], dtype=torch.float64, device=h.device)
    diagonal.add_(damp * mean_diagonal)
    return h


def _inverse_factor(damped: torch.Tensor, damp: float) -> torch.Tensor:
    """U, upper triangular with U^T U = damped^-1."""
    factor, info = torch.linalg.cholesky_ex(damped)
    if int(info) != 0:
        raise ValueError(f"the Hessian (damped by {damp}) is not positive definite: "
                         "pass a larger damp or more calibration data")
    return torch.linalg.cholesky(torch.cholesky_inverse(factor), upper=True)


def _round_columns(columns, scale, zero_point, bits, symmetric):
    """(q int16, dequantized q in the columns' dtype) of columns [N, G] of one
    group (scale and zero point [N, 1]), in the float32 steps slimops.quantize takes."""
    qmin, qmax = qrange(bits, symmetric)
    q = torch.round(columns.float() / scale)
    if zero_point is not None:
        q = q + zero_point
    q = q.clamp(qmin, qmax)
    shifted = q if zero_point is None else q - zero_point.float()
    return q.to(torch.int16), (shifted * scale).to(columns.dtype)


def _quantized_weight(q, scales, zero_points, bits, group_size, symmetric) -> QuantizedWeight:
    q = q.to(torch.int8 if symmetric else torch.uint8)
    qdata = pack_int4(q, symmetric) if bits == 4 else q
    zero_point = None if symmetric else torch.cat(zero_points, dim=1)
    return QuantizedWeight(qdata, torch.cat(scales, dim=1), zero_point, bits, group_size, symmetric, tuple(q.shape))
