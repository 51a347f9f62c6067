"""torch.ops.slimops.dwsep_conv2d (fused depthwise-separable convolution) on the
CPU, every ISA path, against slimops.reference; its autograd, fake
implementation and bad-input handling."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import slimops
from slimops import reference as ref
from slimops.backends import fallback

from conftest import (
    ROUNDOFF,
    SUPPORTED_CPU_ISAS,
    assert_within_bound,
    assert_every_isa_agrees,
    outputs_on_one_and_many_threads,
    to_numpy,
)

op = torch.ops.slimops.dwsep_conv2d
ACTS = ("none", "relu", "relu6", "silu", "hardswish")


def make_inputs(b, c, h, w, o, k, *, kw=None, dtype=torch.float32, bias=True, channels_last=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dw = (torch.randn(c, 1, k, kw or k, generator=g) / k).to(dtype)
    pw = (torch.randn(o, c, 1, 1, generator=g) / max(c, 1) ** 0.5).to(dtype)
    db = torch.randn(c, generator=g).to(dtype) if bias else None
    pb = torch.randn(o, generator=g).to(dtype) if bias else None
    return x, dw, db, pw, pb


def numpy_args(x, dw, db, pw, pb):
    return [to_numpy(t) if t is not None else None for t in (x, dw, db, pw, pb)]


def bound(x, dw, db, pw, pb, stride, padding, dilation, act1, act2, residual):
    """float32 roundings: the depthwise sum (KH * KW terms and the bias), the
    1x1 sum (C terms and the bias), and a few per activation (own exp), all
    relative to the magnitudes |x| |w| of each sum; scaled by 8 for the
    activations' slopes (at most 1.2 for silu and hardswish)."""
    xn, dwn, dbn, pwn, pbn = numpy_args(x, dw, db, pw, pb)
    a = lambda t: None if t is None else np.abs(t)
    # Magnitude of the intermediate: |x| through |dw| + |dw_b|, then through any activation (|act(v)| <= |v| + 1).
    d_mag = ref.dwsep_conv2d(np.abs(xn), np.abs(dwn), a(dbn), np.eye(x.shape[1])[:, :, None, None], None, stride,
                             padding, dilation, "none", "none", False) + 1
    y_mag = np.einsum("bchw,oc->bohw", d_mag, np.abs(pwn[:, :, 0, 0])) + (0 if pbn is None else np.abs(pbn)[None, :, None, None])
    if residual:
        y_mag = y_mag + np.abs(xn)
    k = dw.shape[2] * dw.shape[3]
    terms = k + x.shape[1] + 12
    return 8 * terms * ROUNDOFF[torch.float32] * y_mag


def check(x, dw, db, pw, pb, stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), act1="relu6", act2="none",
          residual=False):
    options = (list(stride), list(padding), list(dilation), act1, act2, residual)
    y = op(x, dw, db, pw, pb, *options)
    expected = ref.dwsep_conv2d(*numpy_args(x, dw, db, pw, pb), *options)
    assert y.dtype == x.dtype and tuple(y.shape) == expected.shape
    layout = torch.channels_last if slimops._checks.is_channels_last(x) else torch.contiguous_format
    assert y.is_contiguous(memory_format=layout)
    assert_within_bound(y, expected, bound(x, dw, db, pw, pb, *options))
    return y


@pytest.mark.parametrize("act1", ACTS)
@pytest.mark.parametrize("act2", ACTS)
def test_every_activation_pair(cpu_isa, act1, act2):
    check(*make_inputs(2, 19, 7, 6, 21, 3), act1=act1, act2=act2)


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("channels_last", [True, False])
def test_kernel_stride_dilation_and_layout(cpu_isa, k, stride, dilation, channels_last):
    pad = dilation * (k - 1) // 2
    check(*make_inputs(1, 24, 11, 13, 40, k, channels_last=channels_last), stride=(stride, stride),
          padding=(pad, pad, pad, pad), dilation=(dilation, dilation), act1="silu", act2="relu")


def test_residual_and_asymmetric_same_padding(cpu_isa):
    # TF "same" with stride 1 and an even-sized total padding split (0, 1) and (1, 2).
    check(*make_inputs(2, 16, 8, 9, 16, 3, kw=4), padding=(1, 1, 1, 2), residual=True, act2="none")
    check(*make_inputs(1, 33, 15, 16, 7, 3), stride=(2, 2), padding=(0, 1, 0, 1))


def test_input_smaller_than_the_kernel(cpu_isa):
    check(*make_inputs(1, 5, 2, 3, 4, 7), padding=(3, 3, 3, 3))
    check(*make_inputs(1, 5, 1, 1, 4, 5), padding=(2, 2, 2, 2), act1="hardswish")


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 2), c=st.integers(1, 40), o=st.integers(1, 40), h=st.integers(1, 12), w=st.integers(1, 12),
    k=st.sampled_from([1, 3, 5, 7]), stride=st.integers(1, 2), dilation=st.integers(1, 2),
    pads=st.tuples(*[st.integers(0, 3)] * 4), act1=st.sampled_from(ACTS), act2=st.sampled_from(ACTS),
    channels_last=st.booleans(), bias=st.booleans(), isa=st.sampled_from(SUPPORTED_CPU_ISAS),
)
def test_hypothesis_against_reference(b, c, o, h, w, k, stride, dilation, pads, act1, act2, channels_last, bias, isa):
    span = dilation * (k - 1) + 1
    if h + pads[0] + pads[1] < span or w + pads[2] + pads[3] < span:
        return  # no output: tested in test_bad_inputs
    previous = slimops.cpu_isa()
    slimops.set_cpu_isa(isa)
    try:
        check(*make_inputs(b, c, h, w, o, k, channels_last=channels_last, bias=bias), stride=(stride, stride),
              padding=pads, dilation=(dilation, dilation), act1=act1, act2=act2)
    finally:
        slimops.set_cpu_isa(previous)


@pytest.mark.parametrize("shape", [(1, 37, 9, 10, 45, 3), (2, 96, 14, 14, 24, 3), (1, 64, 7, 7, 320, 5)])
def test_every_isa_gives_the_same_bits(shape):
    args = make_inputs(*shape)
    for act in ACTS:
        assert_every_isa_agrees(lambda: op(*args, [1, 1], [1, 1, 1, 1], [1, 1], act, act, False), act)


# Depthwise runs of 7 pixels (output widths 7 and 14, with channel tails, 5x5 and 7x7) and a non-square kernel,
# which takes the generic taps kernel: the same bits on every ISA path, and the reference's values.
@pytest.mark.parametrize("shape, kw, pads", [((1, 37, 14, 14, 24, 5), None, [2, 2, 2, 2]),
                                             ((1, 19, 7, 7, 40, 7), None, [3, 3, 3, 3]),
                                             ((2, 21, 9, 11, 16, 3), 5, [1, 1, 2, 2])])
def test_seven_pixel_runs_and_non_square_kernels_agree(shape, kw, pads):
    args = make_inputs(*shape, kw=kw)
    check(*args, padding=pads, act1="relu6", act2="silu")
    assert_every_isa_agrees(lambda: op(*args, [1, 1], pads, [1, 1], "relu6", "silu", False))


@pytest.mark.parametrize("h, w", [(5, 6), (7, 7)])
def test_small_image_with_a_large_1x1_weight(cpu_isa, h, w):
    # A 6 MiB 1x1 weight (beyond half of any L2 up to 12 MiB) on a small image: one thread runs each image's tile
    # fused; three threads take the shared-tile path (depthwise first, by output rows at 7x7, then the 1x1 split
    # over output channels). Same float order, same bits.
    args = make_inputs(2, 1536, h, w, 1000, 3)
    assert torch.equal(*outputs_on_one_and_many_threads(lambda: check(*args, act1="silu", act2="relu6")))


# Images beyond any L2 up to 4 MiB (37 x 171 x 170 floats) prefetch their input rows; at stride 1 (3x3 on paired
# rows, 5x5 dilated on single ones) fused tasks compute two output rows at a time while prefetching the next rows'
# input. An odd channel count, tasks that start inside a row (3 threads), the last chunk a single row.
@pytest.mark.parametrize("k, stride, dilation, pads", [(3, 1, 1, [1, 1, 1, 1]), (3, 2, 1, [0, 1, 0, 1]),
                                                       (5, 1, 2, [4, 3, 4, 4])])
def test_images_larger_than_l2(k, stride, dilation, pads):
    args = make_inputs(1, 37, 171, 170, 24, k)
    options = dict(stride=[stride] * 2, padding=pads, dilation=[dilation] * 2, act1="relu6", act2="silu")
    one, many = outputs_on_one_and_many_threads(lambda: check(*args, **options))
    assert torch.equal(one, many)
    assert_every_isa_agrees(lambda: op(*args, *options.values(), False))


def test_thread_count_does_not_change_results(cpu_isa):
    args = make_inputs(2, 48, 20, 20, 40, 3)
    assert torch.equal(*outputs_on_one_and_many_threads(lambda: op(*args, [2, 2], [1, 1, 1, 1], [1, 1], "silu", "none",
                                                                     False)))


def test_nan_and_inf_propagate(cpu_isa):
    x, dw, db, pw, pb = make_inputs(1, 8, 6, 6, 5, 3)
    x[0, 3, 2, 2] = float("nan")
    x[0, 4, 5, 5] = float("inf")
    for act in ACTS:
        y = op(x, dw, db, pw, pb, [1, 1], [1, 1, 1, 1], [1, 1], act, "none", False)
        expected = ref.dwsep_conv2d(*numpy_args(x, dw, db, pw, pb), (1, 1), (1, 1, 1, 1), (1, 1), act, "none")
        np.testing.assert_array_equal(np.isnan(y.numpy()), np.isnan(expected))


def test_empty_batch_and_zero_channels():
    x, dw, db, pw, pb = make_inputs(0, 8, 5, 5, 3, 3)
    assert op(x, dw, db, pw, pb, [1, 1], [1, 1, 1, 1]).shape == (0, 3, 5, 5)
    x, dw, db, pw, pb = make_inputs(2, 0, 5, 5, 3, 3)
    y = op(x, dw, db, pw, pb, [1, 1], [1, 1, 1, 1], [1, 1], "none", "relu6")
    torch.testing.assert_close(y, torch.nn.functional.relu6(pb)[None, :, None, None].expand(2, 3, 5, 5))
    x, dw, db, pw, pb = make_inputs(1, 8, 5, 5, 0, 3)
    assert op(x, dw, db, pw, pb, [1, 1], [1, 1, 1, 1]).shape == (1, 0, 5, 5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_uses_the_plain_torch_path(dtype):
    args = make_inputs(1, 8, 6, 6, 5, 3, dtype=dtype)
    y = op(*args, [1, 1], [1, 1, 1, 1], [1, 1], "relu6", "none", False)
    want = ref.dwsep_conv2d(*numpy_args(*args), (1, 1), (1, 1, 1, 1), (1, 1), "relu6", "none")
    assert y.dtype == dtype
    np.testing.assert_allclose(to_numpy(y), want, rtol=0, atol=64 * ROUNDOFF[dtype] * np.abs(want).max())


def test_fallback_matches_reference():
    args = make_inputs(2, 12, 7, 7, 9, 5)
    y = fallback.dwsep_conv2d(*args, [2, 2], [2, 2, 2, 2], [1, 1], "silu", "hardswish", False)
    assert_within_bound(y, ref.dwsep_conv2d(*numpy_args(*args), (2, 2), (2, 2, 2, 2), (1, 1), "silu", "hardswish"),
                        bound(*args, (2, 2), (2, 2, 2, 2), (1, 1), "silu", "hardswish", False))


def test_gradcheck_in_float64():
    x, dw, db, pw, pb = (t.requires_grad_() for t in make_inputs(1, 3, 5, 4, 2, 3, dtype=torch.float64))
    for act1, act2, residual, o in [("relu6", "silu", False, 2), ("hardswish", "none", True, 3)]:
        pw_o = torch.randn(o, 3, 1, 1, dtype=torch.float64, requires_grad=True)
        pb_o = torch.randn(o, dtype=torch.float64, requires_grad=True)
        f = lambda *t: op(*t, [1, 1], [1, 1, 1, 1], [1, 1], act1, act2, residual)
        assert torch.autograd.gradcheck(f, (x, dw, db, pw_o, pb_o))


def test_float32_gradients_match_the_unfused_chain():
    args = [t.requires_grad_() for t in make_inputs(2, 6, 6, 5, 4, 3)]
    op(*args, [2, 1], [1, 0, 1, 1], [1, 1], "silu", "relu", False).square().sum().backward()
    fused = [t.grad.clone() for t in args]
    for t in args:
        t.grad = None
    fallback.dwsep_conv2d(*args, [2, 1], [1, 0, 1, 1], [1, 1], "silu", "relu", False).square().sum().backward()
    for got, want in zip(fused, (t.grad for t in args)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_opcheck_and_compile():
    for channels_last in (True, False):
        args = make_inputs(2, 8, 6, 7, 5, 3, channels_last=channels_last)
        options = ([2, 2], [1, 1, 1, 1], [1, 1], "relu6", "none", False)
        torch.library.opcheck(op.default, (*args, *options))
        f = torch.compile(lambda x: op(x, *args[1:], *options) * 2, fullgraph=True)
        torch.testing.assert_close(f(args[0]), op(*args, *options) * 2)


def bad(**overrides):
    x, dw, db, pw, pb = make_inputs(1, 8, 6, 6, 5, 3)
    args = dict(x=x, dw=dw, db=db, pw=pw, pb=pb, stride=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], act1="relu",
                act2="none", residual=False)
    args.update(overrides)
    return tuple(args.values())


@pytest.mark.parametrize(
    "overrides,exc,match",
    [
        (dict(x=torch.randn(8, 6, 6)), ValueError, "4-D"),
        (dict(x=torch.randint(0, 3, (1, 8, 6, 6))), TypeError, "float32"),
        (dict(x=torch.randn(1, 8, 6, 6).to_sparse()), TypeError, "dense"),
        (dict(dw=torch.randn(8, 2, 3, 3)), ValueError, "channel multiplier"),
        (dict(dw=torch.randn(7, 1, 3, 3)), ValueError, "dw_weight"),
        (dict(pw=torch.randn(5, 7, 1, 1)), ValueError, "pw_weight"),
        (dict(pw=torch.randn(5, 8, 3, 3)), ValueError, "pw_weight"),
        (dict(db=torch.randn(7)), ValueError, "dw_bias"),
        (dict(pb=torch.randn(4)), ValueError, "pw_bias"),
        (dict(pw=torch.randn(5, 8, 1, 1, dtype=torch.float64)), TypeError, "x's dtype"),
        (dict(dw=torch.randn(8, 1, 3, 3, device="meta")), ValueError, "dw_weight is on meta"),
        (dict(stride=[0, 1]), ValueError, "stride"),
        (dict(pw=None), TypeError, "pw_weight must be a tensor"),
        (dict(padding=[1, 1]), ValueError, "padding"),
        (dict(padding=[-1, 1, 1, 1]), ValueError, "padding"),
        (dict(dilation=[1, 0]), ValueError, "dilation"),
        (dict(act1="gelu"), ValueError, "act1"),
        (dict(act2="tanh"), ValueError, "act2"),
        (dict(padding=[0, 0, 0, 0], dw=torch.randn(8, 1, 7, 7)), ValueError, "smaller than the dilated"),
        (dict(residual=True), ValueError, "residual"),
    ],
)
def test_bad_inputs(overrides, exc, match):
    with pytest.raises(exc, match=match):
        op(*bad(**overrides))


def test_native_entry_refuses_bad_sizes():
    base = dict(x=0, dw_w=0, dw_b=0, pw_w=0, pw_b=0, packed=0, packed_floats=0, y=0, B=1, H=4, W=4, C=2, O=2, Ho=4, Wo=4, KH=3, KW=3,
                stride_h=1, stride_w=1, pad_top=1, pad_left=1, dilation_h=1, dilation_w=1, act1=0, act2=0,
                residual=False, nthreads=1)
    for change, match in [(dict(B=-1), "negative"), (dict(pad_top=-1), "negative"), (dict(stride_w=0), "larger"),
                          (dict(Ho=0), "larger"), (dict(residual=True, O=3), "larger"), (dict(), "null"),
                          (dict(packed=64, packed_floats=5), "larger"),
                          (dict(C=1 << 33), "larger")]:
        with pytest.raises(ValueError, match=match):
            slimops._C.dwsep_conv2d_cpu(**{**base, **change})
    with pytest.raises(ValueError, match="activation"):
        slimops._C.dwsep_conv2d_cpu(**{**base, "act1": 7})
