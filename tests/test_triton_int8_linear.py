"""Triton W8A8 linear against an exact NumPy integer reference.

Runs in Triton's CPU interpreter by default (CPU tensors, small shapes). With
TRITON_INTERPRET=0 and a GPU it runs the compiled kernel on CUDA tensors
(scripts/gpu_check.sh does that) and also covers bfloat16 and >2**31 offsets.
"""
from triton_mode import DEVICE, INTERPRET, NEEDS_CUDA_UNLESS_INTERPRETED  # first: sets TRITON_INTERPRET

import itertools

import numpy as np
import pytest
import torch

from slimops.kernels import int8_linear as kernel

from conftest import assert_within_roundoff

pytestmark = NEEDS_CUDA_UNLESS_INTERPRETED

# The interpreter has no bfloat16 arithmetic; the GPU run covers it.
OUT_DTYPES = [torch.float32, torch.float16] + ([] if INTERPRET else [torch.bfloat16])
# (M, K, N): every combination in the interpreter (cheap); on a GPU each shape and
# dtype is a fresh Triton compile (~1 s), so a few shapes that still cover odd K and N.
SHAPES = (list(itertools.product([1, 3, 17], [37, 64, 100, 300], [5, 33])) if INTERPRET
          else [(1, 37, 5), (3, 300, 33), (17, 64, 33)])


def int8_operands(m, k, n, seed):
    """Random int8 q [m, k] and w [n, k] spanning -128..127, with an all -128 row in each."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    w = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    q[0] = -128
    w[-1] = -128
    return q, w


def reference(q, x_scale, w, w_scale, bias):
    """Exact int64 dot products, then the epilogue in float64."""
    acc = q.astype(np.int64) @ w.astype(np.int64).T
    y = acc.astype(np.float64) * x_scale.astype(np.float64)[:, None] * w_scale.astype(np.float64)[None, :]
    return y if bias is None else y + bias.astype(np.float64)[None, :]


def to_device(a):
    return torch.from_numpy(np.ascontiguousarray(a)).to(DEVICE)


def assert_close(y, q, x_scale, w, w_scale, bias):
    """Within the epilogue's roundings of the exact result, relative to
    |acc * x_scale * w_scale| + |bias| (so cancellation is allowed for)."""
    magnitude = np.abs(reference(q, x_scale, w, w_scale, None))
    if bias is not None:
        magnitude += np.abs(bias.astype(np.float64))[None, :]
    assert_within_roundoff(y, reference(q, x_scale, w, w_scale, bias), magnitude, y.dtype)


@pytest.mark.parametrize("m, k, n", SHAPES)
def test_integer_part_is_exact(m, k, n):
    # |acc| <= 128 * 128 * 300 < 2**24, so float32 holds every sum exactly.
    q, w = int8_operands(m, k, n, seed=m * 1000 + k * 10 + n)
    y = kernel.int8_linear(to_device(q), torch.ones(m, device=DEVICE), to_device(w),
                           torch.ones(n, device=DEVICE), None, torch.float32)
    want = q.astype(np.int64) @ w.astype(np.int64).T
    assert y.shape == (m, n) and y.dtype == torch.float32
    np.testing.assert_array_equal(y.cpu().numpy(), want.astype(np.float32))
    assert y[0, -1].item() == 128 * 128 * k


@pytest.mark.parametrize("m, k, n", [s for s in SHAPES if s[1] <= 100] if INTERPRET else SHAPES[:2])
@pytest.mark.parametrize("bias_dtype", [None, np.float32, np.float16])
@pytest.mark.parametrize("out_dtype", OUT_DTYPES, ids=str)
def test_scaled_output_matches_reference(m, k, n, bias_dtype, out_dtype):
    q, w = int8_operands(m, k, n, seed=k * 100 + n + m)
    rng = np.random.default_rng(m + k + n)
    x_scale = rng.uniform(1e-3, 2e-2, size=m).astype(np.float32)
    w_scale = rng.uniform(1e-3, 2e-2, size=n).astype(np.float32)
    bias = None if bias_dtype is None else rng.normal(0, 10, size=n).astype(bias_dtype)
    y = kernel.int8_linear(to_device(q), to_device(x_scale), to_device(w), to_device(w_scale),
                           None if bias is None else to_device(bias), out_dtype)
    assert y.dtype == out_dtype and y.device.type == DEVICE
    assert_close(y, q, x_scale, w, w_scale, bias)


@pytest.mark.parametrize("config", [c for _, c in kernel.CONFIGS], ids=lambda c: f"{c.block_m}x{c.block_n}x{c.block_k}")
def test_every_config_tiles_a_multi_block_problem(config):
    m, k, n = 300, 520, 300
    q, w = int8_operands(m, k, n, seed=7)
    x_scale = np.full(m, 1e-2, dtype=np.float32)
    w_scale = np.linspace(1e-3, 1e-2, n, dtype=np.float32)
    bias = np.linspace(-5, 5, n, dtype=np.float32)
    y = kernel.int8_linear(to_device(q), to_device(x_scale), to_device(w), to_device(w_scale),
                           to_device(bias), torch.float32, config=config)
    assert_close(y, q, x_scale, w, w_scale, bias)


def test_strided_operands_are_read_in_place():
    m, k, n = 5, 70, 9
    q, w = int8_operands(m, k, n, seed=3)
    q_padded = torch.zeros(m, k + 13, dtype=torch.int8, device=DEVICE)
    q_padded[:, 5:5 + k] = to_device(q)
    w_t = to_device(np.ascontiguousarray(w.T))  # stored [K, N]; w_t.t() is [N, K] with strides (1, N)
    ones_m, ones_n = torch.ones(m, device=DEVICE), torch.ones(n, 1, device=DEVICE)
    y = kernel.int8_linear(q_padded[:, 5:5 + k], ones_m, w_t.t(), ones_n, None, torch.float32)
    np.testing.assert_array_equal(y.cpu().numpy(), (q.astype(np.int64) @ w.astype(np.int64).T).astype(np.float32))


def test_empty_m_returns_empty_output():
    y = kernel.int8_linear(torch.zeros(0, 8, dtype=torch.int8, device=DEVICE), torch.ones(0, device=DEVICE),
                           torch.zeros(4, 8, dtype=torch.int8, device=DEVICE), torch.ones(4, device=DEVICE),
                           None, torch.float16)
    assert y.shape == (0, 4) and y.dtype == torch.float16


def test_bad_arguments_are_refused():
    q = torch.zeros(2, 8, dtype=torch.int8, device=DEVICE)
    w = torch.zeros(4, 8, dtype=torch.int8, device=DEVICE)
    ones2, ones4 = torch.ones(2, device=DEVICE), torch.ones(4, device=DEVICE)
    with pytest.raises(ValueError, match="K=8"):
        kernel.int8_linear(q, ones2, w[:, :7], ones4, None, torch.float32)
    with pytest.raises(ValueError, match="w_scale"):
        kernel.int8_linear(q, ones2, w, ones4.double(), None, torch.float32)
    with pytest.raises(ValueError, match="out_dtype"):
        kernel.int8_linear(q, ones2, w, ones4, None, torch.int32)


def huge_int8(rows, cols):
    """A [rows, cols] int8 view of a one-byte buffer (all strides 0): any shape, no memory."""
    return torch.zeros(1, dtype=torch.int8, device=DEVICE).as_strided((rows, cols), (0, 0))


@pytest.mark.parametrize("dim", ["M", "N", "K"])
def test_sizes_past_int32_indexing_are_refused(dim):
    cfg = kernel.CONFIGS[-1][1]
    block = {"M": cfg.block_m, "N": cfg.block_n, "K": cfg.block_k}[dim]
    largest = 2**31 - block  # size + block - 1 == 2**31 - 1: the last size the kernel can index
    sizes = {"M": 4, "N": 4, "K": 8}
    kernel.check_int32_sizes(*(largest if d == dim else sizes[d] for d in "MNK"), cfg)
    sizes[dim] = largest + 1
    m, n, k = sizes["M"], sizes["N"], sizes["K"]
    # float64 scales: were the size check missing, or after the scale conversion, the
    # call would fail on them (a different message) instead of allocating gigabytes.
    scale = torch.ones(1, dtype=torch.float64, device=DEVICE)
    with pytest.raises(ValueError, match=f"{dim}={largest + 1} is too large"):
        kernel.int8_linear(huge_int8(m, k), scale.expand(m), huge_int8(n, k), scale.expand(n), None,
                           torch.float32, config=cfg)


@pytest.mark.skipif(INTERPRET, reason="needs >2 GiB of device memory; compiled kernel only")
def test_row_offsets_past_int32_range():
    # q has M * K > 2**31 elements: the last rows are only reached with int64 offsets.
    # Values in -8..8 keep |acc| <= 64 * K < 2**24, exact in the float32 output.
    m, k, n = 2**16 + 3, 2**15, 16
    q = torch.randint(-8, 9, (m, k), dtype=torch.int8, device=DEVICE)
    w = torch.randint(-8, 9, (n, k), dtype=torch.int8, device=DEVICE)
    y = kernel.int8_linear(q, torch.ones(m, device=DEVICE), w, torch.ones(n, device=DEVICE), None, torch.float32)
    tail_q, w_np = q[-4:].cpu().numpy(), w.cpu().numpy()
    want = tail_q.astype(np.int64) @ w_np.astype(np.int64).T
    np.testing.assert_array_equal(y[-4:].cpu().numpy(), want.astype(np.float32))
