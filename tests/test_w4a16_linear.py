"""torch.ops.slimops.w4a16_linear (4-bit group-wise weights, float activations)
on the CPU: its own kernel at small M and the bf16-dequantize + bf16 GEMM path
at large M, every ISA path, against slimops.reference (the Triton kernel is
tested in tests/test_triton_w4a16_linear.py)."""

import math

import numpy as np
import pytest
import torch

import slimops
from slimops import reference as ref
from slimops.backends import cpu, fallback

from conftest import (
    ABS_FLOOR,
    ROUNDOFF,
    assert_within_bound,
    assert_every_isa_agrees,
    outputs_on_one_and_many_threads,
    to_numpy,
)

op = torch.ops.slimops.w4a16_linear
GEMM_ROWS = cpu.W4A16_GEMM_MIN_ROWS


def make_inputs(m, k, n, *, group_size=32, symmetric=True, dtype=torch.float32, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    qw = slimops.quantize(torch.randn(n, k, generator=g) * 0.05, bits=4, group_size=group_size, symmetric=symmetric)
    x = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(n, generator=g) if bias else None
    return x, qw.qdata, qw.scale, qw.zero_point, group_size, b


def reference_and_bound(x, w, s, z, group_size, b, *, bf16):
    """The float64 reference and an error bound: float32 roundings of a K-term
    sum (products exact on the CPU's bf16 operands; one rounding per term and
    partial sum otherwise), one bf16 rounding of the sum when the CPU's bf16
    GEMM computes it, then the output cast."""
    k = x.shape[-1]
    rows = math.prod(x.shape[:-1])
    args = [to_numpy(x), w.numpy(), s.numpy(), None if z is None else z.numpy(), group_size]
    bn = None if b is None else to_numpy(b)
    expected = ref.w4a16_linear(*args, bn, bf16=bf16)
    weight = np.abs(ref.w4a16_linear(np.eye(k, dtype=np.float32), *args[1:], bf16=bf16))  # |W|^T [K, N]
    magnitude = np.abs(to_numpy(x).astype(np.float64)) @ weight + (0 if bn is None else np.abs(bn))
    output_bf16 = bf16 and rows >= GEMM_ROWS
    per_term = (k + 8) * ROUNDOFF[torch.float32] * (1 if bf16 else 2) + (ROUNDOFF[torch.bfloat16] if output_bf16 else 0)
    return expected, (per_term + ROUNDOFF[x.dtype]) * magnitude + ABS_FLOOR[x.dtype]


def check(x, w, s, z, group_size, b):
    y = op(x, w, s, z, group_size, b)
    assert y.dtype == x.dtype and y.shape == (*x.shape[:-1], w.shape[0])
    assert_within_bound(y, *reference_and_bound(x, w, s, z, group_size, b, bf16=True))
    return y


@pytest.mark.parametrize("group_size", [32, 64, 128, -1])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("m", [0, 1, 5, GEMM_ROWS + 3])
def test_matches_reference(cpu_isa, group_size, symmetric, m):
    check(*make_inputs(m, 256, 37, group_size=group_size, symmetric=symmetric))


@pytest.mark.parametrize("k,group_size", [(37, -1), (1, -1), (31, -1), (96, 48), (80, 16), (21, 7), (4096, 128)])
@pytest.mark.parametrize("m", [1, 3, GEMM_ROWS])
def test_odd_shapes_and_group_sizes(cpu_isa, k, group_size, m):
    check(*make_inputs(m, k, 9, group_size=group_size, symmetric=False))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [3, GEMM_ROWS])
def test_half_activations(cpu_isa, dtype, m):
    check(*make_inputs(m, 64, 16, dtype=dtype))


def test_leading_dims_and_strided_activations(cpu_isa):
    x, w, s, z, g, b = make_inputs(24, 64, 9, group_size=-1)
    check(x.reshape(2, 12, 64), w, s, z, g, b)
    check(x[::3], w, s, z, g, b)
    check(x[:1].expand(5, 64), w, s, z, g, b)
    check(x.t().contiguous().t(), w, s, z, g, b)


@pytest.mark.parametrize("m", [2, GEMM_ROWS])
def test_special_rows(cpu_isa, m):
    x, w, s, z, g, b = make_inputs(m, 128, 7, group_size=64)
    x[0] = 0.0  # zero row: the output is the bias
    x[1, -1] = float("nan")  # a NaN row gives a NaN output row
    y = check(x, w, s, z, g, b)
    torch.testing.assert_close(y[0], b)
    assert torch.isnan(y[1]).all() and torch.isfinite(y[0]).all()


def test_dequantized_weight_is_the_reference_bit_for_bit(cpu_isa):
    for k, group_size, symmetric in [(256, 32, False), (384, 128, True), (37, -1, False), (96, 48, False)]:
        _, w, s, z, g, _ = make_inputs(1, k, 11, group_size=group_size, symmetric=symmetric)
        got = cpu.w4a16_dequantize_bf16(w, s, z, g, k).float().numpy()
        zn = None if z is None else z.numpy()
        want = ref.w4a16_linear(np.eye(k, dtype=np.float32), w.numpy(), s.numpy(), zn, g, bf16=True).T
        np.testing.assert_array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("m", [1, 4, 7])
@pytest.mark.parametrize("k,group_size,symmetric", [(384, 128, True), (256, 32, False), (200, -1, False)])
def test_every_isa_gives_the_same_bits(m, k, group_size, symmetric):
    args = make_inputs(m, k, 45, group_size=group_size, symmetric=symmetric)
    assert_every_isa_agrees(lambda: op(*args))


@pytest.mark.parametrize("m", [1, 6])
def test_thread_count_does_not_change_results(cpu_isa, m):
    args = make_inputs(m, 512, 1200, group_size=128, symmetric=False)
    assert torch.equal(*outputs_on_one_and_many_threads(lambda: op(*args)))


def test_empty_sizes():
    x, w, s, z, g, b = make_inputs(3, 64, 0, bias=False)
    assert op(x, w, s, z, g, None).shape == (3, 0)
    x, w, s, z, g, b = make_inputs(3, 0, 8, group_size=-1)
    torch.testing.assert_close(op(x, w, s, z, g, b), b.expand(3, 8))
    x, w, s, z, g, b = make_inputs(GEMM_ROWS, 0, 8, group_size=-1)
    torch.testing.assert_close(op(x, w, s, z, g, b), b.expand(GEMM_ROWS, 8))


@pytest.mark.parametrize("symmetric", [True, False])
def test_fallback_matches_reference(symmetric):
    args = make_inputs(5, 128, 37, symmetric=symmetric)
    expected, bound = reference_and_bound(*args, bf16=False)
    assert_within_bound(fallback.w4a16_linear(*args), expected, bound)


def test_opcheck_and_compile():
    for m in (3, GEMM_ROWS):
        args = make_inputs(m, 64, 16, symmetric=False)
        torch.library.opcheck(op.default, args)
        f = torch.compile(lambda x: op(x, *args[1:]), fullgraph=True)
        torch.testing.assert_close(f(args[0]), op(*args))


@pytest.mark.parametrize(
    "change,exc,match",
    [
        (dict(group_size=48), ValueError, "does not divide"),
        (dict(w=torch.zeros(37, 63, dtype=torch.uint8)), ValueError, "ceil"),
        (dict(w=torch.zeros(37, 64, dtype=torch.int8)), TypeError, "uint8"),
        (dict(w=torch.zeros(64, 37, dtype=torch.uint8).t()), ValueError, "contiguous"),
        (dict(s=torch.ones(37, 3)), ValueError, "w_scale"),
        (dict(z=torch.zeros(37, 4, dtype=torch.int64)), ValueError, "w_zero_point"),
        (dict(x=torch.randn(2, 128, dtype=torch.float64)), TypeError, "float32"),
        (dict(x=torch.randn(2, 128).to_sparse()), TypeError, "dense"),
        (dict(b=torch.ones(36)), ValueError, "bias"),
        (dict(s=torch.ones(37, 4, device="meta")), ValueError, "w_scale is on meta"),
    ],
)
def test_bad_inputs(change, exc, match):
    x, w, s, z, g, b = make_inputs(2, 128, 37, symmetric=False)
    args = dict(x=x, w=w, s=s, z=z, group_size=g, b=b)
    args.update(change)
    with pytest.raises(exc, match=match):
        op(args["x"], args["w"], args["s"], args["z"], args["group_size"], args["b"])


@pytest.mark.parametrize("value", [16, -1, 1 << 30])
@pytest.mark.parametrize("m", [1, 4, GEMM_ROWS])
def test_corrupted_zero_points_are_refused(cpu_isa, value, m):
    x, w, s, z, g, b = make_inputs(m, 128, 37, symmetric=False)
    z = z.clone()
    z[5, 1] = value
    with pytest.raises(ValueError, match="outside 0..15"):
        op(x, w, s, z, g, b)
    with pytest.raises(ValueError, match="outside 0..15"):
        fallback.w4a16_linear(x, w, s, z, g, b)


def test_native_entries_refuse_bad_sizes():
    with pytest.raises(ValueError, match="negative"):
        slimops._C.w4a16_linear_cpu(0, -1, 4, 4, 0, 4, 0, 0, -1, 0, 0, 1)
    with pytest.raises(ValueError, match="larger"):
        slimops._C.w4a16_linear_cpu(0, 1, 64, 64, 0, 1, 0, 0, 48, 0, 0, 1)
    with pytest.raises(ValueError, match="null"):
        slimops._C.w4a16_linear_cpu(0, 1, 4, 4, 0, 4, 0, 0, -1, 0, 0, 1)
    with pytest.raises(ValueError, match="stride"):
        slimops._C.w4a16_linear_cpu(1, 2, 8, 4, 1, 4, 1, 0, -1, 0, 1, 1)
    with pytest.raises(ValueError, match="negative"):
        slimops._C.w4a16_dequantize_bf16_cpu(0, -1, 4, 0, 0, -1, 0, 1)
    with pytest.raises(ValueError, match="larger"):
        slimops._C.w4a16_dequantize_bf16_cpu(0, 4, 64, 0, 0, 48, 0, 1)
    with pytest.raises(ValueError, match="null"):
        slimops._C.w4a16_dequantize_bf16_cpu(0, 4, 64, 0, 0, -1, 0, 1)


@pytest.mark.parametrize("name", ["w4a8_linear", "w4a16_linear"])
def test_gradients_flow_through_the_dequantized_weight(name):
    x, w, s, z, g, b = make_inputs(3, 64, 16, symmetric=False)
    x.requires_grad_(True)
    b.requires_grad_(True)
    getattr(torch.ops.slimops, name)(x, w, s, z, g, b).sum().backward()
    weight = torch.from_numpy(ref.w4a16_linear(np.eye(64, dtype=np.float32), w.numpy(), s.numpy(), z.numpy(), g)).T
    torch.testing.assert_close(x.grad, weight.float().sum(0).expand(3, 64))
    torch.testing.assert_close(b.grad, torch.full((16,), 3.0))


def test_the_gemm_path_runs_in_and_out_of_inference_mode():
    """The reusable weight buffers are made in whichever mode comes first and written in place later."""
    cpu._scratch.__dict__.clear()
    args = make_inputs(GEMM_ROWS + 1, 64, 8)
    with torch.inference_mode():
        inside = op(*args)
    assert torch.equal(op(*args), inside)
