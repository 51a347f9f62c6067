"""Shared fixtures and the tolerance table for every test."""

import os

# Triton kernels run in its CPU interpreter unless a GPU run sets this to 0.
os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
import torch

from slimops import _C

ALL_CPU_ISAS = ("scalar", "avx2", "avx512_vnni")
SUPPORTED_CPU_ISAS = [isa for isa in ALL_CPU_ISAS if _C.cpu_supports(isa)]

# Unit roundoff per dtype: the one tolerance table of the test suite.
ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
# The int8 linear epilogue (scales and bias in float32, then the output cast):
# this many float32 roundings plus one in the output dtype.
EPILOGUE_FP32_ROUNDINGS = 5
# Absolute error allowed where the output is subnormal: one fp16 subnormal step.
ABS_FLOOR = {torch.float32: 0.0, torch.float16: 2.0**-24, torch.bfloat16: 0.0}


@pytest.fixture(params=ALL_CPU_ISAS)
def cpu_isa(request):
    """Runs the test once per CPU code path this machine supports."""
    isa = request.param
    if not _C.cpu_supports(isa):
        pytest.skip(f"this CPU lacks {isa}")
    previous = _C.cpu_isa()
    _C.set_cpu_isa(isa)
    yield isa
    _C.set_cpu_isa(previous)


def outputs_on_every_isa(fn):
    """{isa: fn()} for every CPU code path this machine supports; the active path is restored."""
    previous = _C.cpu_isa()
    outs = {}
    try:
        for isa in SUPPORTED_CPU_ISAS:
            _C.set_cpu_isa(isa)
            outs[isa] = fn()
    finally:
        _C.set_cpu_isa(previous)
    return outs


def assert_every_isa_agrees(fn, what=""):
    """fn() gives equal tensors on every CPU code path this machine supports."""
    outs = outputs_on_every_isa(fn)
    first = next(iter(outs.values()))
    for isa, y in outs.items():
        assert torch.equal(y, first), (isa, what)


def outputs_on_one_and_many_threads(fn):
    """(fn() on 1 thread, fn() on max(3, current) threads); the thread count is restored."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fn()
        torch.set_num_threads(max(3, previous))
        return one, fn()
    finally:
        torch.set_num_threads(previous)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy() if t.dtype in (torch.float16, torch.bfloat16) else t.detach().cpu().numpy()


def assert_within_roundoff(actual: torch.Tensor, expected: np.ndarray, magnitude: np.ndarray, dtype: torch.dtype):
    """Error against the float64 reference of a computation whose integer part
    is exact: |actual - expected| <= (EPILOGUE_FP32_ROUNDINGS * u(float32) +
    u(dtype)) * magnitude + ABS_FLOOR[dtype] elementwise, where magnitude is
    |acc * x_scale * w_scale| + |bias|; NaN exactly where expected is NaN."""
    bound = (EPILOGUE_FP32_ROUNDINGS * ROUNDOFF[torch.float32] + ROUNDOFF[dtype]) * magnitude + ABS_FLOOR[dtype]
    assert_within_bound(actual, expected, bound)


# W4A16 (Triton): the float32 dot of K terms may round each partial sum toward zero
# on tensor cores (up to 2 u each): this many u(float32) per term of sum |x| |w|.
DOT_FP32_ROUNDINGS_PER_TERM = 2


# W4A8: float32 roundings besides the group sum (float(d) exact below 2^24; the
# product with w_scale, s_x * acc, + bias) plus one per group added up in order.
W4A8_FP32_ROUNDINGS_PLUS_GROUPS = 3


def assert_within_bound(actual: torch.Tensor, expected: np.ndarray, bound: np.ndarray):
    """|actual - expected| <= bound elementwise; NaN exactly where expected is NaN."""
    a = to_numpy(actual).astype(np.float64)
    assert a.shape == expected.shape, (a.shape, expected.shape)
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(a), nan), "NaN positions differ from the reference"
    if not a.size:
        return
    excess = np.where(nan, -np.inf, np.abs(a - expected) - bound)
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 0, f"at {worst}: got {a[worst]}, want {expected[worst]}, bound {bound[worst]}"


# W8A16: float32 roundings per term besides its lane's sequential sum (one per
# k / W8A16_LANES step): the six levels of the reduction tree, the w_scale
# product and the bias add.
W8A16_FP32_ROUNDINGS_PLUS_LANE_STEPS = 8
