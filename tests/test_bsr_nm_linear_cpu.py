"""The CPU kernels of torch.ops.slimops.bsr_linear and nm_linear.

Both run the xT kernel of csrc/cpu/sparse_xt, except N:M with float32 or int8
values at few rows, which streams x directly (1-2 rows on AVX-512; 1-2 rows on
AVX2, 1-4 where K % 32 == 0 and the pattern is 2:4 or 4:8). All of them keep the
float order of csr_linear over each row's stored elements, so besides the NumPy
reference each is held bit for bit to the CSR kernel on the same stored
elements (explicit zeros included). float16 and bfloat16 values run the xT
kernel and must give the bits of their float32 widening."""

import numpy as np
import pytest
import torch

import slimops  # noqa: F401  (registers the ops)
from slimops import prune
from slimops import reference as ref
from slimops.backends import cpu
from slimops.backends.registry import choose
from slimops.formats import BSRWeight, CSRWeight, NMWeight

from conftest import ROUNDOFF, assert_every_isa_agrees, assert_within_bound, outputs_on_one_and_many_threads

ROWS = [0, 1, 2, 3, 9, 17, 33, 64]  # streaming (N:M), 8-row and 16-row tiles, partial tiles, BSR panels
BLOCKS = [(16, 16), (4, 4), (1, 4), (2, 3), (8, 32), (1, 1)]
PATTERNS = [(2, 4), (1, 4), (3, 4), (4, 8), (1, 8), (2, 8), (5, 8), (7, 8)]


def bsr_weight(n, k, block, sparsity, seed=0):
    g = torch.Generator().manual_seed(seed)
    bn, bk = block
    mask = torch.rand(n // bn, k // bk, generator=g) >= sparsity
    return BSRWeight.from_dense(torch.randn(n, k, generator=g), block, mask)


def nm_weight(n, k, pattern, seed=0, zero_fraction=0.2, exact_in=torch.float32):
    """Some groups keep fewer than pattern_n nonzeros, so they hold explicit zeros.
    The values are ones that exact_in represents exactly."""
    g = torch.Generator().manual_seed(seed)
    pn, m = pattern
    keep = (torch.rand(n, k // m, m, generator=g).argsort(dim=-1) < pn).reshape(n, k)
    keep &= torch.rand(n, k, generator=g) >= zero_fraction
    return NMWeight.from_dense(torch.randn(n, k, generator=g).to(exact_in).float() * keep, pattern)


def stored_mask(w) -> torch.Tensor:
    """The [N, K] elements the format stores (explicit zeros included)."""
    n, k = w.shape
    if isinstance(w, BSRWeight):
        bn, bk = w.block
        blocks = torch.zeros(n // bn, k // bk, dtype=torch.bool)
        rows = torch.repeat_interleave(torch.arange(n // bn), w.block_row_ptr.long().diff())
        blocks[rows, w.block_col_idx.long()] = True
        return blocks.repeat_interleave(bn, dim=0).repeat_interleave(bk, dim=1)
    pn, m = w.pattern
    mask = torch.zeros(n, k // m, m, dtype=torch.bool)
    mask.scatter_(-1, w.positions().reshape(n, k // m, pn), True)
    return mask.reshape(n, k)


def run(w, x, bias=None):
    if isinstance(w, BSRWeight):
        return cpu.bsr_linear(x, w.block_row_ptr, w.block_col_idx, w.values, None, w.shape[0], bias)
    return cpu.nm_linear(x, w.values, w.indices, None, *w.pattern, bias)


def as_csr(w) -> CSRWeight:
    return CSRWeight.from_dense(w.to_dense(), stored_mask(w))


def csr_run(c, x, bias=None):
    return cpu.csr_linear(x, c.row_ptr, c.col_idx, c.values, None, c.shape[0], bias)


def inputs(m, k, n, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=g).to(dtype), torch.randn(n, generator=g)


def check_against_reference(w, x, bias):
    y = run(w, x, bias)
    assert y.shape == (x.shape[0], w.shape[0]) and y.dtype == x.dtype
    dense = w.to_dense().double().numpy()
    xa = x.double().numpy()
    expected = xa @ dense.T + bias.double().numpy()
    magnitude = np.abs(xa) @ np.abs(dense).T + np.abs(bias.double().numpy())
    stored = int(stored_mask(w).sum(dim=1).max()) if w.shape[0] else 0
    bound = (stored // 16 + 6) * ROUNDOFF[torch.float32] * magnitude + ROUNDOFF[x.dtype] * magnitude
    assert_within_bound(y, expected, bound)
    return y


@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("block", BLOCKS, ids=str)
@pytest.mark.parametrize("sparsity", [0.0, 0.6, 1.0])
def test_bsr_matches_reference_on_every_isa(cpu_isa, m, block, sparsity):
    w = bsr_weight(48, 96, block, sparsity)
    check_against_reference(w, *inputs(m, 96, 48))


@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
# Runs of 16 kept values: partial only, full + partial; K % 32 == 0: 2:4 and 4:8 take the aligned walk.
@pytest.mark.parametrize("k", [8, 40, 136, 64, 128])
def test_nm_matches_reference_on_every_isa(cpu_isa, m, pattern, k):
    w = nm_weight(24, k, pattern)
    check_against_reference(w, *inputs(m, k, 24))


@pytest.mark.parametrize("m", [1, 2, 5, 17])
@pytest.mark.parametrize("pattern", [(2, 4), (4, 8), (3, 8)], ids=str)
@pytest.mark.parametrize("k", [40, 128])  # 128: the aligned walk for 2:4 and 4:8
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nm_half_values_give_the_bits_of_float32(cpu_isa, m, pattern, k, dtype):
    w = nm_weight(24, k, pattern, exact_in=dtype)
    x, b = inputs(m, k, 24)
    want = check_against_reference(w, x, b)
    assert torch.equal(cpu.nm_linear(x, w.values.to(dtype), w.indices, None, *pattern, b), want)


def test_numpy_references_agree():
    x, b = inputs(3, 96, 48)
    bw, nw = bsr_weight(48, 96, (4, 8), 0.5), nm_weight(48, 96, (2, 4))
    want = ref.bsr_linear(x.double().numpy(), bw.block_row_ptr.numpy(), bw.block_col_idx.numpy(),
                          bw.values.double().numpy(), 48, 96, b.double().numpy())
    np.testing.assert_allclose(run(bw, x, b).numpy(), want, rtol=1e-5, atol=1e-5)
    want = ref.nm_linear(x.double().numpy(), nw.values.double().numpy(), nw.indices.numpy(), 48, 96, (2, 4),
                         b.double().numpy())
    np.testing.assert_allclose(run(nw, x, b).numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m", [1, 2, 5, 16, 19, 32, 45])
@pytest.mark.parametrize("w", [bsr_weight(64, 256, (16, 16), 0.5), bsr_weight(64, 256, (8, 32), 0.5), bsr_weight(64, 255, (4, 5), 0.5),
                               nm_weight(64, 256, (2, 4)), nm_weight(64, 100, (2, 4)), nm_weight(64, 72, (4, 8)),
                               nm_weight(64, 256, (1, 8)), nm_weight(64, 248, (5, 8))],
                         ids=["bsr16", "bsr8x32", "bsr4x5", "2:4", "2:4-k100", "4:8-k72", "1:8", "5:8"])
def test_same_bits_as_csr_on_the_stored_elements(cpu_isa, m, w):
    x, b = inputs(m, w.shape[1], w.shape[0])
    assert torch.equal(run(w, x, b), csr_run(as_csr(w), x, b))


@pytest.mark.parametrize("m", [1, 6, 17, 40])
@pytest.mark.parametrize("w", [bsr_weight(96, 160, (16, 16), 0.4), nm_weight(96, 160, (2, 4)),
                               nm_weight(96, 160, (3, 8))], ids=["bsr", "2:4", "3:8"])
def test_bit_identical_across_isas_and_threads(m, w):
    x, b = inputs(m, 160, 96)
    assert_every_isa_agrees(lambda: run(w, x, b))
    one, many = outputs_on_one_and_many_threads(lambda: run(w, x, b))
    assert torch.equal(one, many)


@pytest.mark.parametrize("pattern", [(2, 4), (4, 8)], ids=str)
@pytest.mark.parametrize("int8", [False, True], ids=["f32", "int8"])
@pytest.mark.parametrize("k", [96, 544])  # one 512-column chunk of the 3-16 row kernel, or two
def test_nm_rows_give_the_same_bits_alone_and_in_any_batch(pattern, int8, k):
    """K % 32 == 0: AVX-512 streams 1-2 rows, chunks 3-16 rows at a time; every ISA and row count agree."""
    g = torch.Generator().manual_seed(3)
    dense = torch.randn(40, k, generator=g)
    w = NMWeight.from_dense(dense * prune.nm_mask(dense, *pattern), pattern, quantize_int8=int8)
    x, b = inputs(37, k, 40)
    alone = torch.cat([cpu.nm_linear(x[i:i + 1], w.values, w.indices, w.scale, *pattern, b) for i in range(37)])
    for m in (2, 3, 5, 16, 17, 37):
        y = cpu.nm_linear(x[:m], w.values, w.indices, w.scale, *pattern, b)
        assert torch.equal(y, alone[:m]), m
        assert_every_isa_agrees(lambda: cpu.nm_linear(x[:m], w.values, w.indices, w.scale, *pattern, b), m)


def test_half_activations_and_strided_x():
    w = nm_weight(8, 64, (2, 4))
    x = torch.randn(3, 128)[:, ::2]
    y = run(w, x)
    assert torch.equal(y, run(w, x.contiguous()))
    h = x.to(torch.bfloat16)
    assert y.dtype == torch.float32 and run(w, h).dtype == torch.bfloat16


def test_nan_reaches_only_rows_that_store_its_column():
    w = bsr_weight(32, 64, (16, 16), 0.5, seed=5)
    x, _ = inputs(3, 64, 32)
    x[1, 5] = float("nan")
    y = run(w, x)
    stores = stored_mask(w)[:, 5]
    assert torch.equal(torch.isnan(y[1]), stores) and not torch.isnan(y[[0, 2]]).any()


# ---- corrupted arrays: the C++ entry refuses them ---------------------------
@pytest.mark.parametrize("m", [1, 5, 17])  # 17: the 16-row tiles of AVX2 too
@pytest.mark.parametrize("field", [8, 15])
@pytest.mark.parametrize("byte", [0, 9, -1])  # K=40: first run, second run, last (partial) run
@pytest.mark.parametrize("k", [40, 64])  # 64: only aligned runs
def test_nm_position_field_outside_its_group_raises(cpu_isa, m, field, byte, k):
    w = nm_weight(4, k, (4, 8))  # K=40: 20 kept a row: 10 bytes, a full and a partial run
    indices = w.indices.clone()
    indices[2, byte] = (indices[2, byte] & 0xF0) | field
    x, _ = inputs(m, k, 4)
    with pytest.raises(ValueError, match="N:M position field is outside its group"):
        cpu.nm_linear(x, w.values, indices, None, 4, 8, None)


@pytest.mark.parametrize("m", [1, 5, 33])
@pytest.mark.parametrize("value", [6, 32767, -1])
@pytest.mark.parametrize("block", [(4, 8), (8, 16)], ids=str)
def test_bsr_block_column_outside_the_matrix_raises(cpu_isa, m, value, block):
    w = bsr_weight(16, 6 * block[1], block, 0.0)  # 6 block columns
    cols = w.block_col_idx.clone()
    cols[-1] = value
    x, _ = inputs(m, w.shape[1], 16)
    with pytest.raises(ValueError, match="column index is outside"):
        cpu.bsr_linear(x, w.block_row_ptr, cols, w.values, None, 16, None)


@pytest.mark.parametrize("position,value", [(0, 1), (2, 1), (4, 10**6), (4, 23)])
def test_bsr_bad_block_row_ptr_raises(position, value):
    w = bsr_weight(16, 48, (4, 8), 0.0)
    ptr = w.block_row_ptr.clone()
    ptr[position] = value
    with pytest.raises(ValueError, match="row_ptr is corrupted"):
        cpu.bsr_linear(torch.randn(2, 48), ptr, w.block_col_idx, w.values, None, 16, None)


def test_bad_shapes_are_refused_by_the_entry_points():
    y, x = torch.empty(2, 8), torch.randn(2, 12)
    v, idx = torch.randn(8, 6), torch.zeros(8, 2, dtype=torch.uint8)
    for n, m in [(2, 5), (0, 4), (4, 4), (2, 8)]:  # m not 4/8, n out of range, m not dividing K = 12
        with pytest.raises(ValueError, match="pattern does not fit"):
            slimops._C.nm_linear_cpu(x.data_ptr(), 2, 12, 12, v.data_ptr(), 4, 0, idx.data_ptr(), 8, n, m, 0, y.data_ptr(),
                                     1)
    ptr = torch.zeros(3, dtype=torch.int32)
    for bn, bk in [(3, 4), (4, 5), (0, 4)]:
        with pytest.raises(ValueError, match="block shape"):
            slimops._C.bsr_linear_cpu(x.data_ptr(), 2, 12, 12, ptr.data_ptr(), 4, ptr.data_ptr(), 2, 0, v.data_ptr(), 4, 0,
                                      8, bn, bk, 0, y.data_ptr(), 1)


# ---- the chooser -------------------------------------------------------------
def test_chooser_picks_cpu_c_for_every_value_dtype():
    w = nm_weight(8, 16, (2, 4))
    x, b = inputs(2, 16, 8)
    for values in (w.values, w.values.half(), w.values.bfloat16()):
        assert choose("nm_linear", x.device, x.dtype, (x, values, w.indices, None, 2, 4, b)).name == "cpu_c"
    bw = bsr_weight(8, 16, (4, 4), 0.5)
    args = (x, bw.block_row_ptr, bw.block_col_idx, bw.values, None, 8, b)
    assert choose("bsr_linear", x.device, x.dtype, args).name == "cpu_c"


# ---- int8 values with per-row scales (sparse + quantized) ----------------------
def int8_pair(fmt, k=96):
    """(int8 format, the same arrays with the int8 values widened to float32)."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(40, k, generator=g)
    if fmt == "csr":
        q = CSRWeight.from_dense(w, torch.rand(40, 96, generator=g) >= 0.7, quantize_int8=True)
        return q, CSRWeight(q.row_ptr, q.col_idx, q.values.float(), q.shape)
    if fmt == "bsr":
        q = BSRWeight.from_dense(w, (8, 16), torch.rand(5, 6, generator=g) >= 0.5, quantize_int8=True)
        return q, BSRWeight(q.block_row_ptr, q.block_col_idx, q.values.float(), q.shape, q.block)
    keep = (torch.rand(40, k // 4, 4, generator=g).argsort(dim=-1) < 2).reshape(40, k)
    q = NMWeight.from_dense(w * keep, (2, 4), quantize_int8=True)
    return q, NMWeight(q.values.float(), q.indices, q.shape, q.pattern)


def run_int8(w, x, bias=None):
    if isinstance(w, CSRWeight):
        return cpu.csr_linear(x, w.row_ptr, w.col_idx, w.values, w.scale, w.shape[0], bias)
    if isinstance(w, BSRWeight):
        return cpu.bsr_linear(x, w.block_row_ptr, w.block_col_idx, w.values, w.scale, w.shape[0], bias)
    return cpu.nm_linear(x, w.values, w.indices, w.scale, *w.pattern, bias)


@pytest.mark.parametrize("m", [1, 2, 3, 17])
@pytest.mark.parametrize("fmt,k", [("csr", 96), ("bsr", 96), ("nm", 96), ("nm", 104)])  # 104: a short last run
def test_int8_values_are_the_float_sum_times_the_scale(cpu_isa, fmt, k, m):
    # Documented order: the sum over the widened values, times scale[n] (one rounding), plus the bias.
    q, widened = int8_pair(fmt, k)
    x, b = inputs(m, k, 40)
    want = run_int8(widened, x) * q.scale + b
    assert torch.equal(run_int8(q, x, b), want)


@pytest.mark.parametrize("fmt", ["csr", "bsr", "nm"])
def test_int8_values_match_the_dequantized_reference(fmt):
    q, _ = int8_pair(fmt)
    x, b = inputs(5, 96, 40)
    dense = q.to_dense().double()
    want = x.double() @ dense.T + b.double()
    np.testing.assert_allclose(run_int8(q, x, b).double().numpy(), want.numpy(), rtol=1e-5, atol=1e-4)
    assert_every_isa_agrees(lambda: run_int8(q, x, b))


@pytest.mark.parametrize("m", [1, 5])
def test_nm_padding_bits_of_a_rows_last_byte_are_ignored(cpu_isa, m):
    # 3:8 on K = 8 keeps 3 values a row: 12 bits of fields, so the last byte's high nibble is padding.
    w = nm_weight(4, 8, (3, 8))
    padded = w.indices.clone()
    padded[:, -1] |= 0xF0
    x, _ = inputs(m, 8, 4)
    want = cpu.nm_linear(x, w.values, w.indices, None, 3, 8, None)
    assert torch.equal(cpu.nm_linear(x, w.values, padded, None, 3, 8, None), want)


def test_sizes_whose_products_overflow_are_refused():
    t = torch.zeros(4, dtype=torch.int32)
    with pytest.raises(ValueError, match="larger than the kernel supports"):
        slimops._C.bsr_linear_cpu(t.data_ptr(), 1, 2**40, 2**40, t.data_ptr(), 4, t.data_ptr(), 2, 0, t.data_ptr(),
                                  4, 0, 2**40, 1, 1, 0, t.data_ptr(), 1)


# ---- float16 and bfloat16 values: widened exactly, then the float32 order ---------
@pytest.mark.parametrize("m", [1, 2, 5])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fmt", ["csr", "bsr", "nm"])
def test_half_values_give_the_bits_of_their_float32_widening(cpu_isa, fmt, dtype, m):
    g = torch.Generator().manual_seed(9)
    w = torch.randn(24, 104, generator=g)
    w[0, :8] = torch.tensor([6e-8, -6e-8, 1e-5, 65504.0, -0.0, 1e-40, 3e38, -2.5])  # subnormals, extremes
    keep = torch.rand(24, 104, generator=g) >= 0.5
    if fmt == "csr":
        half = CSRWeight.from_dense(w.to(dtype), keep)
        wide = CSRWeight(half.row_ptr, half.col_idx, half.values.float(), half.shape)
    elif fmt == "bsr":
        half = BSRWeight.from_dense(w.to(dtype), (4, 8))
        wide = BSRWeight(half.block_row_ptr, half.block_col_idx, half.values.float(), half.shape, half.block)
    else:
        keep = (torch.rand(24, 26, 4, generator=g).argsort(dim=-1) < 2).reshape(24, 104)
        half = NMWeight.from_dense((w * keep).to(dtype), (2, 4))
        wide = NMWeight(half.values.float(), half.indices, half.shape, half.pattern)
    x, b = inputs(m, 104, 24)
    assert torch.equal(run_int8(half, x, b), run_int8(wide, x, b))
