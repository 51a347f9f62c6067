"""SparseLinear: a drop-in replacement for nn.Linear holding its pruned weight in one
format of slimops.formats and running the matching op:

  layout "csr"    CSRWeight   csr_linear   any pattern of zeros
  layout "bsr"    BSRWeight   bsr_linear   zeros in whole blocks (block=(bn, bk))
  layout "nm"     NMWeight    nm_linear    at most n nonzeros in every m along K (pattern=(n, m))
  layout "dense"  the plain dense weight, F.linear: what "auto" keeps when no sparse kernel beats it

Fine-tuning trains the stored values only: float values are an nn.Parameter, the
index arrays are buffers, so pruned weights stay pruned. A BSR weight stores whole
blocks, so the zeros inside a kept block are values and do learn.
"""

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from ..formats.sparse import NM_GROUPS, BSRWeight, CSRWeight, NMWeight
from ..prune import block_mask, effective_weight_and_mask, nm_mask, unstructured_mask
from ..sparse_layout import KINDS, choose_layout, describe

LAYOUTS = ("auto", "csr", "bsr", "2:4", "n:m", "dense")
_FORMATS = {"csr": CSRWeight, "bsr": BSRWeight, "nm": NMWeight}


def check_layout_options(layout: str, sparsity, pattern, expected_rows) -> tuple[str, tuple[int, int] | None]:
    """(kind, pattern) for from_linear's layout and pattern: kind "auto" or one of KINDS;
    a clear ValueError for anything from_linear cannot do."""
    if layout not in LAYOUTS:
        raise ValueError(f"SparseLinear: layout must be one of {LAYOUTS}, got {layout!r}")
    if sparsity is not None and (isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real)
                                 or not 0 <= sparsity < 1):
        raise ValueError(f"SparseLinear: sparsity must be None or a number in [0, 1), got {sparsity!r}")
    if isinstance(expected_rows, bool) or not isinstance(expected_rows, int) or expected_rows < 1:
        raise ValueError(f"SparseLinear: expected_rows must be a positive int, got {expected_rows!r}")
    if layout == "2:4" and pattern not in (None, (2, 4)):
        raise ValueError(f"SparseLinear: layout '2:4' has pattern (2, 4), got pattern={pattern!r}")
    if layout not in ("2:4", "n:m"):
        if pattern is not None:
            raise ValueError(f"SparseLinear: pattern= is for layout 'n:m', not {layout!r}")
        return layout, None
    pattern = (2, 4) if layout == "2:4" else pattern
    if (not isinstance(pattern, tuple) or len(pattern) != 2 or not all(type(p) is int for p in pattern)
            or pattern[1] not in NM_GROUPS or not 1 <= pattern[0] < pattern[1]):
        raise ValueError(f"SparseLinear: layout 'n:m' needs pattern=(n, m) with m in {NM_GROUPS} and 1 <= n < m, "
                         f"got {pattern!r}")
    n, m = pattern
    if sparsity is not None and not math.isclose(sparsity, 1 - n / m):
        raise ValueError(f"SparseLinear: the {n}:{m} pattern has sparsity {1 - n / m:g}; got sparsity={sparsity!r} "
                         f"(pass {1 - n / m:g} to prune to the pattern, or None to keep the weight's zeros)")
    return "nm", pattern


class SparseLinear(nn.Module):
    """Parameters: ``values`` (float values; an int8 weight keeps them, with its float32
    per-row ``scale``, as buffers) and ``bias``. Buffers: the format's index arrays and its
    ``meta`` (layout version, kind, shape), so the state_dict is the format's
    state_dict (slimops.formats) plus ``bias``; loading validates it as the format does
    and takes its number of stored values. Layout "dense" holds ``weight`` instead.

    The constructor makes an all-zero weight (to load a state_dict into);
    ``from_linear`` builds one from a (pruned) nn.Linear.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, layout: str = "csr",
                 block: tuple[int, int] = (16, 16), pattern: tuple[int, int] = (2, 4), int8: bool = False,
                 device=None, dtype=None):
        super().__init__()
        if layout not in KINDS:
            raise ValueError(f"SparseLinear: layout must be one of {KINDS}, got {layout!r}")
        if layout == "dense" and int8:
            raise ValueError("SparseLinear: int8=True needs a sparse layout ('csr', 'bsr' or 'nm')")
        self.in_features = in_features
        self.out_features = out_features
        self.layout = layout
        self.block = tuple(block) if layout == "bsr" else None
        self.pattern = tuple(pattern) if layout == "nm" else None
        self.int8 = int8
        dtype = dtype or torch.float32
        zeros = torch.zeros((out_features, in_features), device=device, dtype=dtype)
        if layout == "dense":
            self.weight = nn.Parameter(zeros)
        else:
            self._set_format(self._format_from_dense(zeros, zeros != 0))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, layout: str = "auto", sparsity: float | None = None,
                    block: tuple[int, int] = (16, 16), pattern: tuple[int, int] | None = None,
                    expected_rows: int = 1, int8: bool = False) -> "SparseLinear":
        """The weight's zeros (or, for a layer pruned with torch.nn.utils.prune, its mask) set
        the pattern; with sparsity= the weight is first pruned by magnitude (slimops.prune:
        unstructured, in blocks for "bsr", to the pattern for "2:4"/"n:m"). layout "auto"
        takes slimops.choose_layout's pick for activations of expected_rows rows (int8=True
        then applies only if it picks a sparse layout)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"SparseLinear.from_linear: expected an nn.Linear, got {type(linear).__name__}")
        kind, pattern = check_layout_options(layout, sparsity, pattern, expected_rows)
        weight, mask = effective_weight_and_mask(linear)
        if sparsity is not None:
            mask &= _magnitude_mask(weight, kind, sparsity, block, pattern)
            weight = torch.where(mask, weight, 0.0)
        elif kind == "nm":
            _check_fits_pattern(mask, pattern)
        if kind == "auto":
            choice = choose_layout(weight, expected_rows, weight.device, weight.dtype, mask=mask, int8=int8)
            kind, block, pattern = choice.kind, choice.block or block, choice.pattern
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, kind, block,
                     pattern, int8 and kind != "dense", device=weight.device, dtype=weight.dtype)
        if kind == "dense":
            module.weight.data.copy_(weight)
        else:
            module._set_format(module._format_from_dense(weight, mask))
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        return module

    def _format_from_dense(self, weight: torch.Tensor, mask: torch.Tensor):
        if self.layout == "csr":
            return CSRWeight.from_dense(weight, mask, quantize_int8=self.int8)
        if self.layout == "bsr":
            # The weight is zero wherever the mask is False, so its zeros give the kept blocks.
            return BSRWeight.from_dense(weight, self.block, quantize_int8=self.int8)
        return NMWeight.from_dense(weight, self.pattern, mask, quantize_int8=self.int8)

    def _set_format(self, sparse_weight) -> None:
        self._format_keys = tuple(sparse_weight.state_dict())
        for name, t in sparse_weight.state_dict().items():
            if name == "values" and t.is_floating_point():
                self.values = nn.Parameter(t)
            else:
                self.register_buffer(name, t)

    def sparse_weight(self) -> CSRWeight | BSRWeight | NMWeight:
        """The format object of the current values (validated, sharing this module's tensors)."""
        if self.layout == "dense":
            raise ValueError("SparseLinear: layout 'dense' holds a plain weight, no sparse format")
        return _FORMATS[self.layout].from_state_dict({key: getattr(self, key).detach() for key in self._format_keys})

    def dense_weight(self) -> torch.Tensor:
        """[out, in]: the weight this layer computes with (float32 for int8 values)."""
        return self.weight.detach() if self.layout == "dense" else self.sparse_weight().to_dense()

    @property
    def density(self) -> float:
        """The fraction of the [out, in] weight stored and multiplied (1.0 for dense)."""
        stored = self.weight if self.layout == "dense" else self.values
        return stored.numel() / max(self.in_features * self.out_features, 1)

    def to_linear(self) -> nn.Linear:
        """An nn.Linear holding the dense weight, pruned entries zero."""
        w = self.dense_weight()
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=w.device,
                           dtype=w.dtype)
        with torch.no_grad():
            linear.weight.copy_(w)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # CSR and BSR arrays do not record K: a wrong width would index past it or read zero columns.
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear: expected x [..., {self.in_features}], got shape {tuple(x.shape)}")
        if self.layout == "dense":
            return F.linear(x, self.weight, self.bias)
        ops = torch.ops.slimops
        scale = self._buffers.get("scale")
        if self.layout == "csr":
            return ops.csr_linear(x, self.row_ptr, self.col_idx, self.values, scale, self.out_features, self.bias)
        if self.layout == "bsr":
            return ops.bsr_linear(x, self.block_row_ptr, self.block_col_idx, self.values, scale, self.out_features,
                                  self.bias)
        return ops.nm_linear(x, self.values, self.indices, scale, *self.pattern, self.bias)

    def _apply(self, fn, recurse=True):
        # model.half() / .to(bfloat16) cast every floating buffer; the ops take a float32 scale.
        super()._apply(fn, recurse)
        if "scale" in self._buffers:
            self._buffers["scale"] = self._buffers["scale"].float()
        return self

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"layout={describe(self.layout, self.block, self.pattern)}, density={self.density:.3f}"
                + (", int8=True" if self.int8 else ""))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # The number of stored values is data, not part of the module's shape: validate
        # the saved format, resize to it, then let nn.Module copy the tensors as usual.
        # A saved format that fails validation goes to error_msgs, as torch's own checks
        # do, and this module stays as it was.
        if self.layout != "dense":
            problems = self._resize_to_saved_format(state_dict, prefix)
            if problems:
                where = f"{prefix.rstrip('.')}: " if prefix else ""
                error_msgs.extend(where + p for p in problems)
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _resize_to_saved_format(self, state_dict, prefix) -> list[str]:
        saved = {key: state_dict[prefix + key] for key in (*self._format_keys, "scale") if prefix + key in state_dict}
        if not saved:
            return []  # nn.Module reports the missing keys
        try:
            loaded = _FORMATS[self.layout].from_state_dict(saved)
        except ValueError as error:
            return [str(error)]
        found = (loaded.shape, getattr(loaded, "block", None), getattr(loaded, "pattern", None),
                 loaded.values.dtype == torch.int8)
        expected = ((self.out_features, self.in_features), self.block, self.pattern, self.int8)
        if found != expected:
            return [f"the state_dict holds (shape, block, pattern, int8) = {found}, this module is {expected}"]
        # Take the saved tensors where their shape (or an index array's dtype: int32 or
        # int64 pointers, by nnz) differs; the values keep this module's dtype, as nn.Module's loading does.
        for key in self._format_keys:
            current, new = getattr(self, key), saved[key]
            if isinstance(current, nn.Parameter):
                if current.shape != new.shape:
                    values = new.to(device=current.device, dtype=current.dtype, copy=True)
                    setattr(self, key, nn.Parameter(values, requires_grad=current.requires_grad))
            elif (current.shape, current.dtype) != (new.shape, new.dtype):
                self.register_buffer(key, new.to(device=current.device, copy=True))
        return []


def _check_fits_pattern(mask: torch.Tensor, pattern: tuple[int, int]) -> None:
    (rows, k), (n, m) = mask.shape, pattern
    if k % m == 0 and bool((mask.reshape(rows, k // m, m).sum(dim=-1) > n).any()):
        raise ValueError(f"SparseLinear: the weight breaks the {n}:{m} pattern (a group of {m} along K keeps more "
                         f"than {n}); pass sparsity={1 - n / m:g} to prune it to the pattern")


def _magnitude_mask(weight, kind, sparsity, block, pattern) -> torch.Tensor:
    """slimops.prune's magnitude mask for the layout."""
    if kind == "bsr":
        return block_mask(weight, block, sparsity)
    if kind == "nm":
        return nm_mask(weight, *pattern)
    return unstructured_mask(weight, sparsity)
