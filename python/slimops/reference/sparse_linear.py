"""References for the sparse linear ops, straight from the compressed arrays of
slimops.formats.sparse (layout version 1; that module documents the layouts):

    y = x @ W^T + bias, W [N, K], W[row] = values * scale[row] when a scale is given,

all in float64. x is [..., K]; y is [..., N]. bfloat16 values have no NumPy
dtype: pass them as float32 (exact).
"""

import numpy as np

NM_GROUPS = (4, 8)


def csr_linear(x, row_ptr, col_idx, values, n, k, bias=None, scale=None):
    row_ptr, col_idx = _check_compressed_rows(row_ptr, col_idx, n, k, "row_ptr", "col_idx")
    values = _values(values, (col_idx.size,), scale)
    x2, lead = _inputs(x, k)
    rows = np.repeat(np.arange(n), np.diff(row_ptr))
    y_t = np.zeros((n, x2.shape[0]))
    np.add.at(y_t, rows, (x2[:, col_idx] * values).T)
    return _epilogue(y_t.T, lead, n, bias, scale)


def bsr_linear(x, block_row_ptr, block_col_idx, values, n, k, bias=None, scale=None):
    """Block size (bn, bk) is values.shape[1:]; values is [nblocks, bn, bk]."""
    values = np.asarray(values)
    if values.ndim != 3 or min(values.shape[1:]) < 1:
        raise ValueError(f"values must be [nblocks, bn, bk], got shape {values.shape}")
    bn, bk = values.shape[1:]
    if n % bn or k % bk:
        raise ValueError(f"block {bn}x{bk} does not divide the weight shape {n}x{k}")
    ptr, cols = _check_compressed_rows(
        block_row_ptr, block_col_idx, n // bn, k // bk, "block_row_ptr", "block_col_idx"
    )
    values = _values(values, (cols.size, bn, bk), scale)
    x2, lead = _inputs(x, k)
    block_rows = np.repeat(np.arange(n // bn), np.diff(ptr))
    x_blocks = x2.reshape(x2.shape[0], k // bk, bk)[:, cols]  # [M, nblocks, bk]
    products = np.einsum("mbk,bnk->bmn", x_blocks, values)  # [nblocks, M, bn]
    y_blocks = np.zeros((n // bn, x2.shape[0], bn))
    np.add.at(y_blocks, block_rows, products)
    return _epilogue(y_blocks.transpose(1, 0, 2).reshape(x2.shape[0], n), lead, n, bias, scale)


def nm_linear(x, values, indices, n, k, pattern, bias=None, scale=None):
    """pattern = (kept, m): kept of every m consecutive elements along K."""
    kept, m = _check_pattern(pattern, k)
    positions = nm_positions(indices, n, k, pattern)
    per_row = positions.shape[1]
    values = _values(values, (n, per_row), scale)
    x2, lead = _inputs(x, k)
    columns = (np.arange(per_row) // kept * m)[None, :] + positions  # [N, per_row]
    y = np.einsum("mnj,nj->mn", x2[:, columns], values)
    return _epilogue(y, lead, n, bias, scale)


def nm_positions(indices, n, k, pattern):
    """Unpack uint8 N:M metadata [N, W] to int64 positions [N, K/m * kept], checking it.

    Kept value j of a row is the bit field j % per_byte of byte j // per_byte,
    low bits first: 2 bits per index (4 per byte) for m = 4, 4 bits (2 per byte)
    for m = 8. Unused fields of a row's last byte are 0."""
    kept, m = _check_pattern(pattern, k)
    per_row = k // m * kept
    bits = 2 if m == 4 else 4
    per_byte = 8 // bits
    indices = np.asarray(indices)
    width = -(-per_row // per_byte)
    if indices.dtype != np.uint8 or indices.shape != (n, width):
        raise ValueError(f"indices must be uint8 {(n, width)}, got {indices.dtype} {indices.shape}")
    shifts = np.arange(per_byte) * bits
    fields = ((indices.astype(np.int64)[..., None] >> shifts) & ((1 << bits) - 1)).reshape(n, -1)
    positions, padding = fields[:, :per_row], fields[:, per_row:]
    if padding.any():
        raise ValueError("the unused bits of a row's last index byte must be 0")
    if (positions >= m).any():
        raise ValueError(f"an index is outside its group of {m}")
    if (np.diff(positions.reshape(n, k // m, kept), axis=-1) <= 0).any():
        raise ValueError("positions within a group must be strictly increasing (sorted, unique)")
    return positions


def _check_pattern(pattern, k):
    kept, m = pattern
    if m not in NM_GROUPS or not 1 <= kept < m:
        raise ValueError(f"pattern {kept}:{m} is not supported (m in {NM_GROUPS}, 1 <= n < m)")
    if k % m:
        raise ValueError(f"K={k} is not a multiple of the group size m={m}")
    return kept, m


def _check_compressed_rows(ptr, idx, rows, cols, ptr_name, idx_name):
    ptr, idx = np.asarray(ptr), np.asarray(idx)
    for name, a in ((ptr_name, ptr), (idx_name, idx)):
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be a 1-D integer array, got {a.dtype} {a.shape}")
    ptr, idx = ptr.astype(np.int64), idx.astype(np.int64)
    if ptr.shape != (rows + 1,):
        raise ValueError(f"{ptr_name} must have {rows + 1} entries, got {ptr.size}")
    if ptr[0] != 0 or ptr[-1] != idx.size or (np.diff(ptr) < 0).any():
        raise ValueError(f"{ptr_name} must rise from 0 to {idx.size} ({idx_name} entries) without decreasing")
    if idx.size and (idx.min() < 0 or idx.max() >= cols):
        raise ValueError(f"{idx_name} outside [0, {cols})")
    same_row = np.diff(np.repeat(np.arange(rows), np.diff(ptr))) == 0
    if (np.diff(idx)[same_row] <= 0).any():
        raise ValueError(f"{idx_name} must be strictly increasing within each row (sorted, unique)")
    return ptr, idx


def _values(values, shape, scale):
    values = np.asarray(values)
    if values.shape != shape:
        raise ValueError(f"values must have shape {shape}, got {values.shape}")
    if np.issubdtype(values.dtype, np.integer) and scale is None:
        raise ValueError("integer values need a per-output-channel scale")
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise ValueError(f"values dtype {values.dtype} is not a real number type")
    return values.astype(np.float64)


def _inputs(x, k):
    x = np.asarray(x, np.float64)
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"x must be [..., K={k}], got shape {x.shape}")
    return x.reshape(-1, k), x.shape[:-1]


def _epilogue(y, lead, n, bias, scale):
    if scale is not None:
        scale = np.asarray(scale, np.float64)
        if scale.shape != (n,):
            raise ValueError(f"scale must be [N={n}], got shape {scale.shape}")
        y = y * scale
    if bias is not None:
        bias = np.asarray(bias, np.float64)
        if bias.shape != (n,):
            raise ValueError(f"bias must be [N={n}], got shape {bias.shape}")
        y = y + bias
    return y.reshape(*lead, n)
