"""Triton bsr_linear and nm_linear against the float64 NumPy references.

Runs in Triton's CPU interpreter by default (CPU tensors, small shapes). With
TRITON_INTERPRET=0 and a GPU it runs the compiled kernels on CUDA tensors
(scripts/gpu_check.sh does that) and also covers bfloat16 activations.
"""
from triton_mode import DEVICE, INTERPRET, NEEDS_CUDA_UNLESS_INTERPRETED, triton  # first: sets TRITON_INTERPRET

import itertools

import numpy as np
import pytest
import torch

from slimops import reference as ref
from slimops.backends import cuda
from slimops.formats import BSRWeight, NMWeight
from slimops.kernels import bsr_linear as bsr_kernel
from slimops.kernels import nm_linear as nm_kernel

from conftest import ABS_FLOOR, DOT_FP32_ROUNDINGS_PER_TERM, ROUNDOFF, assert_within_bound, to_numpy

pytestmark = NEEDS_CUDA_UNLESS_INTERPRETED

# The interpreter has no bfloat16 arithmetic; the GPU run covers bf16 activations
# (bf16 values with fp32 activations are only loaded and widened: the interpreter takes those).
X_DTYPES = [torch.float32, torch.float16] + ([] if INTERPRET else [torch.bfloat16])
VALUE_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int8]
# Per M: the small-M path (1 and 3 rows), and tl.dot over two M tiles, the second partial (17).
MS = (1, 3, 17)
# (bn, bk, N, K): non-power-of-two blocks, N and K not multiples of the tiles, the
# widest blocks taken, blocks wider than a step's least width.
BSR_SHAPES = [(1, 1, 5, 7), (2, 3, 6, 33), (4, 8, 12, 40), (5, 2, 15, 22), (16, 16, 48, 80), (8, 32, 24, 96),
              (64, 64, 64, 128)]
NM_PATTERNS = [(n, m) for m in (4, 8) for n in range(1, m)]
NM_N = 21  # neither a multiple of 16 nor of the dot configs' 64


def combos(*lists):
    """Every combination in the interpreter (cheap); on a GPU each is a fresh
    compile, so the later lists cycle through the first instead."""
    if INTERPRET:
        return list(itertools.product(*lists))
    return [(first, *(lst[i % len(lst)] for lst in lists[1:])) for i, first in enumerate(lists[0])]


def as_source(w, dtype):
    """(dense source, quantize_int8) for a format's from_dense."""
    return (w, True) if dtype == torch.int8 else (w.to(dtype), False)


def bsr_weight(bn, bk, n, k, vdtype, sparsity, seed):
    g = torch.Generator().manual_seed(seed)
    source, q = as_source(torch.randn(n, k, generator=g), vdtype)
    mask = torch.rand(n // bn, k // bk, generator=g) >= sparsity
    mask[0] = False  # an empty block row in every weight
    return BSRWeight.from_dense(source, (bn, bk), mask, quantize_int8=q)


def nm_weight(pattern, n, k, vdtype, sparsity, seed):
    """An N:M weight whose groups keep fewer than n nonzeros at `sparsity` (the
    format stores explicit zeros there); sparsity 1 is the all-zero weight."""
    g = torch.Generator().manual_seed(seed)
    pn, m = pattern
    keep = torch.rand(n, k // m, m, generator=g).argsort(dim=-1) < pn
    keep &= torch.rand(n, k // m, m, generator=g) >= sparsity
    keep = keep.reshape(n, k)
    source, q = as_source(torch.randn(n, k, generator=g) * keep, vdtype)
    return NMWeight.from_dense(source, pattern, keep, quantize_int8=q)


def activations(lead, k, n, dtype, bias, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, k, generator=g).to(dtype)
    return x, (torch.randn(n, generator=g) if bias else None)


def host(t):
    return None if t is None else to_numpy(t)


def dev(t):
    return None if t is None else t.to(DEVICE)


def bsr_reference(sw):
    n, k = sw.shape
    return lambda xa, va, sa, ba: ref.bsr_linear(xa, sw.block_row_ptr.numpy(), sw.block_col_idx.numpy(), va, n, k,
                                                 ba, sa)


def nm_reference(sw):
    n, k = sw.shape
    return lambda xa, va, sa, ba: ref.nm_linear(xa, va, sw.indices.numpy(), n, k, sw.pattern, ba, sa)


def assert_close(y, sw, x, bias, reference):
    """|y - y_ref| within the kernels' roundings (kernels/_sparse_tile.py): exact
    operands, a float32 dot of K terms (tensor-core rounding per term), the
    float32 scale product and bias add, then the one rounding to x's dtype,
    relative to the result itself (not to sum |x| |w|: so a weight rounded to
    a narrower dtype on the way, which the kernels must not do, shows)."""
    run = reference(sw)
    arrays = [host(x), host(sw.values), host(sw.scale), host(bias)]
    want = run(*arrays)
    magnitude = run(*[None if a is None else np.abs(a) for a in arrays])
    k, u32 = x.shape[-1], ROUNDOFF[torch.float32]
    before_cast = (DOT_FP32_ROUNDINGS_PER_TERM * (k + 1) + 2) * u32 * magnitude
    bound = before_cast + ROUNDOFF[x.dtype] * (np.abs(want) + before_cast) + ABS_FLOOR[x.dtype]
    assert y.device.type == DEVICE and y.dtype == x.dtype
    assert_within_bound(y, want, bound)


def run_bsr(sw, x, bias, **kw):
    return bsr_kernel.bsr_linear(dev(x), dev(sw.block_row_ptr), dev(sw.block_col_idx), dev(sw.values), dev(sw.scale),
                                 sw.shape[0], dev(bias), **kw)


def run_nm(sw, x, bias, **kw):
    return nm_kernel.nm_linear(dev(x), dev(sw.values), dev(sw.indices), dev(sw.scale), *sw.pattern, dev(bias), **kw)


@pytest.mark.parametrize("shape, vdtype, xdtype", combos(BSR_SHAPES, VALUE_DTYPES, X_DTYPES), ids=str)
def test_bsr_matches_reference(shape, vdtype, xdtype):
    bn, bk, n, k = shape
    for i, m in enumerate(MS):
        sw = bsr_weight(bn, bk, n, k, vdtype, sparsity=(0.3, 0.7, 0.0)[i], seed=n + k + i)
        x, bias = activations((m,), k, n, xdtype, bias=i != 1, seed=m)
        assert_close(run_bsr(sw, x, bias), sw, x, bias, bsr_reference)


@pytest.mark.parametrize("pattern, vdtype, xdtype", combos(NM_PATTERNS, VALUE_DTYPES, X_DTYPES), ids=str)
def test_nm_matches_reference(pattern, vdtype, xdtype):
    k = 5 * pattern[1] * 4  # 2.5 steps of the 64-wide K tiles for m = 8, 1.25 for m = 4
    for i, m in enumerate(MS):
        sw = nm_weight(pattern, NM_N, k, vdtype, sparsity=(0.0, 0.5, 0.0)[i], seed=k + i)
        x, bias = activations((m,), k, NM_N, xdtype, bias=i != 1, seed=m)
        assert_close(run_nm(sw, x, bias), sw, x, bias, nm_reference)


def config_id(config):
    return f"m{config.block_m}k{config.block_k}" + (f"n{config.block_n}" if config.block_n else "")


@pytest.mark.parametrize("config", [c for _, c in bsr_kernel.CONFIGS], ids=config_id)
def test_every_bsr_config_tiles_a_multi_block_problem(config):
    # 3 M tiles or more for every config, the last partial; 4x4 blocks, several per step.
    sw = bsr_weight(4, 4, 20, 72, torch.float16, 0.4, seed=5)
    x, bias = activations((2 * config.block_m + 1,), 72, 20, torch.float16, True, seed=6)
    assert_close(run_bsr(sw, x, bias, config=config), sw, x, bias, bsr_reference)


@pytest.mark.parametrize("config", [c for _, c in nm_kernel.CONFIGS], ids=config_id)
def test_every_nm_config_tiles_a_multi_block_problem(config):
    # Several M, N and K tiles, partial ones at each edge.
    sw = nm_weight((2, 4), config.block_n + 3, 2 * config.block_k + 12, torch.float16, 0.2, seed=7)
    n, k = sw.shape
    x, bias = activations((2 * config.block_m + 1,), k, n, torch.float16, True, seed=8)
    assert_close(run_nm(sw, x, bias, config=config), sw, x, bias, nm_reference)


def test_all_zero_weights_give_the_bias():
    x, bias = activations((3,), 16, 8, torch.float32, True, seed=9)
    bsr = bsr_weight(4, 4, 8, 16, torch.float32, sparsity=1.0, seed=1)
    assert bsr.values.shape[0] == 0
    nm = nm_weight((2, 4), 8, 16, torch.int8, sparsity=1.0, seed=1)
    for y in (run_bsr(bsr, x, bias), run_nm(nm, x, bias)):
        torch.testing.assert_close(y.cpu(), bias.expand(3, 8))


@pytest.mark.parametrize("lead", [(0,), (2, 3)], ids=str)
def test_cuda_backend_keeps_leading_dims(lead):
    """The backend wrappers flatten x's leading dims (none of them rows at M = 0) and restore them."""
    bsr = bsr_weight(2, 4, 6, 16, torch.float16, 0.5, seed=2)
    nm = nm_weight((2, 4), 6, 16, torch.float16, 0.0, seed=2)
    x, bias = activations(lead, 16, 6, torch.float16, True, seed=3)
    args = (dev(x), dev(bsr.block_row_ptr), dev(bsr.block_col_idx), dev(bsr.values), None, 6, dev(bias))
    assert cuda.bsr_linear_declines(*args) is None
    y_bsr = cuda.bsr_linear(*args)
    args = (dev(x), dev(nm.values), dev(nm.indices), None, 2, 4, dev(bias))
    assert cuda.nm_linear_declines(*args) is None
    y_nm = cuda.nm_linear(*args)
    for y, sw, reference in ((y_bsr, bsr, bsr_reference), (y_nm, nm, nm_reference)):
        assert y.shape == (*lead, 6)
        assert_close(y, sw, x, bias, reference)


def test_strided_activations():
    sw = bsr_weight(2, 2, 6, 10, torch.float32, 0.3, seed=4)
    x, bias = activations((3,), 20, 6, torch.float32, True, seed=4)
    rows_apart, cols_apart = x[:, :10], x[:, ::2]  # row stride 20; column stride 2 (copied)
    for view in (rows_apart, cols_apart):
        assert_close(run_bsr(sw, view, bias), sw, view, bias, bsr_reference)


def test_empty_k():
    x = torch.zeros(2, 0)
    bias = torch.arange(4.0)
    bsr = BSRWeight.from_dense(torch.zeros(4, 0), (2, 1))
    nm = NMWeight.from_dense(torch.zeros(4, 0), (1, 4))
    for y in (run_bsr(bsr, x, bias), run_nm(nm, x, bias)):
        torch.testing.assert_close(y.cpu(), bias.expand(2, 4))


def test_nm_position_past_the_group_selects_nothing():
    # A 4-bit field can hold 8..15 for m = 8. The format refuses such weights; the
    # kernel's one-hot select drops the value instead of writing into a neighbour group.
    sw = nm_weight((1, 8), 4, 16, torch.float32, 0.0, seed=11)
    indices = sw.indices.clone()
    indices[1, 0] = (indices[1, 0] & 0xF0) | 0xF  # row 1, kept value 0 at position 15
    x, _ = activations((2,), 16, 4, torch.float32, False, seed=12)
    y = nm_kernel.nm_linear(dev(x), dev(sw.values), dev(indices), None, 1, 8)
    values = sw.values.clone()
    values[1, 0] = 0
    kept = NMWeight(values, sw.indices, sw.shape, sw.pattern)
    assert_close(y, kept, x, None, nm_reference)


def test_corrupted_bsr_arrays_drop_blocks_instead_of_reading_out_of_bounds():
    # Not validated on the GPU: a block column outside [0, K/bk) or pointers past the
    # blocks are clamped away, so only the intact blocks count.
    sw = bsr_weight(4, 4, 8, 16, torch.float32, 0.0, seed=13)  # block row 0 empty, row 1 all 4 blocks
    cols = sw.block_col_idx.clone()
    cols[0], cols[1] = 4, -1
    ptr = sw.block_row_ptr.clone()
    ptr[-1] = 10**6
    x, _ = activations((3,), 16, 8, torch.float32, False, seed=14)
    y = bsr_kernel.bsr_linear(dev(x), dev(ptr), dev(cols), dev(sw.values), None, 8)
    values = sw.values.clone()
    values[:2] = 0
    kept = BSRWeight(sw.block_row_ptr, sw.block_col_idx, values, sw.shape, sw.block)
    assert_close(y, kept, x, None, bsr_reference)


def test_large_blocks_and_missing_triton_are_declined(monkeypatch):
    x = torch.zeros(1, 128, device=DEVICE)
    values = torch.zeros(0, 128, 1, device=DEVICE)
    ptr = torch.zeros(2, dtype=torch.int32, device=DEVICE)
    idx = torch.zeros(0, dtype=torch.int16, device=DEVICE)
    reason = cuda.bsr_linear_declines(x, ptr, idx, values, None, 128, None)
    assert "at most 64x64, got 128x1" in reason
    with pytest.raises(ValueError, match="at most 64x64"):
        bsr_kernel.bsr_linear(x, ptr, idx, values, None, 128)
    monkeypatch.setattr(cuda, "HAS_TRITON", False)
    assert cuda.bsr_linear_declines(x, ptr, idx, values, None, 128, None) == "triton is not installed"
    assert cuda.nm_linear_declines(x, None, None, None, 2, 4, None) == "triton is not installed"


def test_sizes_past_int32_indexing_are_declined():
    # Metadata only: the checks never allocate or read these.
    x = torch.empty(2**31, 16, device="meta")
    bsr_values = torch.empty(0, 16, 16, device="meta")
    assert "M is too large" in bsr_kernel.unsupported_reason(x, bsr_values, 16)
    nm_values = torch.empty(2**31, 8, device="meta")
    assert "N is too large" in nm_kernel.unsupported_reason(x[:1], nm_values)


def test_bad_config_is_refused():
    sw = nm_weight((2, 4), 4, 8, torch.float32, 0.0, seed=1)
    x, _ = activations((1,), 8, 4, torch.float32, False, seed=1)
    with pytest.raises(ValueError, match="config must be one of"):
        run_nm(sw, x, None, config=bsr_kernel.CONFIGS[0][1])
    with pytest.raises(ValueError, match="indices must be"):  # the op's own checks run first
        nm_kernel.nm_linear(dev(x), dev(sw.values), dev(sw.indices[:, :0]), None, 2, 4)
