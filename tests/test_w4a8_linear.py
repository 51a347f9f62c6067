"""torch.ops.slimops.w4a8_linear on the CPU, every ISA path, against slimops.reference."""

import numpy as np
import pytest
import torch

import slimops
from slimops import reference as ref
from slimops.backends import fallback
from slimops.reference.w4a8_linear import w4a8_group_sums

from conftest import (
    ABS_FLOOR,
    ROUNDOFF,
    W4A8_FP32_ROUNDINGS_PLUS_GROUPS,
    assert_every_isa_agrees,
    assert_within_bound,
    to_numpy,
)

op = torch.ops.slimops.w4a8_linear


def make_inputs(m, k, n, group_size=128, *, symmetric=True, dtype=torch.float32, bias=True, seed=0, lead=()):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    qw = slimops.quantize(w, bits=4, group_size=group_size, symmetric=symmetric)
    x = torch.randn(*lead, m, k, generator=g).to(dtype)
    b = torch.randn(n, generator=g) if bias else None
    return x, qw.qdata, qw.scale, qw.zero_point, group_size, b


def numpy_args(x, wp, s, z, g, b):
    return (to_numpy(x), wp.numpy(), s.numpy(), None if z is None else z.numpy(), g, None if b is None else to_numpy(b))


def reference_and_bound(x, wp, s, z, g, b, dtype):
    xn, wn, sn, zn, g, bn = numpy_args(x, wp, s, z, g, b)
    expected = ref.w4a8_linear(xn, wn, sn, zn, g, bn)
    q, xs = ref.quantize_per_token(xn)
    d = w4a8_group_sums(q, wn, xn.shape[-1], zn, g).astype(np.float64)
    mag = np.abs(d * sn.astype(np.float64)).sum(axis=-1) * np.abs(xs[..., None].astype(np.float64))
    if bn is not None:
        mag = mag + np.abs(bn).astype(np.float64)
    groups = sn.shape[1]
    rounds = (W4A8_FP32_ROUNDINGS_PLUS_GROUPS + groups) * ROUNDOFF[torch.float32] + ROUNDOFF[dtype]
    return expected, rounds * mag + ABS_FLOOR[dtype]


def check_against_reference(x, wp, s, z, g, b):
    y = op(x, wp, s, z, g, b)
    assert y.dtype == x.dtype and y.shape == (*x.shape[:-1], wp.shape[0])
    expected, bound = reference_and_bound(x, wp, s, z, g, b, x.dtype)
    assert_within_bound(y, expected, bound)
    return y


@pytest.mark.parametrize("m", [0, 1, 3, 17])
@pytest.mark.parametrize("group_size", [32, 64, 128, -1])
@pytest.mark.parametrize("symmetric", [True, False])
def test_matches_reference(cpu_isa, m, group_size, symmetric):
    check_against_reference(*make_inputs(m, 256, 37, group_size, symmetric=symmetric, seed=m))


@pytest.mark.parametrize("k,group_size", [(37, -1), (129, -1), (1, -1), (48, 16), (96, 96), (320, 32), (4096, 128)])
@pytest.mark.parametrize("bias", [True, False])
def test_odd_shapes(cpu_isa, k, group_size, bias):
    # Odd K (padding nibble, masked tails), group sizes the SIMD paths hand to
    # the scalar tile (16), groups straddling 128-K blocks (96, 320 / 32).
    for m, n in [(1, 19), (5, 33)]:
        check_against_reference(*make_inputs(m, k, n, group_size, symmetric=k % 2 == 0, bias=bias))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_activations_keep_their_dtype(cpu_isa, dtype):
    check_against_reference(*make_inputs(5, 128, 24, 32, dtype=dtype))


def test_leading_dimensions(cpu_isa):
    check_against_reference(*make_inputs(3, 64, 12, 32, lead=(2,)))


def test_integer_part_is_exact(cpu_isa):
    # Integer x with a 127 in every row quantizes to itself with scale 1; with
    # unit scales the output is the exact sum of the group sums (< 2^24).
    g = torch.Generator().manual_seed(3)
    m, k, n = 6, 512, 21
    x = torch.randint(-127, 128, (m, k), generator=g).float()
    x[:, 0] = 127
    u = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    u[0] = 15
    u[1] = 0
    wp = slimops.quantization.pack_int4(u, symmetric=False)
    z = torch.randint(0, 16, (n, 4), generator=g, dtype=torch.int32)
    y = op(x, wp, torch.ones(n, 4), z, 128)
    exact = w4a8_group_sums(x.numpy().astype(np.int8), wp.numpy(), k, z.numpy(), 128).sum(axis=-1)
    np.testing.assert_array_equal(y.numpy().astype(np.int64), exact)


def test_special_rows(cpu_isa):
    x, wp, s, z, g, b = make_inputs(5, 128, 7, 64)
    x[0] = 0.0  # zero row: output is the bias
    x[1, -1] = float("nan")  # NaN row: output row is NaN (documented, like int8_linear)
    x[2, 4] = float("inf")  # Inf row: NaN as well
    x[3] = 1e-38  # 127 / amax overflows: quantizes to zeros
    y = check_against_reference(x, wp, s, z, g, b)
    torch.testing.assert_close(y[0], b)
    assert torch.isnan(y[1]).all() and torch.isnan(y[2]).all()
    assert torch.isfinite(y[[0, 3, 4]]).all()


def test_non_contiguous_activations(cpu_isa):
    x, wp, s, z, g, b = make_inputs(24, 64, 9, 32)
    check_against_reference(x[::3], wp, s, z, g, b)
    check_against_reference(x.t().contiguous().t(), wp, s, z, g, b)
    check_against_reference(x[:1].expand(5, 64), wp, s, z, g, b)


@pytest.mark.parametrize("m", [1, 19])
@pytest.mark.parametrize("group_size,symmetric", [(128, True), (32, False), (-1, False)])
def test_every_isa_gives_the_same_bits(m, group_size, symmetric):
    args = make_inputs(m, 384, 45, group_size, symmetric=symmetric)
    assert_every_isa_agrees(lambda: op(*args))


@pytest.mark.parametrize("m", [1, 40])
def test_thread_count_does_not_change_results(cpu_isa, m):
    args = make_inputs(m, 512, 1200, 128, symmetric=False)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = op(*args)
        torch.set_num_threads(max(3, previous))
        many = op(*args)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one, many)


def test_empty_sizes():
    x, wp, s, z, g, b = make_inputs(3, 64, 0, 32, bias=False)
    assert op(x, wp, s, z, g, None).shape == (3, 0)
    x, wp, s, z, g, b = make_inputs(3, 0, 8, -1)
    torch.testing.assert_close(op(x, wp, s, z, g, b), b.expand(3, 8))


@pytest.mark.parametrize("symmetric", [True, False])
def test_fallback_matches_reference(symmetric):
    args = make_inputs(7, 96, 13, 32, symmetric=symmetric)
    expected, bound = reference_and_bound(*args, torch.float32)
    assert_within_bound(fallback.w4a8_linear(*args), expected, bound)


def test_opcheck():
    torch.library.opcheck(op.default, make_inputs(3, 64, 16, 32))
    torch.library.opcheck(op.default, make_inputs(2, 64, 16, -1, symmetric=False, bias=False))


def test_torch_compile_fullgraph():
    x, wp, s, z, g, b = make_inputs(4, 128, 32, 64, symmetric=False)
    f = torch.compile(lambda x: op(x, wp, s, z, g, b) * 2, fullgraph=True)
    torch.testing.assert_close(f(x), op(x, wp, s, z, g, b) * 2)


# ---- bad input: a clear Python exception, nothing lost, no crash -----------
def bad(**overrides):
    x, wp, s, z, g, b = make_inputs(2, 64, 8, 32, symmetric=False)
    args = dict(x=x, wp=wp, s=s, z=z, g=g, b=b)
    args.update(overrides)
    return args["x"], args["wp"], args["s"], args["z"], args["g"], args["b"]


@pytest.mark.parametrize(
    "overrides,exc,match",
    [
        (dict(x=torch.randn(2, 64, dtype=torch.float64)), TypeError, "float32, float16 or bfloat16"),
        (dict(x=torch.randn(2, 62)), ValueError, "ceil"),
        (dict(x=torch.tensor(1.0)), ValueError, "scalar"),
        (dict(wp=torch.zeros(8, 32, dtype=torch.int8)), TypeError, "uint8"),
        (dict(wp=torch.zeros(8, 32, 1, dtype=torch.uint8)), TypeError, "uint8"),
        (dict(wp=torch.zeros(32, 8, dtype=torch.uint8).t()), ValueError, "contiguous"),
        (dict(g=48), ValueError, "group_size=48 does not divide K=64"),
        (dict(g=0), ValueError, "group_size=0 does not divide K=64"),
        (dict(g=-2), ValueError, "group_size=-2"),
        (dict(g=64), ValueError, r"w_scale must be float32 \[N=8, G=1\]"),
        (dict(s=torch.ones(16)), ValueError, "w_scale"),
        (dict(s=torch.ones(8, 2, dtype=torch.float16)), ValueError, "w_scale"),
        (dict(z=torch.zeros(8, 2, dtype=torch.int64)), ValueError, "w_zero_point"),
        (dict(z=torch.zeros(8, 3, dtype=torch.int32)), ValueError, "w_zero_point"),
        (dict(b=torch.ones(9)), ValueError, "bias"),
        (dict(b=torch.ones(8, dtype=torch.int32)), ValueError, "bias"),
        (dict(wp=torch.zeros(8, 32, dtype=torch.uint8, device="meta")), ValueError, "w_packed is on meta"),
        (dict(s=torch.ones(8, 2, device="meta")), ValueError, "w_scale is on meta"),
        (dict(z=torch.zeros(8, 2, dtype=torch.int32, device="meta")), ValueError, "w_zero_point is on meta"),
        (dict(x=torch.randn(2, 64).to_sparse()), TypeError, "x must be a dense"),
        (dict(wp=torch.ones(8, 32, dtype=torch.uint8).to_sparse()), TypeError, "w_packed must be a dense"),
        (dict(s=torch.ones(8, 2).to_sparse()), TypeError, "w_scale must be a dense"),
        (dict(z=torch.ones(8, 2, dtype=torch.int32).to_sparse()), TypeError, "w_zero_point must be a dense"),
    ],
)
def test_bad_inputs(overrides, exc, match):
    with pytest.raises(exc, match=match):
        op(*bad(**overrides))


@pytest.mark.parametrize("value", [16, -1, 1 << 30])
@pytest.mark.parametrize("m", [1, 4])
def test_corrupted_zero_points_are_refused(cpu_isa, value, m):
    x, wp, s, z, g, b = bad()
    z = z.clone()
    z[5, 1] = value
    with pytest.raises(ValueError, match="zero point"):
        op(x[:1].expand(m, -1), wp, s, z, g, b)
    with pytest.raises(ValueError, match="zero point"):
        fallback.w4a8_linear(x, wp, s, z, g, b)


def test_k_beyond_exact_int32_range_is_refused():
    k = slimops._C.w4a8_linear_max_k + 2
    with pytest.raises(ValueError, match="overflow"):
        op(torch.zeros(1, k), torch.zeros(1, k // 2, dtype=torch.uint8), torch.ones(1, 1), None, -1)


def test_native_entry_refuses_bad_sizes():
    with pytest.raises(ValueError, match="negative"):
        slimops._C.w4a8_linear_cpu(0, -1, 4, 4, 0, 4, 0, 0, -1, 0, 0, 1)
    with pytest.raises(ValueError, match="larger"):
        slimops._C.w4a8_linear_cpu(0, 1, 64, 64, 0, 1, 0, 0, 48, 0, 0, 1)
    with pytest.raises(ValueError, match="null"):
        slimops._C.w4a8_linear_cpu(0, 1, 4, 4, 0, 4, 0, 0, -1, 0, 0, 1)
