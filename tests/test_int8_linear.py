"""torch.ops.slimops.int8_linear and quantize_per_token on the CPU, every ISA
path, against slimops.reference."""

import contextlib
import os
import subprocess
import threading
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import slimops
from slimops import reference as ref
from slimops.backends import fallback

from conftest import assert_within_roundoff, to_numpy

op = torch.ops.slimops.int8_linear
quant_op = torch.ops.slimops.quantize_per_token


def make_inputs(m, k, n, *, dtype=torch.float32, bias=True, seed=0, lead=()):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, m, k, generator=g).to(dtype)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    w_scale = torch.rand(n, generator=g) * 0.01 + 1e-4
    b = torch.randn(n, generator=g) if bias else None
    return x, w, w_scale, b


def reference_and_magnitude(x, w, w_scale, b):
    xn, wn, sn = to_numpy(x), w.numpy(), w_scale.numpy()
    bn = None if b is None else to_numpy(b)
    expected = ref.int8_linear(xn, wn, sn, bn)
    q, xs = ref.quantize_per_token(xn)
    mag = np.abs(q.astype(np.float64)) @ np.abs(wn.astype(np.float64)).T
    mag = mag * np.abs(xs[..., None].astype(np.float64)) * sn.astype(np.float64)
    if bn is not None:
        mag = mag + np.abs(bn).astype(np.float64)
    return expected, mag


def check_against_reference(x, w, w_scale, b):
    y = op(x, w, w_scale, b)
    assert y.dtype == x.dtype and y.shape == (*x.shape[:-1], w.shape[0])
    expected, mag = reference_and_magnitude(x, w, w_scale, b)
    assert_within_roundoff(y, expected, mag, x.dtype)
    return y


SHAPES = [(1, 64, 4), (1, 4096, 256), (3, 37, 5), (17, 100, 33), (130, 129, 67), (4, 1, 1), (2, 65, 129)]


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference(cpu_isa, m, k, n, bias):
    check_against_reference(*make_inputs(m, k, n, bias=bias))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_activations_keep_their_dtype(cpu_isa, dtype):
    check_against_reference(*make_inputs(5, 96, 24, dtype=dtype))


def test_leading_dimensions(cpu_isa):
    check_against_reference(*make_inputs(3, 40, 12, lead=(2,)))


def test_integer_accumulation_is_exact(cpu_isa):
    # Integer x with a 127 in every row quantizes to itself with scale 1, so
    # with w_scale 1 the float32 output is the exact integer dot product
    # (|sum| < 2^24 for K <= 1024). Rows of -128 weights hit the saturation
    # traps of u8 x s8 instructions.
    g = torch.Generator().manual_seed(1)
    for m, k, n in [(1, 1024, 9), (6, 333, 10), (9, 64, 7)]:
        x = torch.randint(-127, 128, (m, k), generator=g).float()
        x[:, 0] = 127
        x[0, :] = -127
        x[0, 0] = 127
        w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
        w[0] = -128
        w[1, ::2] = 127
        y = op(x, w, torch.ones(n), None)
        exact = ref.int8_matmul(x.numpy().astype(np.int8), w.numpy())
        np.testing.assert_array_equal(y.numpy().astype(np.int64), exact)


SUPPORTED_ISAS = [isa for isa in ("scalar", "avx2", "avx512_vnni") if slimops._C.cpu_supports(isa)]


@contextlib.contextmanager
def using_isa(isa):
    previous = slimops.cpu_isa()
    slimops.set_cpu_isa(isa)
    try:
        yield
    finally:
        slimops.set_cpu_isa(previous)


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(0, 20),
    k=st.integers(0, 300),
    n=st.integers(1, 70),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_hypothesis_shapes(m, k, n, bias, seed):
    inputs = make_inputs(m, k, n, bias=bias, seed=seed)
    for isa in SUPPORTED_ISAS:
        with using_isa(isa):
            check_against_reference(*inputs)


def test_largest_k_is_exact(cpu_isa):
    # At K = 2^17 the VNNI kernel's flipped partial sums pass INT32_MAX; only
    # the final difference fits. Both the M=1 and the tiled paths.
    k = slimops._C.int8_linear_max_k
    x = torch.full((2, k), 127.0)
    x[1, ::3] = -127.0
    w = torch.full((3, k), 127, dtype=torch.int8)
    w[1] = -128
    for rows in (x[:1], x):
        check_against_reference(rows, w, torch.ones(3), None)


@pytest.mark.parametrize("m", [1, 19])
def test_every_isa_gives_the_same_bits(m):
    x, w, s, b = make_inputs(m, 203, 45)
    outs = {}
    previous = slimops.cpu_isa()
    try:
        for isa in ("scalar", "avx2", "avx512_vnni"):
            if slimops._C.cpu_supports(isa):
                slimops.set_cpu_isa(isa)
                outs[isa] = op(x, w, s, b)
    finally:
        slimops.set_cpu_isa(previous)
    first = next(iter(outs.values()))
    for isa, y in outs.items():
        assert torch.equal(y, first), isa


THREAD_BACKENDS = ["pool"] + (["openmp"] if slimops._C.thread_backend() == "openmp" else [])


@pytest.fixture(params=THREAD_BACKENDS)
def thread_backend(request):
    slimops._C.set_thread_backend(request.param)
    yield request.param
    slimops._C.set_thread_backend("auto")


@pytest.mark.parametrize("m", [1, 70])
def test_thread_count_does_not_change_results(thread_backend, m):
    x, w, s, b = make_inputs(m, 256, 1200)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = op(x, w, s, b)
        torch.set_num_threads(max(3, previous))
        many = op(x, w, s, b)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one, many)


def test_concurrent_callers(thread_backend):
    inputs = [make_inputs(33, 128, 300, seed=i) for i in range(4)]
    expected = [op(*args) for args in inputs]
    failures = []

    def call(i):
        for _ in range(10):
            if not torch.equal(op(*inputs[i]), expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_empty_sizes():
    x, w, s, b = make_inputs(0, 16, 8)
    assert op(x, w, s, b).shape == (0, 8)
    x, w, s, b = make_inputs(3, 16, 0, bias=False)
    assert op(x, w, s, None).shape == (3, 0)
    x, w, s, b = make_inputs(3, 0, 8)
    torch.testing.assert_close(op(x, w, s, b), b.expand(3, 8))
    torch.testing.assert_close(op(x.reshape(3, 1, 0), w, s, b), b.expand(3, 1, 8))


def test_special_rows(cpu_isa):
    x, w, s, b = make_inputs(6, 50, 7)
    x[0] = 0.0  # zero row: output is the bias
    x[1, -1] = float("nan")  # NaN row (in the SIMD tail): output row is NaN (documented)
    x[2, 4] = float("inf")  # Inf row: NaN as well
    x[3] = 1e-38  # so small that 127 / amax overflows: quantizes to zeros
    x[4, :] = torch.arange(50) - 24.5  # exact .5 ties after scaling
    x[4, 0] = 127
    y = check_against_reference(x, w, s, b)
    torch.testing.assert_close(y[0], b)
    assert torch.isnan(y[1]).all() and torch.isnan(y[2]).all()
    assert torch.isfinite(y[[0, 3, 4, 5]]).all()


def test_non_contiguous_activations(cpu_isa):
    x, w, s, b = make_inputs(24, 40, 9)
    check_against_reference(x[::3], w, s, b)
    check_against_reference(x.t().contiguous().t(), w, s, b)
    check_against_reference(x[:1].expand(5, 40), w, s, b)  # broadcast rows (stride 0)
    check_against_reference(x.as_strided((6, 40), (20, 1)), w, s, b)  # overlapping rows


def test_fallback_matches_reference():
    x, w, s, b = make_inputs(7, 90, 13)
    expected, mag = reference_and_magnitude(x, w, s, b)
    assert_within_roundoff(fallback.int8_linear(x, w, s, b), expected, mag, torch.float32)


@pytest.mark.parametrize("shape", [(1, 64), (5, 37), (3, 2, 130), (4, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_quantize_per_token_matches_reference_exactly(cpu_isa, shape, dtype):
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 3).to(dtype)
    if x.numel():
        rows = x.view(-1, shape[-1])
        rows[0, 0] = float("nan")
        rows[-1, -1] = float("inf")  # in the SIMD tail for K = 37 and 130
    q, scale = quant_op(x)
    q_ref, s_ref = ref.quantize_per_token(to_numpy(x))
    np.testing.assert_array_equal(q.numpy(), q_ref)
    np.testing.assert_array_equal(scale.numpy(), s_ref)
    fq, fs = fallback.quantize_per_token(x)
    np.testing.assert_array_equal(fq.numpy(), q_ref)
    np.testing.assert_array_equal(fs.numpy(), s_ref)


def test_quantize_per_token_never_emits_minus_128(cpu_isa):
    x = torch.randn(8, 1000) * 1e4
    q, _ = quant_op(x)
    assert int(q.min()) >= -127 and int(q.max()) <= 127


def test_straight_through_gradient():
    x, w, s, b = make_inputs(4, 32, 6)
    x.requires_grad_(True)
    b.requires_grad_(True)
    op(x, w, s, b).square().sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    b2 = b.detach().clone().requires_grad_(True)
    # Same upstream gradient through the dequantized weight.
    y = op(x.detach(), w, s, b.detach())
    torch.nn.functional.linear(x2, w.float() * s[:, None], b2).backward(2 * y)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(b.grad, b2.grad)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_int8_linear(requires_grad):
    x, w, s, b = make_inputs(3, 48, 16)
    x.requires_grad_(requires_grad)
    torch.library.opcheck(op.default, (x, w, s, b))
    torch.library.opcheck(op.default, (x.detach(), w, s, None))


def test_opcheck_quantize_per_token():
    torch.library.opcheck(quant_op.default, (torch.randn(5, 33),))


def test_torch_compile_fullgraph():
    x, w, s, b = make_inputs(4, 64, 32)
    f = torch.compile(lambda x: op(x, w, s, b) * 2, fullgraph=True)
    torch.testing.assert_close(f(x), op(x, w, s, b) * 2)


# ---- bad input: a clear Python exception, nothing lost, no crash -----------
def bad(**overrides):
    x, w, s, b = make_inputs(2, 16, 8)
    args = dict(x=x, w=w, s=s, b=b)
    args.update(overrides)
    return args["x"], args["w"], args["s"], args["b"]


@pytest.mark.parametrize(
    "overrides,exc,match",
    [
        (dict(x=torch.randn(2, 16, dtype=torch.float64)), TypeError, "float32, float16 or bfloat16"),
        (dict(x=torch.ones(2, 16, dtype=torch.int32)), TypeError, "float32"),
        (dict(x=torch.randn(2, 15)), ValueError, "features"),
        (dict(x=torch.tensor(1.0)), ValueError, "scalar"),
        (dict(w=torch.randn(8, 16)), TypeError, "int8"),
        (dict(w=torch.zeros(8, 16, dtype=torch.uint8)), TypeError, "int8"),
        (dict(w=torch.zeros(16, 8, dtype=torch.int8).t()), ValueError, "contiguous"),
        (dict(w=torch.zeros(8, 16, 1, dtype=torch.int8)), TypeError, r"\[N, K\]"),
        (dict(s=torch.ones(7)), ValueError, "w_scale"),
        (dict(s=torch.ones(8, dtype=torch.float16)), ValueError, "w_scale"),
        (dict(b=torch.ones(9)), ValueError, "bias"),
        (dict(b=torch.ones(8, dtype=torch.int32)), ValueError, "bias"),
        (dict(w=torch.zeros(8, 16, dtype=torch.int8, device="meta")), ValueError, "meta"),
        (dict(s=torch.ones(8, device="meta")), ValueError, "w_scale is on meta"),
        (dict(b=torch.ones(8, device="meta")), ValueError, "bias is on meta"),
        (dict(x=torch.randn(2, 16, device="meta")), ValueError, "is on cpu but x is on meta"),
        (dict(x=torch.randn(2, 16).to_sparse()), TypeError, "x must be a dense"),
        (dict(w=torch.ones(8, 16, dtype=torch.int8).to_sparse()), TypeError, "w_int8 must be a dense"),
        (dict(s=torch.ones(8).to_sparse()), TypeError, "w_scale must be a dense"),
        (dict(b=torch.ones(8).to_sparse()), TypeError, "bias must be a dense"),
    ],
)
def test_bad_inputs(overrides, exc, match):
    with pytest.raises(exc, match=match):
        op(*bad(**overrides))


def test_k_beyond_exact_int32_range_is_refused():
    k = slimops._C.int8_linear_max_k + 1
    with pytest.raises(ValueError, match="overflow"):
        op(torch.zeros(1, k), torch.zeros(1, k, dtype=torch.int8), torch.ones(1), None)


def test_native_entry_refuses_bad_sizes():
    # The last line of defence below the Python checks.
    with pytest.raises(ValueError, match="negative"):
        slimops._C.int8_linear_cpu(0, -1, 4, 4, 0.0, 0, 4, 0, 0, 0, 1)
    with pytest.raises(ValueError, match="larger"):
        slimops._C.int8_linear_cpu(0, 1, slimops._C.int8_linear_max_k + 1, 1 << 20, 0.0, 0, 1, 0, 0, 0, 1)
    with pytest.raises(ValueError, match="null"):
        slimops._C.int8_linear_cpu(0, 1, 4, 4, 0.0, 0, 4, 0, 0, 0, 1)


def run_python(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env)


def test_isa_environment_variable():
    forced = run_python("import slimops; print(slimops.cpu_isa())", SLIMOPS_CPU_ISA="scalar")
    assert forced.returncode == 0 and forced.stdout.strip() == "scalar", forced.stderr
    bogus = run_python("import slimops", SLIMOPS_CPU_ISA="sse9")
    assert bogus.returncode != 0 and "SLIMOPS_CPU_ISA" in bogus.stderr


def test_set_cpu_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown CPU ISA"):
        slimops.set_cpu_isa("neon")


@pytest.mark.parametrize(
    "x,exc,match",
    [
        (torch.ones(2, 3, dtype=torch.int32), TypeError, "float32"),
        (torch.ones(2, 3, dtype=torch.float64), TypeError, "float32"),
        (torch.tensor(1.0), ValueError, "scalar"),
        (torch.ones(2, 3).to_sparse(), TypeError, "dense"),
    ],
)
def test_quantize_per_token_bad_inputs(x, exc, match):
    with pytest.raises(exc, match=match):
        quant_op(x)


def test_quantize_per_token_empty_and_strided(cpu_isa):
    q, scale = quant_op(torch.ones(0, 5))
    assert q.shape == (0, 5) and q.dtype == torch.int8
    assert scale.shape == (0,) and scale.dtype == torch.float32
    q, scale = quant_op(torch.ones(2, 3, 0))
    assert q.shape == (2, 3, 0) and scale.shape == (2, 3) and not scale.any()
    x = torch.randn(1, 37).expand(4, 37)  # broadcast rows
    q, scale = quant_op(x)
    q_ref, s_ref = ref.quantize_per_token(x.numpy())
    np.testing.assert_array_equal(q.numpy(), q_ref)
    np.testing.assert_array_equal(scale.numpy(), s_ref)


def test_quantize_per_token_torch_compile_fullgraph():
    x = torch.randn(6, 70)
    f = torch.compile(lambda x: quant_op(x), fullgraph=True)
    q, scale = f(x)
    q_ref, s_ref = quant_op(x)
    assert torch.equal(q, q_ref) and torch.equal(scale, s_ref)


# ---- static activation scale ---------------------------------------------------
def check_static_against_reference(x, w, s, b, x_scale):
    y = op(x, w, s, b, x_scale)
    xn, sv = to_numpy(x), float(x_scale)
    expected = ref.int8_linear(xn, w.numpy(), s.numpy(), None if b is None else b.numpy(), static_x_scale=sv)
    q, _ = ref.quantize_per_token(xn, sv)
    mag = np.abs(q.astype(np.float64)) @ np.abs(w.numpy().astype(np.float64)).T * sv * s.numpy().astype(np.float64)
    if b is not None:
        mag = mag + np.abs(b.numpy()).astype(np.float64)
    assert_within_roundoff(y, expected, mag, x.dtype)
    return y


def test_static_scale_matches_reference(cpu_isa):
    x, w, s, b = make_inputs(9, 130, 21)
    x[2, 5] = float("nan")  # still a NaN row
    x_scale = torch.tensor([0.01])  # values past 1.27 clamp to +-127
    y = check_static_against_reference(x, w, s, b, x_scale)
    assert torch.isnan(y[2]).all()
    np.testing.assert_array_equal(
        fallback.quantize_per_token(x, x_scale)[0].numpy(), ref.quantize_per_token(x.numpy(), 0.01)[0]
    )


def test_static_scale_of_one_is_exact_on_integers(cpu_isa):
    g = torch.Generator().manual_seed(5)
    x = torch.randint(-127, 128, (4, 300), generator=g).float()
    w = torch.randint(-128, 128, (7, 300), dtype=torch.int8, generator=g)
    y = op(x, w, torch.ones(7), None, torch.ones(()))
    np.testing.assert_array_equal(y.numpy().astype(np.int64), ref.int8_matmul(x.numpy().astype(np.int8), w.numpy()))


def test_static_scale_fallback_opcheck_compile_and_gradient():
    x, w, s, b = make_inputs(5, 48, 16)
    x_scale = torch.tensor(0.02)
    expected = op(x, w, s, b, x_scale)
    torch.testing.assert_close(fallback.int8_linear(x, w, s, b, x_scale), expected)
    torch.library.opcheck(op.default, (x.requires_grad_(True), w, s, b, x_scale))
    f = torch.compile(lambda x: op(x, w, s, b, x_scale), fullgraph=True)
    torch.testing.assert_close(f(x.detach()), expected)
    op(x, w, s, b, x_scale).sum().backward()
    torch.testing.assert_close(x.grad, (w.float() * s[:, None]).sum(0).expand(5, 48))


@pytest.mark.parametrize(
    "x_scale,match",
    [
        (torch.tensor(0.0), "positive and finite"),
        (torch.tensor(-1.0), "positive and finite"),
        (torch.tensor(float("nan")), "positive and finite"),
        (torch.tensor(float("inf")), "positive and finite"),
        (torch.tensor(1e-45), "positive and finite"),  # 1 / scale overflows
        (torch.tensor([0.1, 0.2]), "one float32 value"),
        (torch.tensor(0.1, dtype=torch.float64), "one float32 value"),
        (torch.tensor(0.1, device="meta"), "x_scale is on meta"),
    ],
)
def test_bad_static_scales(x_scale, match):
    x, w, s, b = make_inputs(2, 16, 8)
    with pytest.raises(ValueError, match=match):
        op(x, w, s, b, x_scale)


def test_native_entry_refuses_bad_static_scales():
    x, w, s, _ = make_inputs(1, 8, 2)
    y = torch.empty(1, 2)
    for bad_scale in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="static activation scale"):
            slimops._C.int8_linear_cpu(x.data_ptr(), 1, 8, 8, bad_scale, w.data_ptr(), 2, s.data_ptr(), 0,
                                       y.data_ptr(), 1)


def test_fallback_refuses_bad_static_scales_too():
    x, w, s, b = make_inputs(2, 16, 8)
    with pytest.raises(ValueError, match="positive and finite"):
        fallback.int8_linear(x, w, s, b, torch.tensor(-1.0))


def test_static_scales_on_cuda_wait_for_the_gpu_check():
    from slimops.backends import cuda, registry

    x, w, s, b = make_inputs(2, 16, 8)
    if cuda.HAS_TRITON:
        assert "cuda_triton_static" in cuda.int8_linear_declines(x, w, s, b, torch.tensor(0.1))
    static = next(k for k in registry._KERNELS["int8_linear"] if k.name == "cuda_triton_static")
    assert not static.verified
