"""Magnitude pruning: masks, a sparsity schedule and a pruner for fine-tuning.

Mask convention (what the sparse formats and kernels build on):
- a mask is a bool tensor of the weight's shape, on its device; True = kept;
- importance is |w|. Among equal scores the lower index is kept (flat row-major
  index for unstructured and global, position in the group for N:M, row-major
  block index for blocks), so each mask is deterministic and removes exactly
  the stated count: round(sparsity * count), Python's round (half to even);
- the structured patterns see a weight as the matrix [N, K] = w.reshape(N, -1)
  (a conv weight [O, C, kh, kw] becomes [O, C*kh*kw]); N:M groups are m
  consecutive entries of a row from column 0; blocks tile [N, K] from [0, 0].
"""

import numbers
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["PolynomialDecay", "Pruner", "block_mask", "effective_weight_and_mask", "global_unstructured_masks",
           "nm_mask", "unstructured_mask"]

METHODS = ("unstructured", "global", "n:m", "block")
# Modules whose .weight is [out, in, ...]; transposed convs ([in, out, ...]) are left out on purpose.
PRUNABLE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_weight(w, what: str = "weight") -> None:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"slimops.prune: {what} must be a tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"slimops.prune: {what} must be a floating-point tensor, got {w.dtype}")
    if w.dim() < 2:
        raise ValueError(
            f"slimops.prune: {what} must be [N, K] or a conv weight [N, C, ...], got shape {tuple(w.shape)}"
        )
    if torch.isnan(w).any():
        raise ValueError(f"slimops.prune: {what} contains NaN, so its magnitudes cannot be ranked")


def _check_sparsity(sparsity) -> None:
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0 <= sparsity < 1:
        raise ValueError(f"slimops.prune: sparsity must be a number in [0, 1), got {sparsity!r}")


def _count_to_keep(total: int, sparsity) -> int:
    return total - round(sparsity * total)


def _keep_largest(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Bool mask over the last dim of `scores` keeping its n_keep largest entries.

    A stable descending sort puts equal scores in index order, so the lower
    index wins a tie."""
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    return mask.scatter_(-1, order[..., :n_keep], True)


def _as_matrix(w: torch.Tensor) -> torch.Tensor:
    return w.detach().reshape(w.shape[0], -1)


def unstructured_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keeps all but the round(sparsity * numel) smallest |w|."""
    _check_weight(w)
    _check_sparsity(sparsity)
    scores = w.detach().abs().reshape(-1)
    return _keep_largest(scores, _count_to_keep(w.numel(), sparsity)).reshape(w.shape)


def global_unstructured_masks(weights: dict, sparsity: float) -> dict:
    """{name: mask}: one ranking of |w| over every layer together, removing
    round(sparsity * total elements); a tie across layers goes to the layer
    earlier in `weights`."""
    if not weights:
        raise ValueError("slimops.prune: global_unstructured_masks needs at least one weight")
    for name, w in weights.items():
        _check_weight(w, f"weight {name!r}")
    _check_sparsity(sparsity)
    # float64 holds every float dtype exactly, so layers of different dtypes rank exactly against each other.
    scores = torch.cat([w.detach().abs().reshape(-1).to(torch.float64) for w in weights.values()])
    keep = _keep_largest(scores, _count_to_keep(scores.numel(), sparsity))
    parts = keep.split([w.numel() for w in weights.values()])
    return {name: part.reshape(w.shape) for (name, w), part in zip(weights.items(), parts)}


def nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M sparsity along K: keeps the n largest |w| of every m consecutive entries of a row."""
    _check_weight(w)
    if not (_is_int(n) and _is_int(m)) or not 1 <= n <= m:
        raise ValueError(f"slimops.prune: N:M needs integers 1 <= n <= m, got n={n!r}, m={m!r}")
    mat = _as_matrix(w)
    rows, k = mat.shape
    if k % m:
        raise ValueError(f"slimops.prune: N:M needs K divisible by m: K={k} (weight {tuple(w.shape)}), m={m}")
    groups = mat.abs().reshape(rows, k // m, m)
    return _keep_largest(groups, n).reshape(w.shape)


def _block_grid(w: torch.Tensor, block) -> tuple:
    """(block rows, block cols) of w seen as [N, K]; ValueError unless the block tiles it."""
    if not isinstance(block, (tuple, list)) or len(block) != 2 or not all(_is_int(b) and b >= 1 for b in block):
        raise ValueError(f"slimops.prune: block must be two positive integers (bn, bk), got {block!r}")
    bn, bk = block
    rows, k = w.shape[0], w[0].numel()
    if rows % bn or k % bk:
        raise ValueError(f"slimops.prune: block {bn}x{bk} does not tile the weight seen as [N={rows}, K={k}]")
    return rows // bn, k // bk


def block_mask(w: torch.Tensor, block: tuple, sparsity: float) -> torch.Tensor:
    """Scores each (bn, bk) block by its L2 norm and removes the round(sparsity * blocks) lowest."""
    _check_weight(w)
    _check_sparsity(sparsity)
    grid_n, grid_k = _block_grid(w, block)
    bn, bk = block
    # float32 at least, so fp16 squares do not overflow; squared norms rank like norms without sqrt rounding.
    tiles = _as_matrix(w).to(torch.promote_types(w.dtype, torch.float32)).reshape(grid_n, bn, grid_k, bk)
    scores = tiles.square().sum(dim=(1, 3)).reshape(-1)
    keep = _keep_largest(scores, _count_to_keep(scores.numel(), sparsity)).reshape(grid_n, grid_k)
    return keep.repeat_interleave(bn, 0).repeat_interleave(bk, 1).reshape(w.shape)


@dataclass(frozen=True)
class PolynomialDecay:
    """Sparsity rising from initial_sparsity at begin_step to final_sparsity at
    end_step as TF-MOT's PolynomialDecay does:
    final + (initial - final) * (1 - (step - begin) / (end - begin)) ** power.

    Before begin_step the sparsity is 0: nothing is pruned yet (TF-MOT does not
    prune before begin_step either). After end_step it stays final.
    Pruning happens at begin_step, every `frequency` steps after it, and at
    end_step itself even when frequency does not divide end - begin (unlike
    TF-MOT), so final_sparsity is always reached."""

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    power: float = 3
    frequency: int = 100

    def __post_init__(self):
        if not 0 <= self.initial_sparsity <= self.final_sparsity < 1:
            raise ValueError(
                "slimops.prune: PolynomialDecay needs 0 <= initial_sparsity <= final_sparsity < 1, "
                f"got {self.initial_sparsity!r}, {self.final_sparsity!r}"
            )
        if not (_is_int(self.begin_step) and _is_int(self.end_step)) or not 0 <= self.begin_step < self.end_step:
            raise ValueError(
                f"slimops.prune: PolynomialDecay needs integers 0 <= begin_step < end_step, "
                f"got {self.begin_step!r}, {self.end_step!r}"
            )
        if not self.power > 0:
            raise ValueError(f"slimops.prune: PolynomialDecay needs power > 0, got {self.power!r}")
        if not _is_int(self.frequency) or self.frequency < 1:
            raise ValueError(f"slimops.prune: PolynomialDecay needs an integer frequency >= 1, got {self.frequency!r}")

    def sparsity(self, step: int) -> float:
        if step < self.begin_step:
            return 0.0
        if step >= self.end_step:
            return float(self.final_sparsity)
        remaining = 1 - (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * remaining**self.power

    def should_prune(self, step: int) -> bool:
        if not self.begin_step <= step <= self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step


def _named_weights(target) -> dict:
    """{name: weight tensor} from a model (every Linear and Conv1d/2d/3d weight, by qualified
    name) or from (module, attribute) pairs (named "<index>.<attribute>")."""
    if isinstance(target, nn.Module):
        pairs = [(f"{name}.weight" if name else "weight", module, "weight")
                 for name, module in target.named_modules() if isinstance(module, PRUNABLE_MODULES)]
    else:
        pairs = [(f"{i}.{attr}", module, attr) for i, (module, attr) in enumerate(target)]
    if not pairs:
        raise ValueError("slimops.prune: nothing to prune (no Linear/Conv weight, or an empty list)")
    weights = {}
    for key, module, attr in pairs:
        if hasattr(module, attr + "_orig"):
            raise ValueError(
                f"slimops.prune: {key} is already pruned with torch.nn.utils.prune; call prune.remove first"
            )
        weights[key] = getattr(module, attr)
        _check_weight(weights[key], key)
    return weights


class Pruner:
    """Gradual magnitude pruning during fine-tuning.

    target: a model (its Linear and Conv1d/2d/3d weights) or a list of (module, "weight") pairs.
    method: "unstructured" (per layer), "global" (one ranking over all layers),
    "block" (needs block=(bn, bk)) or "n:m" (nm=(n, m), 2:4 by default).

    Call step() once after every optimizer.step(): it re-zeroes the pruned
    weights, and when schedule.should_prune(step) recomputes the masks at
    schedule.sparsity(step) from the current magnitudes. Pruned weights are
    zero, so they rank lowest and stay pruned as the sparsity grows.

    N:M has a fixed sparsity of 1 - n/m, so it takes no schedule: its masks are
    computed and applied here, once (one-shot, then fine-tuning with the pattern
    fixed); step() only re-applies them.

    Masks live in self.masks ({name: bool mask, True = kept}), not as module
    buffers, so the model's state_dict is unchanged.
    """

    def __init__(self, target, schedule=None, method: str = "unstructured", *, nm: tuple = (2, 4), block=None):
        if method not in METHODS:
            raise ValueError(f"slimops.prune: method must be one of {METHODS}, got {method!r}")
        if method == "n:m" and schedule is not None:
            raise ValueError("slimops.prune: n:m sparsity is fixed at 1 - n/m; pass no schedule")
        if method != "n:m" and schedule is None:
            raise ValueError(f"slimops.prune: method {method!r} needs a schedule (e.g. PolynomialDecay)")
        self.method = method
        self.schedule = schedule
        self.nm = nm
        self.block = block
        self.weights = _named_weights(target)
        self.masks = {}
        self.current_step = 0
        if method == "block":
            for w in self.weights.values():
                _block_grid(w, block)
        if method == "n:m":
            self.masks = {name: nm_mask(w, *nm) for name, w in self.weights.items()}
            self.apply()

    def _compute_masks(self, sparsity: float) -> dict:
        if self.method == "global":
            return global_unstructured_masks(self.weights, sparsity)
        if self.method == "block":
            return {name: block_mask(w, self.block, sparsity) for name, w in self.weights.items()}
        return {name: unstructured_mask(w, sparsity) for name, w in self.weights.items()}

    def step(self) -> bool:
        """Re-prunes if the schedule says so at the current step, applies the masks
        and advances the step; returns whether the masks were recomputed."""
        self.apply()
        prune_now = self.schedule is not None and self.schedule.should_prune(self.current_step)
        if prune_now:
            self.masks = self._compute_masks(self.schedule.sparsity(self.current_step))
            self.apply()
        self.current_step += 1
        return prune_now

    @torch.no_grad()
    def apply(self) -> None:
        """Zeroes the pruned weights in place (after an optimizer step moved them)."""
        for name, mask in self.masks.items():
            self.weights[name].masked_fill_(~mask, 0)

    def sparsity(self) -> dict:
        """{name: fraction of the weight its mask removes}; 0.0 before the first pruning."""
        return {name: (~self.masks[name]).sum().item() / w.numel() if name in self.masks else 0.0
                for name, w in self.weights.items()}


def effective_weight_and_mask(module: nn.Module, name: str = "weight") -> tuple:
    """(dense weight with the pruned entries zero, bool mask True = kept), both new tensors.

    - Pruned with torch.nn.utils.prune (`<name>_orig` and `<name>_mask` present):
      the weight is built from <name>_orig now, so it is current even when no
      forward (which refreshes module.<name>) ran since <name>_orig changed.
    - Otherwise (after prune.remove, or a plain dense weight): the weight as it
      is, mask = weight != 0 (a kept weight that is exactly zero counts as pruned).
    """
    orig = getattr(module, name + "_orig", None)
    torch_mask = getattr(module, name + "_mask", None)
    if orig is not None and torch_mask is not None:
        _check_weight(orig, name + "_orig")
        keep = torch_mask.detach() != 0
        return torch.where(keep, orig.detach(), 0.0), keep
    weight = getattr(module, name)
    _check_weight(weight, name)
    weight = weight.detach().clone()
    return weight, weight != 0
