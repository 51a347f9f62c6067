"""torch.ops.slimops.w4a16_linear (4-bit group-wise weights, float activations)
against slimops.reference on the CPU (the plain-torch path; the Triton kernel is
tested in tests/test_triton_w4a16_linear.py)."""

import numpy as np
import pytest
import torch

import slimops
from slimops import reference as ref

from conftest import ABS_FLOOR, ROUNDOFF, assert_within_bound, to_numpy

op = torch.ops.slimops.w4a16_linear


def make_inputs(m, k, n, *, group_size=32, symmetric=True, dtype=torch.float32, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    qw = slimops.quantize(torch.randn(n, k, generator=g) * 0.05, bits=4, group_size=group_size, symmetric=symmetric)
    x = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(n, generator=g) if bias else None
    return x, qw.qdata, qw.scale, qw.zero_point, group_size, b


def check(x, w, s, z, group_size, b):
    y = op(x, w, s, z, group_size, b)
    assert y.dtype == x.dtype and y.shape == (*x.shape[:-1], w.shape[0])
    args = [to_numpy(x), w.numpy(), s.numpy(), None if z is None else z.numpy(), group_size]
    expected = ref.w4a16_linear(*args, None if b is None else to_numpy(b))
    weight = np.abs(ref.w4a16_linear(np.eye(x.shape[-1], dtype=np.float32), *args[1:])).T  # |W| [N, K]
    magnitude = np.abs(to_numpy(x).astype(np.float64)) @ weight.T + (0 if b is None else np.abs(to_numpy(b)))
    # float32 dequantization and dot (one rounding per term and per partial sum), then the output cast.
    k = x.shape[-1]
    bound = ((2 * k + 4) * ROUNDOFF[torch.float32] + ROUNDOFF[x.dtype]) * magnitude + ABS_FLOOR[x.dtype]
    assert_within_bound(y, expected, bound)


@pytest.mark.parametrize("group_size", [32, 64, -1])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("m", [0, 1, 5])
def test_matches_reference(group_size, symmetric, m):
    check(*make_inputs(m, 128, 37, group_size=group_size, symmetric=symmetric))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_activations(dtype):
    check(*make_inputs(3, 64, 16, dtype=dtype))


def test_odd_k_per_channel_and_leading_dims():
    x, w, s, z, g, b = make_inputs(4, 37, 9, group_size=-1)
    check(x.reshape(2, 2, 37), w, s, z, g, b)


def test_opcheck_and_compile():
    args = make_inputs(3, 64, 16, symmetric=False)
    torch.library.opcheck(op.default, args)
    f = torch.compile(lambda x: op(x, *args[1:]), fullgraph=True)
    torch.testing.assert_close(f(args[0]), op(*args))


@pytest.mark.parametrize(
    "change,exc,match",
    [
        (dict(group_size=48), ValueError, "does not divide"),
        (dict(w=torch.zeros(37, 63, dtype=torch.uint8)), ValueError, "ceil"),
        (dict(w=torch.zeros(37, 64, dtype=torch.int8)), TypeError, "uint8"),
        (dict(s=torch.ones(37, 3)), ValueError, "w_scale"),
        (dict(z=torch.zeros(37, 4, dtype=torch.int64)), ValueError, "w_zero_point"),
        (dict(z=torch.full((37, 4), 16, dtype=torch.int32)), ValueError, "outside 0..15"),
        (dict(x=torch.randn(2, 128, dtype=torch.float64)), TypeError, "float32"),
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


@pytest.mark.parametrize("name", ["w4a8_linear", "w4a16_linear"])
def test_gradients_flow_through_the_dequantized_weight(name):
    x, w, s, z, g, b = make_inputs(3, 64, 16, symmetric=False)
    x.requires_grad_(True)
    b.requires_grad_(True)
    getattr(torch.ops.slimops, name)(x, w, s, z, g, b).sum().backward()
    weight = torch.from_numpy(ref.w4a16_linear(np.eye(64, dtype=np.float32), w.numpy(), s.numpy(), z.numpy(), g)).T
    torch.testing.assert_close(x.grad, weight.float().sum(0).expand(3, 64))
    torch.testing.assert_close(b.grad, torch.full((16,), 3.0))
