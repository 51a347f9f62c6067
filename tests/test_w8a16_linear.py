"""torch.ops.slimops.w8a16_linear on the CPU, every ISA path, against slimops.reference."""

import numpy as np
import pytest
import torch

import slimops
from slimops import reference as ref
from slimops.backends import fallback

from conftest import (
    ABS_FLOOR,
    ROUNDOFF,
    W8A16_FP32_ROUNDINGS_PLUS_LANE_STEPS,
    assert_within_bound,
    outputs_on_every_isa,
    to_numpy,
)

op = torch.ops.slimops.w8a16_linear
LANES = slimops._C.w8a16_linear_lanes


def make_inputs(m, k, n, *, dtype=torch.float32, bias=True, seed=0, lead=()):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, m, k, generator=g).to(dtype)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    w_scale = torch.rand(n, generator=g) * 0.01 + 1e-4
    b = torch.randn(n, generator=g) if bias else None
    return x, w, w_scale, b


def check_against_reference(x, w, w_scale, b):
    """Float32 error bound of the documented order: each term passes through
    ceil(K / LANES) lane steps plus W8A16_FP32_ROUNDINGS_PLUS_LANE_STEPS more
    roundings, then one in the output dtype."""
    y = op(x, w, w_scale, b)
    assert y.dtype == x.dtype and y.shape == (*x.shape[:-1], w.shape[0])
    xn, wn, sn = to_numpy(x), w.numpy(), w_scale.numpy()
    bn = None if b is None else to_numpy(b)
    expected = ref.w8a16_linear(xn, wn, sn, bn)
    mag = np.abs(ref.w8a16_linear(np.abs(xn), np.abs(wn), np.abs(sn), None if bn is None else np.abs(bn)))
    mag = np.where(np.isnan(mag), 0.0, mag)
    steps = -(-w.shape[1] // LANES) + W8A16_FP32_ROUNDINGS_PLUS_LANE_STEPS
    bound = (steps * ROUNDOFF[torch.float32] + ROUNDOFF[x.dtype]) * mag + ABS_FLOOR[x.dtype]
    assert_within_bound(y, expected, bound)
    return y


SHAPES = [(0, 16, 4), (1, 64, 4), (1, 4096, 256), (3, 37, 5), (17, 100, 33), (130, 129, 67), (4, 1, 1), (2, 65, 129)]


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference(cpu_isa, m, k, n, bias):
    check_against_reference(*make_inputs(m, k, n, bias=bias))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 17])
def test_half_activations_keep_their_dtype(cpu_isa, dtype, m):
    check_against_reference(*make_inputs(m, 96, 24, dtype=dtype))


def test_leading_dimensions(cpu_isa):
    check_against_reference(*make_inputs(3, 40, 12, lead=(2,)))
    check_against_reference(*make_inputs(1, 40, 12, lead=(2, 2)))


def test_strided_activations(cpu_isa):
    x, w, s, b = make_inputs(24, 70, 9)
    check_against_reference(x[::3], w, s, b)
    check_against_reference(x[:, :70], w, s, b)
    check_against_reference(x.t().contiguous().t(), w, s, b)
    check_against_reference(x[:1].expand(5, 70), w, s, b)  # broadcast rows (stride 0)
    wide = torch.randn(6, 100)
    check_against_reference(wide[:, 10:80], w, s, b)  # row stride 100 > K


def test_integer_products_are_exact(cpu_isa):
    # Integer x and w with w_scale 1: every partial sum stays an integer below
    # 2^24, so the float32 result is the exact integer dot product; -128 included.
    g = torch.Generator().manual_seed(1)
    for m, k, n in [(1, 1000, 9), (6, 333, 10)]:
        x = torch.randint(-128, 128, (m, k), generator=g).float()
        w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
        w[0] = -128
        y = op(x, w, torch.ones(n), None)
        exact = x.numpy().astype(np.int64) @ w.numpy().astype(np.int64).T
        np.testing.assert_array_equal(y.numpy().astype(np.int64), exact)


def test_nan_and_inf_rows_propagate(cpu_isa):
    # As in a float layer: NaN poisons its row; Inf gives +-Inf where the
    # weight is nonzero, and NaN where it meets a zero weight or another Inf
    # of the opposite product sign.
    x, w, s, b = make_inputs(5, 70, 7)
    w[3, 66] = 0
    w[4, 5] = 1
    w[4, 6] = -1
    x[1, 69] = float("nan")  # in the padded tail block
    x[2, 3] = float("inf")
    x[3, 66] = float("inf")  # Inf times a zero weight: NaN in column 3
    x[4, 5] = float("inf")  # +Inf and -Inf terms in column 4: NaN
    x[4, 6] = float("inf")
    y = op(x, w, s, b)
    expected = torch.nn.functional.linear(x.double(), w.double() * s.double()[:, None], b.double())
    assert torch.equal(torch.isnan(y), torch.isnan(expected))
    finite = torch.isfinite(expected)
    assert torch.equal(torch.isfinite(y), finite)
    assert torch.equal(y[~finite & ~torch.isnan(y)], expected[~finite & ~torch.isnan(expected)].float())
    assert torch.isnan(y[1]).all() and torch.isnan(y[3, 3]) and torch.isnan(y[4, 4]) and not torch.isnan(y[2]).any()
    check_against_reference(x[[0]], w, s, b)


def run_on_every_isa(*args):
    return outputs_on_every_isa(lambda: op(*args))


@pytest.mark.parametrize("m,k,n", [(1, 203, 45), (2, 64, 9), (3, 1000, 17), (19, 203, 45), (130, 129, 67)])
def test_every_isa_gives_the_same_bits(m, k, n):
    x, w, s, b = make_inputs(m, k, n)
    x[0, 0] = 1e30  # large cancellations make any change of order visible
    x[-1, -1] = -1e30
    outs = run_on_every_isa(x, w, s, b)
    first = next(iter(outs.values()))
    for isa, y in outs.items():
        assert torch.equal(y.view(torch.int32), first.view(torch.int32)), isa


THREAD_BACKENDS = ["pool"] + (["openmp"] if slimops._C.thread_backend() == "openmp" else [])


@pytest.fixture(params=THREAD_BACKENDS)
def thread_backend(request):
    slimops._C.set_thread_backend(request.param)
    yield request.param
    slimops._C.set_thread_backend("auto")


@pytest.mark.parametrize("m", [1, 3, 70])
def test_thread_count_does_not_change_results(cpu_isa, thread_backend, m):
    x, w, s, b = make_inputs(m, 256, 1200)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = op(x, w, s, b)
        torch.set_num_threads(max(3, previous))
        many = op(x, w, s, b)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one.view(torch.int32), many.view(torch.int32))


def test_empty_sizes():
    x, w, s, b = make_inputs(0, 16, 8)
    assert op(x, w, s, b).shape == (0, 8)
    x, w, s, b = make_inputs(3, 16, 0, bias=False)
    assert op(x, w, s, None).shape == (3, 0)
    x, w, s, b = make_inputs(3, 0, 8)
    torch.testing.assert_close(op(x, w, s, b), b.expand(3, 8))
    torch.testing.assert_close(op(x.reshape(3, 1, 0), w, s, b), b.expand(3, 1, 8))
    assert not op(x, w, s, None).any()


def test_fallback_matches_reference():
    for dtype in (torch.float32, torch.bfloat16):
        x, w, s, b = make_inputs(7, 90, 13, dtype=dtype)
        expected = op(x, w, s, b)
        torch.testing.assert_close(fallback.w8a16_linear(x, w, s, b), expected)


def test_gradient():
    x, w, s, b = make_inputs(4, 32, 6)
    x.requires_grad_(True)
    b.requires_grad_(True)
    op(x, w, s, b).square().sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    b2 = b.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(x2, w.float() * s[:, None], b2).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(b.grad, b2.grad)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    x, w, s, b = make_inputs(3, 48, 16)
    x.requires_grad_(requires_grad)
    torch.library.opcheck(op.default, (x, w, s, b))
    torch.library.opcheck(op.default, (x.detach(), w, s, None))


def test_torch_compile_fullgraph():
    x, w, s, b = make_inputs(4, 64, 32)
    f = torch.compile(lambda x: op(x, w, s, b) * 2, fullgraph=True)
    torch.testing.assert_close(f(x), op(x, w, s, b) * 2)


# ---- bad input: a clear Python exception, no crash ---------------------------
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


def test_native_entry_refuses_bad_sizes():
    # The last line of defence below the Python checks.
    with pytest.raises(ValueError, match="negative"):
        slimops._C.w8a16_linear_cpu(0, -1, 4, 4, 0, 4, 0, 0, 0, 1)
    with pytest.raises(ValueError, match="larger"):
        slimops._C.w8a16_linear_cpu(0, 1, 1 << 41, 1 << 41, 0, 1, 0, 0, 0, 1)
    with pytest.raises(ValueError, match="stride"):
        slimops._C.w8a16_linear_cpu(0, 2, 8, 4, 0, 1, 0, 0, 0, 1)
    with pytest.raises(ValueError, match="null"):
        slimops._C.w8a16_linear_cpu(0, 1, 4, 4, 0, 4, 0, 0, 0, 1)
