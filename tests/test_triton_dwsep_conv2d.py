"""Triton fused depthwise-separable convolution against the float64 NumPy reference.

Runs in Triton's CPU interpreter by default (CPU tensors, small shapes, the one
interpreter config). With TRITON_INTERPRET=0 and a GPU it runs the compiled
kernel on CUDA tensors (scripts/gpu_check.sh does that) and also covers
bfloat16, the autotuner and >2**31 offsets.
"""
from triton_mode import DEVICE, INTERPRET, NEEDS_CUDA_UNLESS_INTERPRETED, triton  # first: sets TRITON_INTERPRET

import zlib
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from slimops import reference as ref
from slimops.backends import cuda
from slimops.kernels import dwsep_conv2d as kernel
from slimops.reference.dwsep_conv2d import ACTIVATIONS, activation

from conftest import ABS_FLOOR, DOT_FP32_ROUNDINGS_PER_TERM, ROUNDOFF, assert_within_bound, to_numpy

pytestmark = NEEDS_CUDA_UNLESS_INTERPRETED

# The interpreter has no bfloat16 arithmetic; the GPU run covers it.
DTYPES = [torch.float32, torch.float16] + ([] if INTERPRET else [torch.bfloat16])


@dataclass(frozen=True)
class Case:
    k: int
    stride: int
    dilation: int
    padding: tuple
    act1: str
    act2: str
    channels_last: bool
    h: int
    w: int
    c: int = 19  # more than one channel chunk of the interpreter's BLOCK_C = 16
    o: int = 37  # more than one output group of its BLOCK_O = 32
    dw_bias: bool = True
    pw_bias: bool = True
    residual: bool = False

    def __str__(self):
        layout = "nhwc" if self.channels_last else "nchw"
        return (f"k{self.k}s{self.stride}d{self.dilation}p{''.join(map(str, self.padding))}-{self.act1}-{self.act2}"
                f"-{layout}-{self.h}x{self.w}-c{self.c}o{self.o}{'-res' if self.residual else ''}"
                f"{'' if self.dw_bias else '-nodwb'}{'' if self.pw_bias else '-nopwb'}")


def geometry_cases():
    """Every kernel size x stride x dilation; padding alternately symmetric and
    asymmetric (same total, so stride 1 keeps x's size and can add the
    residual); the activations cycle through both positions, layouts and
    biases alternate. Inputs are small (one pixel tile: the interpreter runs
    every program in Python) and smaller than the 7-tap kernels."""
    cases = []
    for i, (k, stride, dilation) in enumerate((k, s, d) for k in (3, 5, 7) for s in (1, 2) for d in (1, 2)):
        p = dilation * (k - 1) // 2
        padding = (p, p, p, p) if i % 2 == 0 else (p + 1, p - 1, p - 1, p + 1)
        h, w = (3, 5) if stride == 1 else (6, 7)
        residual = stride == 1 and i % 4 == 1
        cases.append(Case(k, stride, dilation, padding, ACTIVATIONS[i % 5], ACTIVATIONS[(i + 2) % 5],
                          channels_last=(i // 3) % 2 == 1, h=h, w=w, o=19 if residual else 37,
                          dw_bias=i % 3 != 1, pw_bias=i % 3 != 2, residual=residual))
    return cases


EDGE_CASES = [
    # H and W below the kernel size, only the padding makes room.
    Case(5, 1, 1, (2, 2, 2, 2), "relu", "silu", channels_last=True, h=2, w=1),
    Case(7, 2, 1, (3, 3, 3, 3), "hardswish", "relu6", channels_last=False, h=1, w=3),
    # One-sided padding only, and none at all.
    Case(3, 1, 1, (0, 2, 2, 0), "silu", "none", channels_last=True, h=4, w=4, c=5, o=5, residual=True),
    Case(3, 1, 2, (0, 0, 0, 0), "none", "relu", channels_last=False, h=5, w=6, c=3, o=16),
    # Several pixel tiles, the last partial (63 and 20 output pixels).
    Case(3, 1, 1, (1, 1, 1, 1), "relu6", "hardswish", channels_last=True, h=7, w=9, c=8, o=8, residual=True),
    Case(3, 2, 1, (1, 0, 1, 0), "silu", "relu", channels_last=False, h=9, w=11, c=20, o=13),
]

# The interpreter takes every case in every dtype; on a GPU each is a fresh compile,
# so the dtypes cycle through the cases.
if INTERPRET:
    CASES = [(case, dtype) for case in geometry_cases() + EDGE_CASES for dtype in DTYPES]
else:
    CASES = [(case, DTYPES[i % len(DTYPES)]) for i, case in enumerate(geometry_cases() + EDGE_CASES)]


def operands(case, dtype, seed, batch=2):
    """NumPy operands (rounded to dtype, held as float32, NCHW) and their device
    tensors, x in the case's memory format. Scales put the depthwise and the
    pointwise sums around +-3, where relu6 and hardswish bend."""
    rng = np.random.default_rng(seed)

    def rounded(shape, scale):
        return torch.from_numpy(rng.normal(0, scale, size=shape).astype(np.float32)).to(dtype)

    x = rounded((batch, case.c, case.h, case.w), 1.0)
    tensors = dict(x=x, dw_weight=rounded((case.c, 1, case.k, case.k), 3 / case.k),
                   dw_bias=rounded((case.c,), 1.0) if case.dw_bias else None,
                   pw_weight=rounded((case.o, case.c, 1, 1), 2 / np.sqrt(case.c)),
                   pw_bias=rounded((case.o,), 1.0) if case.pw_bias else None)
    host = {name: None if t is None else to_numpy(t) for name, t in tensors.items()}
    dev = {name: None if t is None else t.to(DEVICE) for name, t in tensors.items()}
    if case.channels_last:
        dev["x"] = dev["x"].contiguous(memory_format=torch.channels_last)
    return host, dev


def options(case):
    return dict(stride=[case.stride] * 2, padding=list(case.padding), dilation=[case.dilation] * 2,
                act1=case.act1, act2=case.act2, residual=case.residual)


def magnitude(a):
    return None if a is None else np.abs(a).astype(np.float64)


# Steepest slope of any activation (hardswish at v = 3): how far an error in
# its input moves its output.
ACT_SLOPE = 1.5
# float32 roundings of evaluating an activation (exp, the divisions).
ACT_FP32_ROUNDINGS = 4


def assert_close(y, host, case):
    """|y - y_ref| within the kernel's roundings (module docstring of the kernel):
    the float32 depthwise sum of KH*KW taps + bias, act1, the rounding of that
    tile to the dtype, a float32 dot over C (tensor-core rounding per term),
    + pw_bias, act2, + x, the output cast. Errors pass through each activation
    scaled by at most ACT_SLOPE; the +1s and +2s absorb second-order terms."""
    dtype = y.dtype
    u, u32, floor = ROUNDOFF[dtype], ROUNDOFF[torch.float32], ABS_FLOOR[dtype]
    geometry = options(case)
    geometry.update(act1="none", act2="none", residual=False)
    identity = np.eye(case.c)[:, :, None, None]  # a pointwise stage that passes the depthwise through
    d = ref.dwsep_conv2d(host["x"], host["dw_weight"], host["dw_bias"], identity, None, **geometry)
    d_abs = ref.dwsep_conv2d(magnitude(host["x"]), magnitude(host["dw_weight"]), magnitude(host["dw_bias"]),
                             identity, None, **geometry)
    a_abs = np.abs(activation(case.act1, d))
    err_a = (ACT_SLOPE * (case.k**2 + 2) * u32 * d_abs + (u + ACT_FP32_ROUNDINGS * u32) * a_abs + floor)

    pw_abs = magnitude(host["pw_weight"])[:, :, 0, 0]
    dot_abs = np.einsum("bchw,oc->bohw", a_abs, pw_abs)
    bias_abs = 0 if host["pw_bias"] is None else magnitude(host["pw_bias"])[None, :, None, None]
    err_z = (np.einsum("bchw,oc->bohw", err_a, pw_abs) + DOT_FP32_ROUNDINGS_PER_TERM * (case.c + 1) * u32 * dot_abs
             + u32 * (dot_abs + bias_abs))

    want = ref.dwsep_conv2d(**host, **options(case))
    out_abs = np.abs(want) + (magnitude(host["x"]) if case.residual else 0)
    bound = ACT_SLOPE * err_z + (u + (ACT_FP32_ROUNDINGS + 1) * u32) * out_abs + floor
    assert y.device.type == DEVICE
    assert y.dtype == dtype
    assert_within_bound(y, want, bound)


def assert_memory_format_of(y, x):
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last)
    else:
        assert y.is_contiguous()


def config_for(o):
    """The interpreter's config, or on a GPU the first config the autotuner would
    try for this O (autotuning compiles every candidate; one test covers it)."""
    return kernel.INTERPRETER_CONFIG if INTERPRET else kernel._configs_for_o(kernel.CONFIGS, {"O": o})[0]


@pytest.mark.parametrize("case, dtype", CASES, ids=str)
def test_matches_reference(case, dtype):
    host, dev = operands(case, dtype, seed=zlib.crc32(str(case).encode()))
    y = kernel.dwsep_conv2d(**dev, **options(case), config=config_for(case.o))
    assert_memory_format_of(y, dev["x"])
    assert_close(y, host, case)


def test_geometry_cases_cover_every_option():
    cases = geometry_cases() + EDGE_CASES
    for act in ACTIVATIONS:
        assert any(c.act1 == act for c in cases) and any(c.act2 == act for c in cases)
    assert {c.channels_last for c in cases} == {True, False} and any(c.residual for c in cases)
    assert any(min(c.h, c.w) < c.k for c in cases)
    assert any(c.padding[0] != c.padding[1] and c.padding[2] != c.padding[3] for c in cases)


BIG = Case(3, 1, 1, (1, 1, 1, 1), "silu", "relu6", channels_last=True, h=6, w=6, c=40, o=300)


@pytest.mark.parametrize("config", kernel._configs_for_o(kernel.CONFIGS, {"O": BIG.o}) + [kernel.INTERPRETER_CONFIG],
                         ids=lambda c: "x".join(str(c.kwargs[f"BLOCK_{d}"]) for d in "PCO"))
def test_every_tile_covers_a_multi_block_problem(config):
    # 36 pixels, 40 channels and 300 outputs: partial tiles of each kind in every
    # config, several in most, and more than one O group even at BLOCK_O = 256.
    host, dev = operands(BIG, torch.float16, seed=7, batch=1)
    assert_close(kernel.dwsep_conv2d(**dev, **options(BIG), config=config), host, BIG)


def strided(t):
    """t as every other element of a tensor twice its size along dim 0."""
    doubled = torch.zeros((2 * t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
    doubled[::2] = t
    return doubled[::2]


def test_strided_views_are_read_in_place():
    # x is neither NCHW- nor NHWC-contiguous (a channel and row slice of a
    # larger tensor): the output comes back NCHW. Weights and biases are views too.
    case = Case(3, 1, 1, (1, 1, 1, 1), "relu", "none", channels_last=False, h=4, w=3, c=6, o=7)
    host, dev = operands(case, torch.float32, seed=3)
    x_big = torch.zeros(2, 9, 8, 3, device=DEVICE)
    x_big[:, 2:8, ::2] = dev["x"]
    pw_t = dev["pw_weight"][:, :, 0, 0].t().contiguous().t()[:, :, None, None]  # strides (1, O)
    y = kernel.dwsep_conv2d(x_big[:, 2:8, ::2], strided(dev["dw_weight"]), strided(dev["dw_bias"]), pw_t,
                            strided(dev["pw_bias"]), **options(case), config=config_for(case.o))
    assert y.is_contiguous()
    assert_close(y, host, case)


def test_int64_offsets_match_the_int32_ones(monkeypatch):
    # The int64 path on a small problem (on a GPU the >2**31 test below reaches it for real).
    monkeypatch.setattr(kernel, "needs_int64", lambda *tensors: True)
    case = Case(5, 2, 1, (2, 1, 1, 2), "silu", "hardswish", channels_last=True, h=6, w=5, c=7, o=7)
    host, dev = operands(case, torch.float16, seed=8)
    assert_close(kernel.dwsep_conv2d(**dev, **options(case), config=config_for(case.o)), host, case)


def test_nan_propagates_like_the_reference():
    case = Case(3, 1, 1, (1, 1, 1, 1), "relu", "relu6", channels_last=True, h=4, w=4, c=4, o=5)
    host, dev = operands(case, torch.float32, seed=5)
    host["x"][1, 2, 0, 3] = np.nan
    dev["x"][1, 2, 0, 3] = float("nan")
    y = kernel.dwsep_conv2d(**dev, **options(case), config=config_for(case.o))
    assert torch.isnan(y[1, :, :2, 2:]).all()  # the pixel's 3x3 neighbourhood, every output channel
    assert_close(y, host, case)


def test_cuda_backend_calls_the_launcher():
    case = Case(3, 2, 1, (1, 1, 1, 1), "hardswish", "silu", channels_last=True, h=5, w=5, c=3, o=4)
    host, dev = operands(case, torch.float16, seed=9)
    args = (dev["x"], dev["dw_weight"], dev["dw_bias"], dev["pw_weight"], dev["pw_bias"], [2, 2], [1, 1, 1, 1],
            [1, 1], "hardswish", "silu", False)
    assert cuda.dwsep_declines(*args) is None
    assert_close(cuda.dwsep_conv2d(*args), host, case)


def test_empty_batch():
    case = Case(3, 1, 1, (1, 1, 1, 1), "none", "none", channels_last=True, h=4, w=4, c=3, o=5)
    _, dev = operands(case, torch.float16, seed=1, batch=0)
    y = kernel.dwsep_conv2d(**dev, **options(case), config=config_for(case.o))
    assert y.shape == (0, 5, 4, 4) and y.dtype == torch.float16


def test_bad_arguments_are_refused():
    case = Case(3, 1, 1, (1, 1, 1, 1), "none", "none", channels_last=False, h=4, w=4, c=3, o=5)
    _, dev = operands(case, torch.float32, seed=2)
    with pytest.raises(TypeError, match="Triton dwsep_conv2d kernel takes x"):
        kernel.dwsep_conv2d(**{k: None if v is None else v.double() for k, v in dev.items()}, **options(case))
    with pytest.raises(ValueError, match="config must be one of"):
        kernel.dwsep_conv2d(**dev, **options(case), config=triton.Config({"BLOCK_P": 16}))
    with pytest.raises(ValueError, match="dw_weight must be"):  # the op's own checks run first
        kernel.dwsep_conv2d(**dict(dev, dw_weight=dev["dw_weight"][:2]), **options(case))
    with pytest.raises(ValueError, match="act1="):
        kernel.dwsep_conv2d(**dev, **dict(options(case), act1="gelu"))


def huge(shape, dtype=torch.float16):
    """A view of one element (all strides 0): any shape, no memory."""
    return torch.zeros(1, dtype=dtype, device=DEVICE).as_strided(shape, (0,) * len(shape))


def test_sizes_past_int32_indexing_are_refused():
    # 2**31 + 2**16 output pixels of a 1x1 depthwise: refused before y is allocated.
    x = huge((1, 1, 2**16, 2**15 + 1))
    args = (x, huge((1, 1, 1, 1)), None, huge((1, 1, 1, 1)), None, [1, 1], [0, 0, 0, 0], [1, 1], "none", "none",
            False)
    assert "Ho * Wo is too large" in cuda.dwsep_declines(*args)
    with pytest.raises(ValueError, match="indexes in int32"):
        kernel.dwsep_conv2d(*args)


def test_int64_offsets_are_chosen_past_int32_extents():
    def meta(*shape, memory_format=torch.contiguous_format):
        return torch.empty(shape, device="meta").contiguous(memory_format=memory_format)

    assert not kernel.needs_int64(meta(2**31))  # last offset 2**31 - 1 still fits
    assert kernel.needs_int64(meta(2**31 + 1))
    assert kernel.needs_int64(meta(3, 16, 2**13, 2**13, memory_format=torch.channels_last))
    assert not kernel.needs_int64(meta(1, 16, 2**13, 2**13), meta(0, 2**20, 2**20))


@pytest.mark.parametrize("o", [1, 16, 37, 100, 200, 256, 300, 1000])
def test_autotuner_tries_one_block_o_per_tile(o):
    pruned = kernel._configs_for_o(kernel.CONFIGS, {"O": o})
    assert sorted(kernel.tile_of(c) for c in pruned) == sorted((p, c, warps) for p, c, _, warps in kernel.TILES)
    for c in pruned:
        widest = kernel._WIDEST_BLOCK_O[kernel.tile_of(c)]
        block_o = c.kwargs["BLOCK_O"]
        assert block_o <= widest and (block_o >= o or block_o == widest)  # covers O where the tile allows


@pytest.mark.skipif(INTERPRET, reason="the interpreter runs INTERPRETER_CONFIG; compiled kernel only")
def test_autotuner_picks_among_the_pruned_configs():
    case = replace(BIG, o=48)
    host, dev = operands(case, torch.float16, seed=4)
    assert_close(kernel.dwsep_conv2d(**dev, **options(case)), host, case)
    assert kernel._dwsep_conv2d_tuned.best_config in kernel._configs_for_o(kernel.CONFIGS, {"O": case.o})


@pytest.mark.skipif(INTERPRET, reason="needs ~12 GiB of device memory; compiled kernel only")
def test_offsets_past_int32_range():
    # x and y hold 3 * 2**30 elements: the last image starts past 2**31. Only its
    # bottom-right corner is nonzero, so the output there equals the reference
    # on the corner alone (the zeros above and left act as its padding).
    case = Case(3, 1, 1, (1, 1, 1, 1), "silu", "relu6", channels_last=True, h=8, w=8, c=16, o=16)
    host, dev = operands(case, torch.float16, seed=6, batch=1)
    side = 2**13
    x = torch.zeros(3, side, side, case.c, dtype=torch.float16, device=DEVICE).permute(0, 3, 1, 2)  # NHWC
    x[-1:, :, -case.h:, -case.w:] = dev.pop("x")
    y = kernel.dwsep_conv2d(x, **dev, **options(case), config=config_for(case.o))
    del x
    assert_close(y[-1:, :, -case.h:, -case.w:], host, case)
