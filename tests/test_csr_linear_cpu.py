"""The CPU kernel of torch.ops.slimops.csr_linear (float32 values) against slimops.reference.

The kernel is called through its backend function (slimops.backends.cpu.csr_linear).
Up to 2 activation rows it gathers x; from 3 rows it runs the xT kernel
(csrc/cpu/sparse_xt), on tiles of 8 or 16 rows (on AVX2 the 16-row tiles walk
each weight row in lane passes, lane_passes.h): the row counts below cover each."""

import numpy as np
import pytest
import torch

import slimops  # noqa: F401  (registers the ops)
from slimops import reference as ref
from slimops.backends import cpu
from slimops.backends.registry import choose

from conftest import (
    ROUNDOFF,
    assert_every_isa_agrees,
    assert_within_bound,
    outputs_on_one_and_many_threads,
    to_numpy,
)

ops = torch.ops.slimops
SPARSITIES = [0.0, 0.5, 0.9, 1.0]
# Enough nonzeros per row for full and partial blocks of 16 lanes.
SHAPES = [(1, 1), (33, 33), (7, 100), (1, 33), (33, 1)]  # (N, K)


def csr_arrays(n, k, sparsity, idx_dtype=torch.int16, ptr_dtype=torch.int32, seed=0):
    """(row_ptr, col_idx, values) of a random float32 CSR weight, columns sorted in each row."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(n, k, generator=g) >= sparsity
    w = torch.randn(n, k, generator=g)
    rows, cols = keep.nonzero(as_tuple=True)
    row_ptr = torch.zeros(n + 1, dtype=torch.int64)
    row_ptr[1:] = keep.sum(dim=1).cumsum(0)
    return row_ptr.to(ptr_dtype), cols.to(idx_dtype), w[rows, cols].contiguous()


def inputs(m, k, n, dtype=torch.float32, bias=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(dtype)
    return x, (torch.randn(n, generator=g) if bias else None)


def check(arrays, x, n, bias):
    row_ptr, col_idx, values = arrays
    y = cpu.csr_linear(x, row_ptr, col_idx, values, None, n, bias)
    assert y.dtype == x.dtype and y.shape == (x.shape[0], n)
    k = x.shape[-1]
    xa, va, ba = to_numpy(x).astype(np.float64), values.numpy().astype(np.float64), None
    if bias is not None:
        ba = bias.numpy().astype(np.float64)
    rp, ci = row_ptr.numpy(), col_idx.numpy()
    expected = ref.csr_linear(xa, rp, ci, va, n, k, ba)
    magnitude = ref.csr_linear(np.abs(xa), rp, ci, np.abs(va), n, k, None if ba is None else np.abs(ba))
    # Each term: its lane's sequential sum (at most nnz_row / 16 + 1 roundings),
    # the four levels of the tree and the bias add; then the output cast.
    steps = int(np.diff(rp).max(initial=0)) // 16 + 6
    bound = (steps * ROUNDOFF[torch.float32] + ROUNDOFF[x.dtype]) * magnitude
    assert_within_bound(y, expected, bound)
    return y


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("m", [0, 1, 2, 3, 9, 17])
def test_matches_reference_on_every_isa(cpu_isa, sparsity, n, k, m):
    x, b = inputs(m, k, n)
    check(csr_arrays(n, k, sparsity), x, n, b)


@pytest.mark.parametrize("idx_dtype", [torch.int16, torch.int32])
@pytest.mark.parametrize("ptr_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("bias", [True, False])
def test_index_dtypes_and_bias(cpu_isa, idx_dtype, ptr_dtype, bias):
    x, b = inputs(3, 100, 7, bias=bias)
    check(csr_arrays(7, 100, 0.5, idx_dtype, ptr_dtype), x, 7, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_activations(cpu_isa, dtype):
    x, b = inputs(4, 100, 7, dtype)
    check(csr_arrays(7, 100, 0.5), x, 7, b)


def test_leading_dims_and_strided_x():
    # Through the op, at a density its chooser gives to this kernel.
    row_ptr, col_idx, values = csr_arrays(7, 40, 0.9)
    x = torch.randn(2, 3, 80)[..., ::2]
    y = ops.csr_linear(x, row_ptr, col_idx, values, None, 7)
    want = cpu.csr_linear(x.contiguous().reshape(6, 40), row_ptr, col_idx, values, None, 7, None)
    torch.testing.assert_close(y, want.reshape(2, 3, 7), rtol=0, atol=0)


def run_case(m, sparsity, idx_dtype=torch.int16):
    arrays = csr_arrays(300, 257, sparsity, idx_dtype, seed=3)
    x, b = inputs(m, 257, 300, seed=4)
    return lambda: cpu.csr_linear(x, *arrays, None, 300, b)


@pytest.mark.parametrize("m", [1, 2, 5, 16, 19])
@pytest.mark.parametrize("sparsity", [0.0, 0.9])
@pytest.mark.parametrize("idx_dtype", [torch.int16, torch.int32])
def test_bit_identical_across_isas(m, sparsity, idx_dtype):
    assert_every_isa_agrees(run_case(m, sparsity, idx_dtype))


def test_a_row_gives_the_same_bits_alone_and_in_a_batch(cpu_isa):
    # The gather kernels (1-2 rows) and the xT kernel (more) share the float order.
    arrays = csr_arrays(300, 257, 0.7, seed=3)
    x, b = inputs(19, 257, 300, seed=4)
    batch = cpu.csr_linear(x, *arrays, None, 300, b)
    for i in (0, 7, 18):
        assert torch.equal(cpu.csr_linear(x[i:i + 1], *arrays, None, 300, b)[0], batch[i])
    assert torch.equal(cpu.csr_linear(x[:5], *arrays, None, 300, b), batch[:5])


@pytest.mark.parametrize("idx_dtype", [torch.int16, torch.int32])
def test_every_row_length_gives_the_same_bits_alone_and_in_a_batch(cpu_isa, idx_dtype):
    # Rows of 0 to 40 stored elements: every place a row can end in its last run of 16
    # lanes (and in a lane pass's four), and rows shorter than one pass.
    n, k = 41, 64
    g = torch.Generator().manual_seed(5)
    lengths = torch.arange(n)
    cols = [torch.randperm(k, generator=g)[:length].sort().values for length in lengths.tolist()]
    row_ptr = torch.zeros(n + 1, dtype=torch.int32)
    row_ptr[1:] = lengths.cumsum(0)
    col_idx = torch.cat(cols).to(idx_dtype)
    values = torch.randn(col_idx.numel(), generator=g)
    x, b = inputs(16, k, n, seed=6)
    batch = check((row_ptr, col_idx, values), x, n, b)
    for i in (0, 15):
        assert torch.equal(cpu.csr_linear(x[i:i + 1], row_ptr, col_idx, values, None, n, b)[0], batch[i])


@pytest.mark.parametrize("m", [1, 16])
def test_bit_identical_across_thread_counts(cpu_isa, m):
    one, many = outputs_on_one_and_many_threads(run_case(m, 0.5))
    assert torch.equal(one, many)


# ---- corrupted arrays: the C++ entry refuses them ---------------------------
def corrupted(index, position, value, idx_dtype=torch.int16, ptr_dtype=torch.int32):
    arrays = list(csr_arrays(6, 33, 0.0, idx_dtype, ptr_dtype))
    arrays[index] = arrays[index].clone()
    arrays[index][position] = value
    return arrays


@pytest.mark.parametrize("rows", [2, 5, 16])  # the gather kernels, the xT kernel on 8- and 16-row tiles
@pytest.mark.parametrize("idx_dtype", [torch.int16, torch.int32])
# A full block, a later one, a row's partial block read in place (row 0 ends at 33), the array's last.
@pytest.mark.parametrize("position", [0, 17, 32, 197])
@pytest.mark.parametrize("value", [33, 32767, -1, -32768])
def test_bad_column_index_raises(cpu_isa, rows, idx_dtype, position, value):
    arrays = corrupted(1, position, value, idx_dtype)
    x, b = inputs(rows, 33, 6)
    with pytest.raises(ValueError, match="column index is outside"):
        cpu.csr_linear(x, *arrays, None, 6, b)


@pytest.mark.parametrize("rows", [1, 5, 16])
@pytest.mark.parametrize("idx_dtype", [torch.int16, torch.int32])
def test_stored_entries_with_no_input_columns_raise(cpu_isa, rows, idx_dtype):
    # K == 0: every stored index is out of range, including 0.
    row_ptr = torch.tensor([0, 16], dtype=torch.int32)
    col_idx = torch.zeros(16, dtype=idx_dtype)
    with pytest.raises(ValueError, match="column index is outside"):
        cpu.csr_linear(torch.zeros(rows, 0), row_ptr, col_idx, torch.ones(16), None, 1, None)


@pytest.mark.parametrize("ptr_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("position,value", [(2, 1), (3, 10**6), (0, 1), (6, 197), (6, 199), (6, -1)])
def test_bad_row_ptr_raises(cpu_isa, ptr_dtype, position, value):
    arrays = corrupted(0, position, value, ptr_dtype=ptr_dtype)
    x, b = inputs(2, 33, 6)
    with pytest.raises(ValueError, match="row_ptr is corrupted"):
        cpu.csr_linear(x, *arrays, None, 6, b)


def test_corrupt_index_error_is_also_an_index_error():
    assert issubclass(slimops._C.CorruptIndexError, ValueError)
    assert issubclass(slimops._C.CorruptIndexError, IndexError)


def test_bad_index_width_raises():
    row_ptr, col_idx, values = csr_arrays(6, 33, 0.5)
    y = torch.empty(1, 6)
    x = torch.randn(1, 33)
    with pytest.raises(ValueError, match="element width"):
        slimops._C.csr_linear_cpu(x.data_ptr(), 1, 33, 33, row_ptr.data_ptr(), 2, col_idx.data_ptr(), 2,
                                  col_idx.numel(), values.data_ptr(), 4, 0, 6, 0, y.data_ptr(), 1)


@pytest.mark.parametrize("value_type,with_scale", [(0, True), (1, False), (2, True), (4, False), (-1, False)])
def test_bad_values_type_raises(value_type, with_scale):
    row_ptr, col_idx, values = csr_arrays(6, 33, 0.5)
    y, x, scale = torch.empty(3, 6), torch.randn(3, 33), torch.ones(6)
    with pytest.raises(ValueError, match="values must be float32, float16 or bfloat16"):
        slimops._C.csr_linear_cpu(x.data_ptr(), 3, 33, 33, row_ptr.data_ptr(), 4, col_idx.data_ptr(), 2,
                                  col_idx.numel(), values.data_ptr(), value_type,
                                  scale.data_ptr() if with_scale else 0, 6, 0, y.data_ptr(), 1)


# ---- the chooser ---------------------------------------------------------
def chosen(values_dtype):
    row_ptr, col_idx, values = csr_arrays(6, 33, 0.9)
    x, b = inputs(2, 33, 6)
    scale = torch.ones(6) if values_dtype == torch.int8 else None
    values = values.to(values_dtype)
    return choose("csr_linear", x.device, x.dtype, (x, row_ptr, col_idx, values, scale, 6, b)).name


def test_chooser_picks_cpu_c_for_float32_values():
    # At any density: whether sparse beats dense is slimops.choose_layout's call.
    assert chosen(torch.float32) == "cpu_c"


def test_chooser_picks_cpu_c_for_int8_values():
    assert chosen(torch.int8) == "cpu_c"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_chooser_picks_cpu_c_for_half_values(dtype):
    assert chosen(dtype) == "cpu_c"
