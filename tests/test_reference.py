"""Properties of the NumPy references themselves (they are the source of truth,
so they get tests of their own)."""

import ast
import pathlib

import numpy as np
import pytest

from slimops import reference as ref

REFERENCE_DIR = pathlib.Path(ref.__file__).parent


def test_reference_imports_numpy_only():
    for path in REFERENCE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] in {"numpy"}, f"{path.name} imports {name}"


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [0, -1, 16])
@pytest.mark.parametrize("symmetric", [True, False])
def test_round_trip_error_is_at_most_half_a_step(bits, group_size, symmetric):
    w = np.random.default_rng(0).standard_normal((12, 64)).astype(np.float32)
    q, scale, zp = ref.quantize(w, bits, group_size, symmetric)
    back = ref.dequantize(q, scale, zp, group_size)
    steps = np.broadcast_to(
        scale.reshape(scale.shape[0], scale.shape[1], 1), (12 if group_size else 1, scale.shape[1], 1)
    )
    step = float(np.max(steps))
    assert np.max(np.abs(back - w)) <= step / 2 * (1 + 1e-5)
    qmin, qmax = ref.quant.qrange(bits, symmetric)
    assert q.min() >= qmin and q.max() <= qmax


def test_asymmetric_zero_is_exact():
    w = np.array([[0.0, 0.3, 0.9, 2.0]], np.float32)
    q, scale, zp = ref.quantize(w, 8, -1, False)
    assert ref.dequantize(q, scale, zp)[0, 0] == 0.0
    assert zp[0, 0] == 0  # min is 0, so the zero point is 0


def test_symmetric_scale_is_max_over_qmax():
    w = np.array([[-2.54, 1.0], [0.0, 0.0]], np.float32)
    q, scale, _ = ref.quantize(w, 8, -1, True)
    assert scale[0, 0] == np.float32(2.54) / np.float32(127)
    assert q[0, 0] == -127
    assert scale[1, 0] == 1.0 and not q[1].any()


@pytest.mark.parametrize("k", [1, 6, 7])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_pack_round_trip_and_nibble_order(k, symmetric):
    lo, hi = (-7, 7) if symmetric else (0, 15)
    q = np.random.default_rng(k).integers(lo, hi + 1, (3, k)).astype(np.int8 if symmetric else np.uint8)
    packed = ref.pack_int4(q, symmetric)
    assert packed.shape == (3, (k + 1) // 2)
    np.testing.assert_array_equal(ref.unpack_int4(packed, k, symmetric), q)
    offset = 8 if symmetric else 0
    assert packed[0, 0] & 0xF == int(q[0, 0]) + offset  # element 0 in the low nibble


def test_pack_int4_refuses_wide_values():
    with pytest.raises(ValueError):
        ref.pack_int4(np.array([[8]], np.int8), symmetric=True)


def test_group_size_must_divide_k():
    with pytest.raises(ValueError, match="multiple"):
        ref.quantize(np.ones((2, 10), np.float32), 8, 4)


def test_quantize_per_token_rounds_half_to_even():
    x = np.array([[0.5, 1.5, 2.5, -0.5, -1.5, 127.0]], np.float32)
    q, scale = ref.quantize_per_token(x)
    np.testing.assert_array_equal(q[0], [0, 2, 2, 0, -2, 127])
    assert scale[0] == 1.0


def test_quantize_per_token_special_rows():
    x = np.zeros((3, 4), np.float32)
    x[1, 2] = np.nan
    x[2] = 1e-38
    q, scale = ref.quantize_per_token(x)
    assert not q.any()
    assert scale[0] == 0 and np.isnan(scale[1]) and scale[2] > 0


def test_int8_linear_reference_is_exact_on_integers():
    x = np.array([[127.0, -3.0, 5.0]], np.float32)
    w = np.array([[-128, 127, 1], [2, 2, 2]], np.int8)
    y = ref.int8_linear(x, w, np.ones(2, np.float32))
    np.testing.assert_array_equal(y, [[127 * -128 - 3 * 127 + 5, 2 * 129]])
