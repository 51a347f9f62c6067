"""Triton W4A16 linear against the float64 NumPy reference.

Runs in Triton's CPU interpreter by default (CPU tensors, small shapes). With
TRITON_INTERPRET=0 and a GPU it runs the compiled kernel on CUDA tensors
(scripts/gpu_check.sh does that) and also covers bfloat16 and >2**31 offsets.
"""
from triton_mode import DEVICE, INTERPRET, NEEDS_CUDA_UNLESS_INTERPRETED, triton  # first: sets TRITON_INTERPRET

import itertools

import numpy as np
import pytest
import torch

from slimops import reference as ref
from slimops.kernels import w4a16_linear as kernel

from conftest import ABS_FLOOR, DOT_FP32_ROUNDINGS_PER_TERM, ROUNDOFF, assert_within_bound, to_numpy

pytestmark = NEEDS_CUDA_UNLESS_INTERPRETED

# The interpreter has no bfloat16 arithmetic; the GPU run covers it.
ACT_DTYPES = [torch.float32, torch.float16] + ([] if INTERPRET else [torch.bfloat16])
# K for each group size: a multiple of the group, never of the 64/128/256 K tiles
# (the last tile is partial); per channel (-1) takes an odd K.
K_FOR_GROUP = {32: 96, 64: 192, 128: 384, -1: 101}
N = 37
CASES = list(itertools.product([True, False], K_FOR_GROUP, ACT_DTYPES))
if INTERPRET:  # cheap: every M and bias choice
    CASES = [c + (m, bias) for c in CASES for m in (1, 5, 33) for bias in (False, True)]
else:  # each case is a fresh compile: cycle M and bias through them
    CASES = [c + ((1, 5, 33)[i % 3], i % 2 == 0) for i, c in enumerate(CASES)]


def operands(m, k, n, group_size, symmetric, dtype, bias, seed):
    """NumPy operands (x rounded to dtype, kept as float32) and their device tensors."""
    rng = np.random.default_rng(seed)
    groups = 1 if group_size == -1 else k // group_size
    u = rng.integers(0, 16, size=(n, k))
    u[0] = 15  # the extreme nibbles somewhere in every problem
    u[-1, ::2] = 0
    packed = ref.pack_int4(u - 8 if symmetric else u, symmetric=symmetric)
    scale = rng.uniform(0.01, 0.1, size=(n, groups)).astype(np.float32)
    zero = None if symmetric else rng.integers(0, 16, size=(n, groups)).astype(np.int32)
    x = torch.from_numpy(rng.normal(size=(m, k)).astype(np.float32)).to(dtype)
    b = rng.normal(0, 5, size=n).astype(np.float32) if bias else None
    host = dict(x=to_numpy(x), w_packed=packed, w_scale=scale, w_zero_point=zero, group_size=group_size, bias=b)
    dev = dict(x2d=x.to(DEVICE), w_packed=to_device(packed), w_scale=to_device(scale),
               w_zero_point=None if zero is None else to_device(zero), group_size=group_size,
               bias=None if b is None else to_device(b))
    return host, dev


def to_device(a):
    return torch.from_numpy(np.ascontiguousarray(a)).to(DEVICE)


def abs_operands(host):
    """|x| and |W| in float64: the magnitudes the roundoff scales with."""
    k = host["x"].shape[-1]
    zero = host["w_zero_point"]
    group = np.arange(k) // (k if host["group_size"] == -1 else host["group_size"])
    u = ref.unpack_int4(host["w_packed"], k, symmetric=zero is None).astype(np.int64)
    w = (u if zero is None else u - zero.astype(np.int64)[:, group]) * host["w_scale"].astype(np.float64)[:, group]
    return np.abs(host["x"]).astype(np.float64), np.abs(w)


def assert_close(y, host):
    """|y - y_ref| within the kernel's roundings (see the reference's docstring):
    each weight (u - z) * s with s rounded to the activation dtype and the product
    too (or flushed by at most one subnormal step), a float32 dot of K terms, the
    float32 bias add and the output cast; the +1s absorb second-order terms."""
    dtype = y.dtype
    want = ref.w4a16_linear(**host)
    x_abs, w_abs = abs_operands(host)
    k = x_abs.shape[-1]
    dot_abs = x_abs @ w_abs.T  # sum |x| |w|
    bias_abs = 0 if host["bias"] is None else np.abs(host["bias"].astype(np.float64))
    u32, u = ROUNDOFF[torch.float32], ROUNDOFF[dtype]
    bound = (2 * u * dot_abs + ABS_FLOOR[dtype] * x_abs.sum(-1, keepdims=True)
             + DOT_FP32_ROUNDINGS_PER_TERM * (k + 1) * u32 * dot_abs
             + (u32 + u) * (dot_abs + bias_abs) + ABS_FLOOR[dtype])
    assert y.device.type == DEVICE
    assert_within_bound(y, want, bound)


def config_for(m):
    """The first config of m's bucket: autotuning would run (in the interpreter) or
    compile (on a GPU) every config of the bucket; one test covers the autotuner."""
    return next(c for buckets, c in kernel.CONFIGS if kernel.m_bucket(m) in buckets)


@pytest.mark.parametrize("symmetric, group_size, dtype, m, bias", CASES, ids=str)
def test_matches_reference(symmetric, group_size, dtype, m, bias):
    k = K_FOR_GROUP[group_size]
    host, dev = operands(m, k, N, group_size, symmetric, dtype, bias, seed=m * 1000 + k + symmetric)
    y = kernel.w4a16_linear(**dev, config=config_for(m))
    assert y.dtype == dtype
    assert_close(y, host)


@pytest.mark.parametrize("config", [c for _, c in kernel.CONFIGS],
                         ids=lambda c: "x".join(str(c.kwargs[f"BLOCK_{d}"]) for d in "MNK"))
def test_every_config_tiles_a_multi_block_problem(config):
    # Several M, N and K tiles for the small configs, partial ones for the large;
    # 4 groups of 128 cross the 64-wide K tiles and fill the 256-wide ones twice.
    host, dev = operands(40, 512, 72, 128, False, torch.float16, True, seed=11)
    assert_close(kernel.w4a16_linear(**dev, config=config), host)


@pytest.mark.parametrize("m", [1, 100])
def test_autotuner_tries_only_the_configs_of_the_m_bucket(m, monkeypatch):
    tuned = kernel._w4a16_linear_tuned
    tried = []
    if INTERPRET:  # no timer here: run each candidate once and time it as 1
        monkeypatch.setitem(tuned.__dict__, "do_bench", lambda call, quantiles: (call(), tried.append(1), [1.0] * 3)[2])
    host, dev = operands(m, 256, 40, 64, True, torch.float16, True, seed=m)
    assert_close(kernel.w4a16_linear(**dev), host)
    bucket = [c for buckets, c in kernel.CONFIGS if kernel.m_bucket(m) in buckets]
    assert tuned.best_config in bucket
    assert not INTERPRET or len(tried) == len(bucket)


def test_strided_operands_are_read_in_place():
    host, dev = operands(5, 128, 9, 32, False, torch.float32, False, seed=3)
    x_padded = torch.zeros(5, 128 + 13, device=DEVICE)
    x_padded[:, 5:5 + 128] = dev["x2d"]
    scale_t = dev["w_scale"].t().contiguous().t()  # [N, G] with strides (1, N)
    zero_t = dev["w_zero_point"].t().contiguous().t()
    y = kernel.w4a16_linear(x_padded[:, 5:5 + 128], dev["w_packed"], scale_t, zero_t, 32,
                            config=config_for(5))
    assert_close(y, host)


def test_empty_problems():
    cfg = config_for(1)
    w = torch.zeros(4, 4, dtype=torch.uint8, device=DEVICE)
    ones = torch.ones(4, 1, device=DEVICE)
    y = kernel.w4a16_linear(torch.zeros(0, 8, dtype=torch.float16, device=DEVICE), w, ones, None, -1, config=cfg)
    assert y.shape == (0, 4) and y.dtype == torch.float16
    # K = 0: the sum is empty and y is the bias.
    bias = torch.arange(4.0, device=DEVICE)
    y = kernel.w4a16_linear(torch.zeros(3, 0, device=DEVICE), w[:, :0], ones, None, -1, bias, config=cfg)
    assert torch.equal(y, bias.expand(3, 4))


def test_bad_arguments_are_refused():
    x = torch.zeros(2, 64, dtype=torch.float16, device=DEVICE)
    w = torch.zeros(4, 32, dtype=torch.uint8, device=DEVICE)
    s2, z2 = torch.ones(4, 2, device=DEVICE), torch.zeros(4, 2, dtype=torch.int32, device=DEVICE)
    call = kernel.w4a16_linear
    with pytest.raises(ValueError, match="x2d"):
        call(x.to(torch.int32), w, s2, None, 32)
    with pytest.raises(ValueError, match=r"w_packed must be uint8 \[N, 32\]"):
        call(x, w[:, :31], s2, None, 32)
    with pytest.raises(ValueError, match="w_packed"):
        call(x, w.to(torch.int8), s2, None, 32)
    for group_size in (0, -2, 3, 48, 128, 32.0):  # not -1 or a power of two dividing K
        with pytest.raises(ValueError, match=f"group_size={group_size}"):
            call(x, w, s2, None, group_size)
    with pytest.raises(ValueError, match=r"w_scale must be float32 \[4, 2\]"):
        call(x, w, torch.ones(4, 1, device=DEVICE), None, 32)
    with pytest.raises(ValueError, match="w_scale"):
        call(x, w, s2.half(), None, 32)
    with pytest.raises(ValueError, match="w_zero_point"):
        call(x, w, s2, z2.to(torch.uint8), 32)
    with pytest.raises(ValueError, match="w_zero_point"):
        call(x, w, s2, z2[:, :1], 32)
    with pytest.raises(ValueError, match="bias must have 4"):
        call(x, w, s2, z2, 32, torch.ones(5, device=DEVICE))
    with pytest.raises(ValueError, match="config"):
        call(x, w, s2, z2, 32, config=triton.Config({"BLOCK_M": 16}))


def huge(rows, cols, dtype):
    """A [rows, cols] view of a one-element buffer (all strides 0): any shape, no memory."""
    return torch.zeros(1, dtype=dtype, device=DEVICE).as_strided((rows, cols), (0, 0))


@pytest.mark.parametrize("dim", ["M", "N", "K"])
def test_sizes_past_int32_indexing_are_refused(dim):
    config = kernel.CONFIGS[-1][1]
    largest = 2**31 - config.kwargs[f"BLOCK_{dim}"]  # size + block - 1 == 2**31 - 1
    sizes = {"M": 4, "N": 4, "K": 8}
    kernel.check_int32_sizes(*(largest if d == dim else sizes[d] for d in "MNK"),
                             {d: config.kwargs[f"BLOCK_{d}"] for d in "MNK"})
    sizes[dim] = largest + 1
    m, n, k = sizes["M"], sizes["N"], sizes["K"]
    with pytest.raises(ValueError, match=f"{dim}={largest + 1} is too large"):
        kernel.w4a16_linear(huge(m, k, torch.float16), huge(n, (k + 1) // 2, torch.uint8),
                            huge(n, 1, torch.float32), None, -1, config=config)


@pytest.mark.skipif(INTERPRET, reason="needs >4 GiB of device memory; compiled kernel only")
def test_row_offsets_past_int32_range():
    # x has M * K > 2**31 elements: its last rows are only reached with int64 offsets.
    m, k, n = 2**16 + 3, 2**15, 16
    x = torch.randn(m, k, dtype=torch.float16, device=DEVICE)
    host, dev = operands(4, k, n, 128, True, torch.float16, False, seed=5)
    x[-4:] = dev["x2d"]
    y = kernel.w4a16_linear(x, dev["w_packed"], dev["w_scale"], None, 128)
    assert_close(y[-4:], host)


def test_reference_is_x_times_the_dequantized_weight():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 64)).astype(np.float32)
    x = rng.normal(size=(2, 3, 64))
    for symmetric, group_size in itertools.product([True, False], [16, -1]):
        q, scale, zero = ref.quantize(w, bits=4, group_size=group_size, symmetric=symmetric)
        dense = ref.dequantize(q, scale, zero, group_size).astype(np.float64)
        y = ref.w4a16_linear(x, ref.pack_int4(q, symmetric), scale, zero, group_size, bias=np.ones(6))
        np.testing.assert_allclose(y, x @ dense.T + 1, rtol=1e-6, atol=1e-6)
