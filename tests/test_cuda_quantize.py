"""CUDA per-token quantization and the W8A8 linear op on a GPU, against the NumPy references.

Needs a GPU and slimops built with CUDA (scripts/gpu_check.sh); skipped otherwise.
q and scale must equal the reference bit for bit; the linear output must be
within a few float32 roundings plus the output dtype's rounding.
"""
import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
slimops = pytest.importorskip("slimops")
if not getattr(slimops._C, "has_cuda", False):
    pytest.skip("slimops was built without CUDA (SLIMOPS_CUDA)", allow_module_level=True)
from slimops import reference  # noqa: E402

from conftest import assert_within_roundoff  # noqa: E402

DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # SlimopsDtype in cuda_kernels.h
DTYPES = list(DTYPE_CODE)
# Warp-per-row up to 1024 columns, block-per-row above; multiples of 8 take the vector path.
COLS = [1, 7, 64, 1000, 1024, 1025, 4096, 4103]


def special_rows(rows, cols, dtype, seed):
    """Random rows plus the edge cases: zero, NaN, +-Inf, exact .5 ties, and the extremes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.logspace(-3, 3, rows)[:, None]
    x[0] = 0
    x[1, cols // 2] = float("nan")
    x[2, -1] = float("inf")
    x[3, 0] = float("-inf")
    # amax 127 makes inv exactly 1, so x * inv lands on ties that must round to even.
    ties = torch.tensor([127.0, 2.5, -3.5, 0.5, -0.5, 1.5, -126.5, 125.5])
    x[4] = ties.repeat(cols // 8 + 1)[:cols]
    x[5] = -x[5].abs()  # the row's amax comes from a negative value
    return x.to(dtype)


def quantize_with_kernel(x):
    """Call the CUDA entry point directly, so the test cannot pass through a fallback."""
    rows, cols = x.shape
    q = torch.empty(rows, cols, dtype=torch.int8, device=x.device)
    scale = torch.empty(rows, dtype=torch.float32, device=x.device)
    slimops._C.quantize_per_token_cuda(x.data_ptr(), DTYPE_CODE[x.dtype], rows, cols, x.stride(0),
                                       q.data_ptr(), scale.data_ptr(), torch.cuda.current_stream().cuda_stream)
    return q, scale


def reference_quantize(x):
    with np.errstate(invalid="ignore", over="ignore"):
        return reference.quantize_per_token(x.float().cpu().numpy())


def assert_same_quantization(got_q, got_scale, x):
    want_q, want_scale = reference_quantize(x)
    np.testing.assert_array_equal(got_q.cpu().numpy(), want_q)
    np.testing.assert_array_equal(got_scale.cpu().numpy(), want_scale)  # NaN matches NaN here


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cols", COLS)
@pytest.mark.parametrize("layout", ["contiguous", "padded_rows", "misaligned_base"])
def test_kernel_matches_reference(dtype, cols, layout):
    rows = 37
    x = special_rows(rows, cols, dtype, seed=cols).cuda()
    if layout == "padded_rows":  # row stride cols + 3: the scalar path
        x = torch.nn.functional.pad(x, (0, 3))[:, :cols]
    elif layout == "misaligned_base":  # base one element past a 16-byte boundary
        x = torch.nn.functional.pad(x.reshape(-1), (1, 0))[1:].reshape(rows, cols)
    q, scale = quantize_with_kernel(x)
    assert_same_quantization(q, scale, x)


def test_tiny_amax_overflows_inv_like_the_reference():
    # 127 / amax overflows to inf: the reference then quantizes the whole row to 0
    # (not +-127), and the kernel must do the same.
    x = torch.tensor([[0.0, 1e-40, -1e-40, 5e-41], [0.0, 1e-38, 3e-39, -1e-38]], device="cuda")
    q, scale = quantize_with_kernel(x)
    assert_same_quantization(q, scale, x)


def test_single_row_and_many_rows():
    for rows, cols in [(1, 4096), (70001, 8)]:
        x = torch.randn(rows, cols, device="cuda", dtype=torch.float16)
        q, scale = quantize_with_kernel(x)
        assert_same_quantization(q, scale, x)


def test_kernel_refuses_bad_arguments():
    x = torch.ones(2, 8, device="cuda")
    q = torch.empty(2, 8, dtype=torch.int8, device="cuda")
    scale = torch.empty(2, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    for dtype_code, rows, cols, stride in [(7, 2, 8, 8), (0, -1, 8, 8), (0, 2, 8, -8), (0, 2**40, 2**40, 2**40)]:
        with pytest.raises(RuntimeError, match="failed with code"):
            slimops._C.quantize_per_token_cuda(x.data_ptr(), dtype_code, rows, cols, stride,
                                               q.data_ptr(), scale.data_ptr(), stream)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_quantize_op_on_cuda_matches_reference(dtype):
    x = special_rows(10, 333, dtype, seed=1).reshape(2, 5, 333).cuda()
    q, scale = torch.ops.slimops.quantize_per_token(x)
    assert q.shape == x.shape and q.dtype == torch.int8 and q.device == x.device
    assert scale.shape == x.shape[:-1] and scale.dtype == torch.float32
    want_q, want_scale = reference_quantize(x)
    np.testing.assert_array_equal(q.cpu().numpy(), want_q)
    np.testing.assert_array_equal(scale.cpu().numpy(), want_scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
# Each case may compile a Triton kernel (~1 s), so bias varies with the shape instead of doubling them.
@pytest.mark.parametrize("m, k, n, with_bias", [(1, 64, 33, False), (17, 1000, 5, True), (300, 4096, 257, True)])
def test_int8_linear_op_on_cuda_matches_reference(dtype, m, k, n, with_bias):
    g = torch.Generator().manual_seed(m + k + n)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    w_scale = torch.rand(n, generator=g) * 1e-2 + 1e-4
    bias = torch.randn(n, generator=g).to(dtype) if with_bias else None
    y = torch.ops.slimops.int8_linear(x.cuda(), w.cuda(), w_scale.cuda(), None if bias is None else bias.cuda())
    assert y.shape == (m, n) and y.dtype == dtype and y.is_cuda

    x_np, w_np, ws_np = x.float().numpy(), w.numpy(), w_scale.numpy()
    b_np = None if bias is None else bias.float().numpy()
    want = reference.int8_linear(x_np, w_np, ws_np, b_np)
    # Error bound relative to |acc * x_scale * w_scale| + |bias|, so cancellation is allowed for.
    q, x_scale = reference.quantize_per_token(x_np)
    magnitude = np.abs(reference.int8_matmul(q, w_np)) * x_scale[:, None].astype(np.float64) * ws_np.astype(np.float64)
    if b_np is not None:
        magnitude = magnitude + np.abs(b_np.astype(np.float64))
    assert_within_roundoff(y, want, magnitude, dtype)


def test_int8_linear_op_on_cuda_gives_nan_rows_for_non_finite_input():
    x = torch.randn(3, 64, device="cuda")
    x[1, 5] = float("inf")
    w = torch.randint(-127, 128, (8, 64), dtype=torch.int8, device="cuda")
    y = torch.ops.slimops.int8_linear(x, w, torch.full((8,), 1e-2, device="cuda"), None)
    assert torch.isnan(y[1]).all() and torch.isfinite(y[[0, 2]]).all()


def test_int8_linear_with_a_static_scale_on_cuda_matches_reference():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 256, generator=g).half()
    w = torch.randint(-128, 128, (40, 256), generator=g, dtype=torch.int8)
    w_scale = torch.rand(40, generator=g) * 1e-2 + 1e-4
    y = torch.ops.slimops.int8_linear(x.cuda(), w.cuda(), w_scale.cuda(), None, torch.tensor(0.01, device="cuda"))
    x_np = x.float().numpy()
    want = reference.int8_linear(x_np, w.numpy(), w_scale.numpy(), static_x_scale=0.01)
    q, _ = reference.quantize_per_token(x_np, 0.01)
    magnitude = np.abs(reference.int8_matmul(q, w.numpy())) * 0.01 * w_scale.numpy().astype(np.float64)
    assert_within_roundoff(y, want, magnitude, torch.float16)
