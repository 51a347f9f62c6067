"""Sparse weight formats for a pruned [N, K] weight W (y = x @ W^T), as plain tensors.

Layout version 1 (``state_dict()`` keys). Every tensor is contiguous; the row-major
order of kept elements is part of the layout.

CSRWeight
  row_ptr     int32 or int64 [N + 1]: row_ptr[0] = 0, non-decreasing, row_ptr[N] = nnz
  col_idx     int16 [nnz] when K <= 32767, else int32; strictly increasing within a row
  values      [nnz] float32 / float16 / bfloat16 / int8
  meta        int64 [4]: layout version, kind 1, N, K
BSRWeight (blocks of bn x bk; bn divides N, bk divides K)
  block_row_ptr  int32 or int64 [N/bn + 1], as row_ptr, over block rows
  block_col_idx  int16 [nblocks] when K/bk <= 32767, else int32: block column of each
                 block, strictly increasing within a block row
  values         [nblocks, bn, bk], each block row-major
  meta           int64 [6]: layout version, kind 2, N, K, bn, bk
NMWeight (n of every m consecutive elements along K kept; m in {4, 8}, 1 <= n < m, m divides K)
  values      [N, K/m * n]: the n kept values of each group, groups in order
  indices     uint8 [N, ceil((K/m * n) / per_byte)]: the position 0..m-1 of each kept
              value within its group, strictly increasing within a group. Kept value j of
              a row sits in byte j // per_byte at bits [b * (j % per_byte), b * (j % per_byte) + b),
              low bits first, with b = 2 bits (per_byte 4) for m = 4 and b = 4 bits (per_byte 2,
              the low nibble first) for m = 8. Unused bits of a row's last byte are 0.
  meta        int64 [6]: layout version, kind 3, N, K, n, m
int8 values (any format) come with
  scale       float32 [N], per output channel: W = values * scale[row]

Loading checks every field against the others and refuses anything else with a ValueError,
so a kernel may trust the indices without bounds checks.
"""

from dataclasses import dataclass

import torch

LAYOUT_VERSION = 1
_KIND_CSR, _KIND_BSR, _KIND_NM = 1, 2, 3
_KIND_NAMES = {_KIND_CSR: "CSRWeight", _KIND_BSR: "BSRWeight", _KIND_NM: "NMWeight"}
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
VALUE_DTYPES = FLOAT_DTYPES + (torch.int8,)
INT16_MAX = 32767
NM_GROUPS = (4, 8)


def index_dtype(limit: int) -> torch.dtype:
    """The column-index dtype of a format whose indices lie in [0, limit)."""
    return torch.int16 if limit <= INT16_MAX else torch.int32


def nm_bits_per_index(m: int) -> int:
    """2 bits for m = 4; 4 bits (not 3) for m = 8, so that no index straddles a byte."""
    return 2 if m == 4 else 4


@dataclass(frozen=True, eq=False)  # eq=False: == on tensors is elementwise, not a bool
class CSRWeight:
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, int]
    scale: torch.Tensor | None = None

    def __post_init__(self):
        n, k = _check_shape("CSRWeight", self.shape)
        _check_compressed_rows("CSRWeight", self.row_ptr, self.col_idx, n, k, "row_ptr", "col_idx")
        _check_values("CSRWeight", self.values, (self.col_idx.numel(),), self.scale, n)

    @classmethod
    def from_dense(cls, w: torch.Tensor, mask: torch.Tensor | None = None, quantize_int8: bool = False):
        """Keep the nonzeros of w (or the elements where the bool mask is True)."""
        _check_dense(w, quantize_int8)
        mask = (w != 0) if mask is None else _check_mask(mask, tuple(w.shape), "mask")
        source, scale = _kept_source(w, mask, quantize_int8)
        rows, cols = mask.nonzero(as_tuple=True)  # row-major, so sorted within each row
        row_ptr = _pointers(mask.sum(dim=1))
        col_idx = cols.to(index_dtype(w.shape[1]))
        return cls(row_ptr, col_idx, source[rows, cols].contiguous(), tuple(w.shape), scale)

    def to_dense(self) -> torch.Tensor:
        """[N, K] in the values' dtype; float32 for int8 values (dequantized)."""
        n, k = self.shape
        rows = _row_of_each(self.row_ptr, n)
        dense = torch.zeros((n, k), dtype=self.values.dtype, device=self.values.device)
        dense[rows, self.col_idx.long()] = self.values
        return _dequantized(dense, self.scale)

    def state_dict(self) -> dict[str, torch.Tensor]:
        n, k = self.shape
        out = {"row_ptr": self.row_ptr, "col_idx": self.col_idx, "values": self.values}
        return _with_meta_and_scale(out, [_KIND_CSR, n, k], self.scale)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "CSRWeight":
        n, k = _read_meta(state, _KIND_CSR, {"row_ptr", "col_idx", "values"}, 2)
        return cls(state["row_ptr"], state["col_idx"], state["values"], (n, k), state.get("scale"))


@dataclass(frozen=True, eq=False)
class BSRWeight:
    block_row_ptr: torch.Tensor
    block_col_idx: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, int]
    block: tuple[int, int]
    scale: torch.Tensor | None = None

    def __post_init__(self):
        n, k = _check_shape("BSRWeight", self.shape)
        bn, bk = _check_block(self.block, n, k)
        _check_compressed_rows(
            "BSRWeight", self.block_row_ptr, self.block_col_idx, n // bn, k // bk, "block_row_ptr", "block_col_idx"
        )
        _check_values("BSRWeight", self.values, (self.block_col_idx.numel(), bn, bk), self.scale, n)

    @classmethod
    def from_dense(
        cls,
        w: torch.Tensor,
        block: tuple[int, int],
        block_mask: torch.Tensor | None = None,
        quantize_int8: bool = False,
    ):
        """Keep every block holding a nonzero (or the blocks where the bool
        block_mask [N/bn, K/bk] is True); elements outside kept blocks are dropped."""
        _check_dense(w, quantize_int8)
        n, k = w.shape
        bn, bk = _check_block(tuple(block), n, k)
        if block_mask is None:
            block_mask = _blocked(w != 0, bn, bk).any(dim=3).any(dim=2)
        else:
            block_mask = _check_mask(block_mask, (n // bn, k // bk), "block_mask")
        element_mask = block_mask.repeat_interleave(bn, dim=0).repeat_interleave(bk, dim=1)
        source, scale = _kept_source(w, element_mask, quantize_int8)
        block_rows, block_cols = block_mask.nonzero(as_tuple=True)
        values = _blocked(source, bn, bk)[block_rows, block_cols].contiguous()
        block_row_ptr = _pointers(block_mask.sum(dim=1))
        return cls(block_row_ptr, block_cols.to(index_dtype(k // bk)), values, (n, k), (bn, bk), scale)

    def to_dense(self) -> torch.Tensor:
        """[N, K] in the values' dtype; float32 for int8 values (dequantized)."""
        n, k = self.shape
        bn, bk = self.block
        block_rows = _row_of_each(self.block_row_ptr, n // bn)
        blocks = torch.zeros((n // bn, k // bk, bn, bk), dtype=self.values.dtype, device=self.values.device)
        blocks[block_rows, self.block_col_idx.long()] = self.values
        return _dequantized(blocks.permute(0, 2, 1, 3).reshape(n, k), self.scale)

    def state_dict(self) -> dict[str, torch.Tensor]:
        n, k = self.shape
        out = {"block_row_ptr": self.block_row_ptr, "block_col_idx": self.block_col_idx, "values": self.values}
        return _with_meta_and_scale(out, [_KIND_BSR, n, k, *self.block], self.scale)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "BSRWeight":
        n, k, bn, bk = _read_meta(state, _KIND_BSR, {"block_row_ptr", "block_col_idx", "values"}, 4)
        values, ptr, idx = state["values"], state["block_row_ptr"], state["block_col_idx"]
        return cls(ptr, idx, values, (n, k), (bn, bk), state.get("scale"))


@dataclass(frozen=True, eq=False)
class NMWeight:
    values: torch.Tensor
    indices: torch.Tensor
    shape: tuple[int, int]
    pattern: tuple[int, int]
    scale: torch.Tensor | None = None

    def __post_init__(self):
        rows, k = _check_shape("NMWeight", self.shape)
        n, m = _check_pattern(self.pattern, k)
        kept = k // m * n
        _check_values("NMWeight", self.values, (rows, kept), self.scale, rows)
        _check_tensor("NMWeight", "indices", self.indices, (torch.uint8,), (rows, _packed_width(kept, m)))
        positions = _unpack_positions(self.indices, kept, m)
        if _padding_bits(self.indices, kept, m).any():
            _fail("NMWeight", "the unused bits of a row's last index byte must be 0")
        if bool((positions >= m).any()):
            _fail("NMWeight", f"an index is outside its group of {m}")
        if n > 1 and bool((positions.reshape(rows, k // m, n).diff(dim=-1) <= 0).any()):
            _fail("NMWeight", "positions within a group must be strictly increasing (sorted, unique)")

    @classmethod
    def from_dense(
        cls,
        w: torch.Tensor,
        pattern: tuple[int, int] = (2, 4),
        mask: torch.Tensor | None = None,
        quantize_int8: bool = False,
    ):
        """w must already satisfy the pattern: at most n nonzeros (or True mask
        elements) in each group of m. A group with fewer kept elements is filled
        up to n with explicit zeros at its lowest free positions."""
        _check_dense(w, quantize_int8)
        rows, k = w.shape
        n, m = _check_pattern(tuple(pattern), k)
        mask = (w != 0) if mask is None else _check_mask(mask, (rows, k), "mask")
        groups = mask.reshape(rows, k // m, m)
        if bool((groups.sum(dim=-1) > n).any()):
            raise ValueError(f"the weight breaks the {n}:{m} pattern: a group of {m} keeps more than {n} elements")
        positions = _fill_positions(groups, n)
        source, scale = _kept_source(w, mask, quantize_int8)
        values = source.reshape(rows, k // m, m).gather(-1, positions).reshape(rows, -1)
        indices = _pack_positions(positions.reshape(rows, -1), m)
        return cls(values.contiguous(), indices, (rows, k), (n, m), scale)

    def positions(self) -> torch.Tensor:
        """int64 [N, K/m * n]: each kept value's position within its group (unpacked indices)."""
        n, m = self.pattern
        return _unpack_positions(self.indices, self.shape[1] // m * n, m)

    def to_dense(self) -> torch.Tensor:
        """[N, K] in the values' dtype; float32 for int8 values (dequantized)."""
        rows, k = self.shape
        n, m = self.pattern
        groups = torch.zeros((rows, k // m, m), dtype=self.values.dtype, device=self.values.device)
        groups.scatter_(-1, self.positions().reshape(rows, k // m, n), self.values.reshape(rows, k // m, n))
        return _dequantized(groups.reshape(rows, k), self.scale)

    def state_dict(self) -> dict[str, torch.Tensor]:
        rows, k = self.shape
        out = {"values": self.values, "indices": self.indices}
        return _with_meta_and_scale(out, [_KIND_NM, rows, k, *self.pattern], self.scale)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "NMWeight":
        rows, k, n, m = _read_meta(state, _KIND_NM, {"values", "indices"}, 4)
        return cls(state["values"], state["indices"], (rows, k), (n, m), state.get("scale"))


def _fail(fmt: str, msg: str):
    raise ValueError(f"invalid {fmt}: {msg}")


def _check_shape(fmt, shape) -> tuple[int, int]:
    if len(shape) != 2 or any(not isinstance(s, int) or s < 0 for s in shape):
        _fail(fmt, f"shape must be two non-negative ints, got {shape}")
    return shape


def _check_tensor(fmt, name, t, dtypes, shape):
    if not isinstance(t, torch.Tensor):
        _fail(fmt, f"{name} must be a tensor, got {type(t).__name__}")
    if t.dtype not in dtypes or tuple(t.shape) != tuple(shape):
        allowed = "/".join(str(d).removeprefix("torch.") for d in dtypes)
        _fail(fmt, f"{name} must be {allowed} {tuple(shape)}, got {t.dtype} {tuple(t.shape)}")
    if not t.is_contiguous():
        _fail(fmt, f"{name} must be contiguous (kernels read it as a flat array)")


def _check_values(fmt, values, shape, scale, rows):
    _check_tensor(fmt, "values", values, VALUE_DTYPES, shape)
    if values.dtype != torch.int8:
        if scale is not None:
            _fail(fmt, f"{values.dtype} values take no scale (only int8 values do)")
        return
    if scale is None:
        _fail(fmt, "int8 values need a float32 per-output-channel scale [N]")
    _check_tensor(fmt, "scale", scale, (torch.float32,), (rows,))
    if not bool(torch.isfinite(scale).all()):
        _fail(fmt, "scale holds NaN or Inf")


def _check_compressed_rows(fmt, ptr, idx, rows, cols, ptr_name, idx_name):
    """Row pointers and column indices of CSR (or of BSR over blocks)."""
    _check_tensor(fmt, ptr_name, ptr, (torch.int32, torch.int64), (rows + 1,))
    if not isinstance(idx, torch.Tensor) or idx.dim() != 1:
        _fail(fmt, f"{idx_name} must be a 1-D tensor")
    _check_tensor(fmt, idx_name, idx, (index_dtype(cols),), (idx.numel(),))
    ptr64 = ptr.long()
    if int(ptr64[0]) != 0:
        _fail(fmt, f"{ptr_name}[0] must be 0, got {int(ptr64[0])}")
    if bool((ptr64.diff() < 0).any()):
        _fail(fmt, f"{ptr_name} must be non-decreasing")
    if int(ptr64[-1]) != idx.numel():
        _fail(fmt, f"{ptr_name}[-1] = {int(ptr64[-1])} but {idx_name} holds {idx.numel()} entries")
    idx64 = idx.long()
    if idx.numel() and (int(idx64.min()) < 0 or int(idx64.max()) >= cols):
        _fail(fmt, f"{idx_name} outside [0, {cols})")
    same_row = _row_of_each(ptr64, rows).diff() == 0
    if bool((idx64.diff()[same_row] <= 0).any()):
        _fail(fmt, f"{idx_name} must be strictly increasing within each row (sorted, unique)")


def _check_block(block, n, k) -> tuple[int, int]:
    if len(block) != 2 or any(not isinstance(b, int) or b < 1 for b in block):
        _fail("BSRWeight", f"block must be two positive ints, got {block}")
    bn, bk = block
    if n % bn or k % bk:
        _fail("BSRWeight", f"block {bn}x{bk} does not divide the weight shape {n}x{k}")
    return bn, bk


def _check_pattern(pattern, k) -> tuple[int, int]:
    if len(pattern) != 2 or any(not isinstance(p, int) for p in pattern):
        _fail("NMWeight", f"pattern must be two ints (n, m), got {pattern}")
    n, m = pattern
    if m not in NM_GROUPS or not 1 <= n < m:
        _fail("NMWeight", f"pattern {n}:{m} is not supported (m in {NM_GROUPS}, 1 <= n < m)")
    if k % m:
        _fail("NMWeight", f"K={k} is not a multiple of the group size m={m}")
    return n, m


def _check_dense(w, quantize_int8):
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise ValueError("expected a 2-D [N, K] weight tensor")
    # Quantizing reads the weight in float32, so any float dtype will do there.
    if not (w.is_floating_point() if quantize_int8 else w.dtype in FLOAT_DTYPES):
        raise ValueError(f"weight dtype {w.dtype} is not supported (float32, float16, bfloat16)")


def _check_mask(mask, shape, name) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != shape:
        raise ValueError(f"{name} must be a bool tensor of shape {shape}")
    return mask


def _kept_source(w, mask, quantize_int8):
    """The matrix the kept values are read from, and the scale: w with the
    elements outside the mask zeroed (N:M fills groups with explicit zeros read
    from here), quantized symmetrically per row when asked (scale = max|kept| / 127,
    round half to even, as slimops.quantize)."""
    masked = torch.where(mask, w, w.new_zeros(()))
    if not quantize_int8:
        return masked, None
    from ..quantization import quantize_tensor

    q, scale, _ = quantize_tensor(masked.float(), bits=8, group_size=-1, symmetric=True)
    return q, scale.reshape(-1).contiguous()


def _dequantized(dense, scale):
    return dense if scale is None else dense.float() * scale[:, None]


def _pointers(counts) -> torch.Tensor:
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return ptr.to(torch.int32 if int(ptr[-1]) <= torch.iinfo(torch.int32).max else torch.int64)


def _row_of_each(ptr, rows) -> torch.Tensor:
    """int64 [nnz]: the row of each stored entry (ptr already validated)."""
    return torch.repeat_interleave(torch.arange(rows, device=ptr.device), ptr.long().diff())


def _blocked(t, bn, bk) -> torch.Tensor:
    """[N, K] -> [N/bn, K/bk, bn, bk] (a view of the blocks, block-major)."""
    n, k = t.shape
    return t.reshape(n // bn, bn, k // bk, bk).permute(0, 2, 1, 3)


def _fill_positions(groups, n) -> torch.Tensor:
    """int64 [N, G, n]: the kept positions of each group, topped up with the lowest free ones."""
    m = groups.shape[-1]
    free = ~groups
    free_rank = free.cumsum(dim=-1) - 1
    selected = groups | (free & (free_rank < (n - groups.sum(dim=-1, keepdim=True))))
    position = torch.arange(m, device=groups.device)
    key = torch.where(selected, position, position + m)  # selected positions sort first, in order
    return key.sort(dim=-1).values[..., :n]


def _packed_width(kept, m) -> int:
    per_byte = 8 // nm_bits_per_index(m)
    return -(-kept // per_byte)


def _pack_positions(positions, m) -> torch.Tensor:
    """int64 [N, kept] positions -> uint8 [N, packed width], low bits first."""
    rows, kept = positions.shape
    bits = nm_bits_per_index(m)
    per_byte = 8 // bits
    padded = positions.new_zeros((rows, _packed_width(kept, m) * per_byte))
    padded[:, :kept] = positions
    shifts = torch.arange(per_byte, device=positions.device) * bits
    return (padded.reshape(rows, -1, per_byte) << shifts).sum(dim=-1).to(torch.uint8)


def _unpack_fields(indices, m) -> torch.Tensor:
    """uint8 [N, W] -> int64 [N, W * per_byte]: every bit field, padding included."""
    bits = nm_bits_per_index(m)
    shifts = torch.arange(8 // bits, device=indices.device) * bits
    return ((indices.long()[..., None] >> shifts) & ((1 << bits) - 1)).reshape(indices.shape[0], -1)


def _unpack_positions(indices, kept, m) -> torch.Tensor:
    return _unpack_fields(indices, m)[:, :kept]


def _padding_bits(indices, kept, m) -> torch.Tensor:
    return _unpack_fields(indices, m)[:, kept:]


def _with_meta_and_scale(out, meta_fields, scale):
    out["meta"] = torch.tensor([LAYOUT_VERSION, *meta_fields], dtype=torch.int64)
    if scale is not None:
        out["scale"] = scale
    return out


def _read_meta(state, kind, keys, n_fields) -> list[int]:
    """The shape fields of a validated meta; the tensors are checked by the constructor."""
    fmt = _KIND_NAMES[kind]
    keys = keys | {"meta"}
    missing = keys - state.keys()
    if missing:
        raise ValueError(f"not a slimops {fmt} state_dict: missing {sorted(missing)}")
    unexpected = state.keys() - keys - {"scale"}
    if unexpected:
        raise ValueError(f"{fmt} state_dict: unexpected keys {sorted(unexpected)}")
    meta = state["meta"]
    if not isinstance(meta, torch.Tensor) or meta.dtype != torch.int64 or meta.dim() != 1 or meta.numel() < 2:
        raise ValueError(f"{fmt} state_dict: 'meta' must be int64 [{n_fields + 2}]")
    version, found_kind = int(meta[0]), int(meta[1])
    if version != LAYOUT_VERSION:
        newer = " (written by a newer slimops)" if version > LAYOUT_VERSION else ""
        raise ValueError(
            f"{fmt} layout version {version} is not supported{newer}; this slimops reads version {LAYOUT_VERSION}"
        )
    if found_kind != kind:
        raise ValueError(f"this is a {_KIND_NAMES.get(found_kind, 'foreign')} state_dict, not a {fmt}")
    if meta.shape != (n_fields + 2,):
        raise ValueError(f"{fmt} state_dict: 'meta' must be int64 [{n_fields + 2}]")
    return [int(v) for v in meta[2:]]
