"""Sparse weight formats (CSR, BSR, N:M) and the NumPy references of the sparse matmuls."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from slimops import reference as ref
from slimops.formats import BSRWeight, CSRWeight, NMWeight
from slimops.quantization import quantize_tensor

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SPARSITIES = [0.0, 0.5, 0.9, 1.0]
BLOCKS = [(1, 4), (4, 4), (16, 16)]
PATTERNS = [(2, 4), (1, 4), (4, 8)]


def sparse_weight(n, k, sparsity, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    return torch.where(torch.rand(n, k, generator=g) >= sparsity, w, 0.0).to(dtype)


def nm_weight(rows, k, pattern, drop=0.0, dtype=torch.float32, seed=0):
    """A weight with at most n nonzeros per group of m; drop zeroes a further fraction."""
    n, m = pattern
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, k // m, m, generator=g)
    keep = torch.rand(rows, k // m, m, generator=g).argsort(dim=-1) < n
    w = torch.where(keep, w, 0.0).reshape(rows, k)
    return torch.where(torch.rand(rows, k, generator=g) >= drop, w, 0.0).to(dtype)


def make(fmt, dtype=torch.float32, quantize_int8=False):
    """One small weight of each format, with some empty rows and groups."""
    if fmt == "csr":
        return CSRWeight.from_dense(sparse_weight(6, 33, 0.6, dtype), quantize_int8=quantize_int8)
    if fmt == "bsr":
        return BSRWeight.from_dense(sparse_weight(8, 12, 0.8, dtype), (4, 4), quantize_int8=quantize_int8)
    if fmt == "nm4":
        return NMWeight.from_dense(nm_weight(5, 12, (2, 4), 0.3, dtype), (2, 4), quantize_int8=quantize_int8)
    return NMWeight.from_dense(nm_weight(3, 24, (4, 8), 0.3, dtype), (4, 8), quantize_int8=quantize_int8)


FORMATS = ["csr", "bsr", "nm4", "nm8"]
CLASSES = {"csr": CSRWeight, "bsr": BSRWeight, "nm4": NMWeight, "nm8": NMWeight}


def assert_bit_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def as_numpy(t):
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


# ---- round trips dense -> format -> dense ----


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 33), (7, 1), (5, 33)])
def test_csr_round_trip(dtype, sparsity, shape):
    w = sparse_weight(*shape, sparsity, dtype)
    c = CSRWeight.from_dense(w)
    assert c.values.numel() == int((w != 0).sum())
    assert c.col_idx.dtype == torch.int16 and c.row_ptr.dtype == torch.int32
    assert_bit_equal(c.to_dense(), w)


def test_csr_wide_k_uses_int32_indices():
    w = torch.zeros(2, 40000)
    w[0, 39999] = 1.5
    w[1, 7] = -2.0
    c = CSRWeight.from_dense(w)
    assert c.col_idx.dtype == torch.int32
    assert torch.equal(c.to_dense(), w)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("block", BLOCKS)
def test_bsr_round_trip(dtype, sparsity, block):
    bn, bk = block
    w = sparse_weight(2 * bn, 3 * bk, sparsity, dtype)
    b = BSRWeight.from_dense(w, block)
    kept = (w != 0).reshape(2, bn, 3, bk).any(dim=3).any(dim=1)
    assert b.values.shape == (int(kept.sum()), bn, bk)
    assert_bit_equal(b.to_dense(), w)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("drop", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("groups", [(1, 1), (5, 3)])
def test_nm_round_trip(dtype, pattern, drop, groups):
    rows, k = groups[0], groups[1] * pattern[1]
    w = nm_weight(rows, k, pattern, drop, dtype)
    nm = NMWeight.from_dense(w, pattern)
    assert nm.values.shape == (rows, k // pattern[1] * pattern[0])
    assert_bit_equal(nm.to_dense(), w)


def test_nm_fills_short_groups_at_the_lowest_free_positions():
    w = torch.tensor([[0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0]])
    nm = NMWeight.from_dense(w, (2, 4))
    assert nm.positions().tolist() == [[0, 2, 0, 1, 0, 1]]
    assert nm.values.tolist() == [[0.0, 3.0, 0.0, 0.0, 1.0, 2.0]]


def test_nm_index_packing_bit_by_bit():
    w = torch.zeros(1, 16)
    w[0, [1, 3, 4, 6, 10, 11, 12, 13]] = 1.0  # 2:4 positions 1,3 | 0,2 | 2,3 | 0,1
    packed = NMWeight.from_dense(w, (2, 4)).indices
    assert packed.tolist() == [[1 | 3 << 2 | 0 << 4 | 2 << 6, 2 | 3 << 2 | 0 << 4 | 1 << 6]]
    w8 = torch.zeros(1, 8)
    w8[0, [1, 2, 5, 7]] = 1.0  # 4:8 positions 1, 2, 5, 7: low nibble first
    assert NMWeight.from_dense(w8, (4, 8)).indices.tolist() == [[1 | 2 << 4, 5 | 7 << 4]]


def test_masks_choose_what_is_kept():
    w = sparse_weight(8, 8, 0.0)
    mask = sparse_weight(8, 8, 0.5, seed=1) != 0
    c = CSRWeight.from_dense(w, mask=mask)
    assert c.values.numel() == int(mask.sum())
    assert torch.equal(c.to_dense(), torch.where(mask, w, 0.0))
    block_mask = torch.tensor([[True, False], [False, True]])
    b = BSRWeight.from_dense(w, (4, 4), block_mask=block_mask)
    assert torch.equal(b.to_dense(), w * block_mask.repeat_interleave(4, 0).repeat_interleave(4, 1))
    nm_mask = nm_weight(8, 8, (2, 4), seed=2) != 0
    assert torch.equal(NMWeight.from_dense(w, (2, 4), mask=nm_mask).to_dense(), torch.where(nm_mask, w, 0.0))


def test_csr_keeps_an_explicit_zero_of_the_mask():
    w = torch.tensor([[0.0, 2.0]])
    c = CSRWeight.from_dense(w, mask=torch.tensor([[True, True]]))
    assert c.col_idx.tolist() == [0, 1] and c.values.tolist() == [0.0, 2.0]


# ---- int8 (sparse + quantized) ----


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_error_is_within_half_a_step(fmt):
    w_float = make(fmt).to_dense()
    q = make(fmt, quantize_int8=True)
    assert q.values.dtype == torch.int8 and q.scale.dtype == torch.float32
    assert int(q.values.abs().max()) <= 127
    expected_q, expected_scale, _ = quantize_tensor(w_float, 8, -1, True)  # same rounding as slimops.quantize
    assert_bit_equal(q.scale, expected_scale.reshape(-1))
    back = q.to_dense()
    assert back.dtype == torch.float32
    assert bool(((back - w_float).abs() <= q.scale[:, None] / 2 * (1 + 1e-6)).all())
    assert torch.equal(back, expected_q.float() * expected_scale)


def test_int8_scale_ignores_pruned_elements():
    w = torch.tensor([[100.0, 0.5, -1.27]])
    c = CSRWeight.from_dense(w, mask=torch.tensor([[False, True, True]]), quantize_int8=True)
    assert c.scale.tolist() == [torch.tensor(1.27) / 127] and c.values.tolist() == [50, -127]


# ---- state_dict ----


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int8])
def test_state_dict_round_trip_is_bit_exact(fmt, dtype, tmp_path):
    w = make(fmt, torch.float32 if dtype == torch.int8 else dtype, quantize_int8=dtype == torch.int8)
    state = w.state_dict()
    assert state["meta"].dtype == torch.int64 and int(state["meta"][0]) == 1
    assert ("scale" in state) == (dtype == torch.int8)
    save_file(state, tmp_path / "w.safetensors")
    loaded = load_file(tmp_path / "w.safetensors")
    for source in (state, loaded):
        again = CLASSES[fmt].from_state_dict(source).state_dict()
        assert again.keys() == state.keys()
        for key in state:
            assert_bit_equal(again[key], state[key])
    assert_bit_equal(CLASSES[fmt].from_state_dict(loaded).to_dense(), w.to_dense())


# ---- corruption is refused ----


def corrupt(state, key, fn):
    state = dict(state)
    state[key] = fn(state[key].clone())
    return state


def set_at(i, v):
    def fn(t):
        t[i] = v
        return t

    return fn


CSR_CORRUPTIONS = {
    "index out of range": ("col_idx", set_at(-1, 33), "outside"),
    "negative index": ("col_idx", set_at(0, -1), "outside"),
    "unsorted": ("col_idx", lambda t: torch.cat([t[:1], t[1:3].flip(0), t[3:]]), "strictly increasing"),
    "duplicate": ("col_idx", lambda t: torch.cat([t[:1], t[:1], t[2:]]), "strictly increasing"),
    "index dtype": ("col_idx", lambda t: t.int(), "col_idx must be int16"),
    "row_ptr not monotone": ("row_ptr", lambda t: torch.cat([t[:1], t[2:3], t[1:2], t[3:]]), "non-decreasing"),
    "row_ptr wrong length": ("row_ptr", lambda t: t[:-1], "row_ptr must be"),
    "row_ptr does not start at 0": ("row_ptr", lambda t: t + 1, "must be 0"),
    "row_ptr does not end at nnz": ("row_ptr", set_at(-1, 1000), "holds 87 entries"),
    "row_ptr dtype": ("row_ptr", lambda t: t.to(torch.int16), "row_ptr must be"),
    "values wrong length": ("values", lambda t: t[:-1], "values must be"),
    "values dtype": ("values", lambda t: t.double(), "values must be"),
    "meta newer version": ("meta", set_at(0, 2), "newer slimops"),
    "meta foreign version": ("meta", set_at(0, 0), "version 0 is not supported"),
    "meta of another format": ("meta", set_at(1, 2), "state_dict, not a"),
    "meta wrong K": ("meta", set_at(3, 20), "outside"),
    "meta wrong length": ("meta", lambda t: t[:3], "'meta' must be"),
    "meta dtype": ("meta", lambda t: t.int(), "'meta' must be"),
}


def test_csr_corruptions_act_within_the_first_row():
    row_ptr = make("csr").state_dict()["row_ptr"]
    assert int(row_ptr[1]) >= 3 and int(row_ptr[2]) > int(row_ptr[1])  # swaps and duplicates stay in row 0


@pytest.mark.parametrize("case", CSR_CORRUPTIONS)
def test_csr_refuses_corruption(case):
    key, fn, match = CSR_CORRUPTIONS[case]
    with pytest.raises(ValueError, match=match):
        CSRWeight.from_state_dict(corrupt(make("csr").state_dict(), key, fn))


BSR_CORRUPTIONS = {
    "block index out of range": ("block_col_idx", set_at(-1, 3), "outside"),
    "duplicate block": ("block_col_idx", lambda t: torch.cat([t[:1], t[:1], t[2:]]), "strictly increasing"),
    "block_row_ptr wrong length": ("block_row_ptr", lambda t: torch.cat([t, t[-1:]]), "block_row_ptr must be"),
    "block_row_ptr not monotone": ("block_row_ptr", set_at(1, 99), "non-decreasing"),
    "values wrong block shape": ("values", lambda t: t[:, :, :2].contiguous(), "values must be"),
    "values wrong count": ("values", lambda t: t[1:], "values must be"),
    "block does not divide": ("meta", set_at(5, 5), "does not divide"),
    "meta newer version": ("meta", set_at(0, 7), "newer slimops"),
}


@pytest.mark.parametrize("case", BSR_CORRUPTIONS)
def test_bsr_refuses_corruption(case):
    key, fn, match = BSR_CORRUPTIONS[case]
    state = make("bsr").state_dict()
    assert state["block_col_idx"].numel() >= 2 and int(state["block_row_ptr"][1]) >= 2
    with pytest.raises(ValueError, match=match):
        BSRWeight.from_state_dict(corrupt(state, key, fn))


NM_CORRUPTIONS = {
    "position outside the group": ("nm8", "indices", set_at((0, 0), 0x9 | 0xA << 4), "outside its group"),
    "positions not increasing": ("nm4", "indices", set_at((0, 0), 0b00_01_10_11), "strictly increasing"),
    "duplicate position": ("nm8", "indices", set_at((0, 0), 0x11), "strictly increasing"),
    "padding bits set": ("nm4", "indices", set_at((0, -1), 0xFF), "unused bits"),
    "indices dtype": ("nm4", "indices", lambda t: t.to(torch.int8), "indices must be"),
    "indices wrong width": ("nm4", "indices", lambda t: t[:, 1:].contiguous(), "indices must be"),
    "values wrong length": ("nm4", "values", lambda t: t[:, 1:].contiguous(), "values must be"),
    "values dtype": ("nm4", "values", lambda t: t.to(torch.int32), "values must be"),
    "unsupported pattern": ("nm4", "meta", set_at(4, 4), "not supported"),
    "K not a multiple of m": ("nm4", "meta", set_at(5, 8), "not a multiple"),
    "meta of another format": ("nm4", "meta", set_at(1, 1), "state_dict, not a"),
}


@pytest.mark.parametrize("case", NM_CORRUPTIONS)
def test_nm_refuses_corruption(case):
    fmt, key, fn, match = NM_CORRUPTIONS[case]
    state = make(fmt).state_dict()
    if case == "padding bits set":
        assert state["values"].shape[1] % 4  # 2:4 over K = 12 keeps 6 per row: the last byte is half padding
    with pytest.raises(ValueError, match=match):
        NMWeight.from_state_dict(corrupt(state, key, fn))


@pytest.mark.parametrize("fmt", FORMATS)
def test_scale_must_match_the_values(fmt):
    quantized = make(fmt, quantize_int8=True).state_dict()
    with pytest.raises(ValueError, match="int8 values need"):
        CLASSES[fmt].from_state_dict({k: v for k, v in quantized.items() if k != "scale"})
    with pytest.raises(ValueError, match="scale"):
        CLASSES[fmt].from_state_dict(corrupt(quantized, "scale", lambda t: t[1:]))
    with pytest.raises(ValueError, match="NaN"):
        CLASSES[fmt].from_state_dict(corrupt(quantized, "scale", set_at(0, float("nan"))))
    with pytest.raises(ValueError, match="take no scale"):
        CLASSES[fmt].from_state_dict({**make(fmt).state_dict(), "scale": quantized["scale"]})


@pytest.mark.parametrize("fmt", FORMATS)
def test_state_dict_keys_are_checked(fmt):
    state = make(fmt).state_dict()
    with pytest.raises(ValueError, match="missing"):
        CLASSES[fmt].from_state_dict({k: v for k, v in state.items() if k != "values"})
    with pytest.raises(ValueError, match="unexpected"):
        CLASSES[fmt].from_state_dict({**state, "extra": torch.zeros(1)})


def test_non_contiguous_values_are_refused():
    c = make("csr")
    with pytest.raises(ValueError, match="contiguous"):
        CSRWeight(c.row_ptr, c.col_idx, torch.stack([c.values, c.values], 1)[:, 0], c.shape)


# ---- from_dense refusals ----


def test_nm_refuses_a_weight_that_breaks_the_pattern():
    w = nm_weight(4, 16, (2, 4))
    w[2, 5] = w[2, 6] = w[2, 7] = w[2, 4] = 1.0
    with pytest.raises(ValueError, match="breaks the 2:4 pattern"):
        NMWeight.from_dense(w, (2, 4))
    with pytest.raises(ValueError, match="breaks the 1:4 pattern"):
        NMWeight.from_dense(nm_weight(4, 16, (2, 4)), (1, 4), mask=torch.ones(4, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="multiple of the group size"):
        NMWeight.from_dense(torch.zeros(2, 6), (2, 4))
    with pytest.raises(ValueError, match="not supported"):
        NMWeight.from_dense(torch.zeros(2, 6), (2, 3))


def test_bsr_refuses_a_shape_the_block_does_not_divide():
    with pytest.raises(ValueError, match="does not divide"):
        BSRWeight.from_dense(torch.zeros(6, 8), (4, 4))
    with pytest.raises(ValueError, match="block_mask"):
        BSRWeight.from_dense(torch.zeros(8, 8), (4, 4), block_mask=torch.ones(2, 3, dtype=torch.bool))


def test_from_dense_refuses_bad_inputs():
    with pytest.raises(ValueError, match="2-D"):
        CSRWeight.from_dense(torch.zeros(3))
    with pytest.raises(ValueError, match="dtype"):
        CSRWeight.from_dense(torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="mask"):
        CSRWeight.from_dense(torch.zeros(2, 2), mask=torch.ones(2, 2))


# ---- NumPy references ----


def reference_output(w, x, bias):
    """ref.*_linear on the arrays of w, and x @ to_dense().T + bias, both float64."""
    n, k = w.shape
    scale = None if w.scale is None else w.scale.numpy()
    if isinstance(w, CSRWeight):
        y = ref.csr_linear(x, w.row_ptr.numpy(), w.col_idx.numpy(), as_numpy(w.values), n, k, bias, scale)
    elif isinstance(w, BSRWeight):
        y = ref.bsr_linear(x, w.block_row_ptr.numpy(), w.block_col_idx.numpy(), as_numpy(w.values), n, k, bias, scale)
    else:
        y = ref.nm_linear(x, as_numpy(w.values), w.indices.numpy(), n, k, w.pattern, bias, scale)
    if scale is None:
        dense = as_numpy(w.to_dense()).astype(np.float64)
    else:  # dequantize in float64 like the reference, not in float32 like to_dense()
        integers = dataclasses.replace(w, values=w.values.float(), scale=None).to_dense()
        dense = integers.numpy().astype(np.float64) * scale.astype(np.float64)[:, None]
    expected = x @ dense.T + (0 if bias is None else bias)
    return y, expected


@settings(max_examples=8, deadline=None)
@given(
    fmt=st.sampled_from(["csr", "bsr", "nm"]),
    rows=st.integers(1, 4),
    cols=st.integers(1, 4),
    sparsity=st.sampled_from(SPARSITIES),
    dtype=st.sampled_from(FLOAT_DTYPES),
    quantize_int8=st.booleans(),
    batch=st.sampled_from([(1,), (3,), (2, 3)]),
    with_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_references_match_the_dense_matmul(fmt, rows, cols, sparsity, dtype, quantize_int8, batch, with_bias, seed):
    if fmt == "csr":
        w = CSRWeight.from_dense(sparse_weight(rows * 3, cols * 11, sparsity, dtype, seed), quantize_int8=quantize_int8)
    elif fmt == "bsr":
        dense = sparse_weight(rows * 4, cols * 4, sparsity, dtype, seed)
        w = BSRWeight.from_dense(dense, (4, 2) if seed % 2 else (1, 4), quantize_int8=quantize_int8)
    else:
        pattern = PATTERNS[seed % 3]
        dense = nm_weight(rows, cols * pattern[1], pattern, sparsity / 2, dtype, seed)
        w = NMWeight.from_dense(dense, pattern, quantize_int8=quantize_int8)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*batch, w.shape[1]))
    bias = rng.standard_normal(w.shape[0]) if with_bias else None
    y, expected = reference_output(w, x, bias)
    assert y.shape == (*batch, w.shape[0]) and y.dtype == np.float64
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_references_refuse_bad_inputs():
    c = make("csr")
    n, k = c.shape
    ptr, idx, vals = c.row_ptr.numpy(), c.col_idx.numpy(), c.values.numpy()
    x = np.ones((2, k))
    with pytest.raises(ValueError, match="outside"):
        ref.csr_linear(x, ptr, np.where(np.arange(idx.size) == 0, k, idx), vals, n, k)
    with pytest.raises(ValueError, match="strictly increasing"):
        ref.csr_linear(x, ptr, np.concatenate([idx[:1], idx[:1], idx[2:]]), vals, n, k)
    with pytest.raises(ValueError, match="row_ptr"):
        ref.csr_linear(x, ptr[:-1], idx, vals, n, k)
    with pytest.raises(ValueError, match="values"):
        ref.csr_linear(x, ptr, idx, vals[1:], n, k)
    with pytest.raises(ValueError, match="x must be"):
        ref.csr_linear(np.ones((2, k + 1)), ptr, idx, vals, n, k)
    q = make("csr", quantize_int8=True)
    with pytest.raises(ValueError, match="scale"):
        ref.csr_linear(x, q.row_ptr.numpy(), q.col_idx.numpy(), q.values.numpy(), n, k)
    with pytest.raises(ValueError, match="does not divide"):
        ref.bsr_linear(x, [0, 0], [], np.zeros((0, 4, 4)), 6, 33)
    nm = make("nm4")
    bad = nm.indices.numpy().copy()
    bad[0, -1] = 0xFF
    with pytest.raises(ValueError, match="unused bits"):
        ref.nm_linear(np.ones((1, 12)), nm.values.numpy(), bad, 5, 12, (2, 4))
    bad[0, -1] = 0b1011  # positions 3, 2: not increasing
    with pytest.raises(ValueError, match="strictly increasing"):
        ref.nm_linear(np.ones((1, 12)), nm.values.numpy(), bad, 5, 12, (2, 4))
