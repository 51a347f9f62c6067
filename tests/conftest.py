"""Shared fixtures and the tolerance table for every test."""

import os

# Triton kernels run in its CPU interpreter unless a GPU run sets this to 0.
os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
import torch

from slimops import _C

ALL_CPU_ISAS = ("scalar", "avx2", "avx512_vnni")

# Relative error allowed per output dtype, as a multiple of that dtype's unit
# roundoff, against the float64 reference's magnitude (sum of |terms|): the
# error of the same computation done in that precision.
ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
ROUNDOFF_MULTIPLE = 8


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


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy() if t.dtype in (torch.float16, torch.bfloat16) else t.detach().cpu().numpy()


def assert_within_roundoff(actual: torch.Tensor, expected: np.ndarray, magnitude: np.ndarray, dtype: torch.dtype):
    """|actual - expected| <= k * u(dtype) * magnitude, elementwise, NaN where expected is NaN."""
    a = to_numpy(actual).astype(np.float64)
    assert a.shape == expected.shape, (a.shape, expected.shape)
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(a), nan), "NaN positions differ from the reference"
    bound = ROUNDOFF_MULTIPLE * ROUNDOFF[dtype] * magnitude + 1e-30
    err = np.abs(a - expected)
    bad = (err > bound) & ~nan
    assert not bad.any(), f"{bad.sum()} elements off; worst error {err[bad].max()} vs bound {bound[bad].min()}"
