"""slimops.quantize / slimops.quantization (torch) against slimops.reference.quant (NumPy), bit for
bit, and the QuantizedWeight format's round trip and validation."""

import io

import numpy as np
import pytest
import torch

import slimops
from slimops import QuantizedWeight
from slimops import quantization as qmod
from slimops import reference as ref

CASES = [(bits, g, sym) for bits in (4, 8) for g in (0, -1, 32) for sym in (True, False)]


def weight(n=24, k=96, seed=0):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05


@pytest.mark.parametrize("bits,group_size,symmetric", CASES)
def test_matches_reference_bit_for_bit(bits, group_size, symmetric):
    w = weight()
    qw = slimops.quantize(w, bits=bits, group_size=group_size, symmetric=symmetric)
    q_ref, s_ref, zp_ref = ref.quantize(w.numpy(), bits, group_size, symmetric)
    np.testing.assert_array_equal(qw.int_values().numpy(), q_ref)
    np.testing.assert_array_equal(qw.scale.numpy(), s_ref)
    if symmetric:
        assert qw.zero_point is None
    else:
        np.testing.assert_array_equal(qw.zero_point.numpy(), zp_ref)
    if bits == 4:
        np.testing.assert_array_equal(qw.qdata.numpy(), ref.pack_int4(q_ref, symmetric))
    np.testing.assert_array_equal(qw.dequantize().numpy(), ref.dequantize(q_ref, s_ref, zp_ref, group_size))


@pytest.mark.parametrize("bits,group_size,symmetric", CASES)
def test_state_dict_round_trip_is_bit_exact(bits, group_size, symmetric):
    qw = slimops.quantize(weight(), bits=bits, group_size=group_size, symmetric=symmetric)
    buf = io.BytesIO()
    torch.save(qw.state_dict(), buf)
    buf.seek(0)
    back = QuantizedWeight.from_state_dict(torch.load(buf))
    for key, value in qw.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert torch.equal(back.dequantize(), qw.dequantize())


def test_odd_k_int4_packing():
    w = weight(5, 7)
    qw = slimops.quantize(w, bits=4, group_size=-1)
    assert qw.qdata.shape == (5, 4)
    np.testing.assert_array_equal(qw.int_values().numpy(), ref.quantize(w.numpy(), 4, -1, True)[0])


def corrupt(**changes):
    state = dict(slimops.quantize(weight(), bits=8, group_size=32, symmetric=False).state_dict())
    state.update(changes)
    return state


@pytest.mark.parametrize(
    "state,match",
    [
        (corrupt(meta=torch.tensor([2, 8, 32, 0, 96])), "version 2"),
        (corrupt(meta=torch.tensor([1, 3, 32, 0, 96])), "bits"),
        (corrupt(meta=torch.tensor([1, 8, 40, 0, 96])), "group_size"),
        (corrupt(meta=torch.tensor([1, 8, 32, 0, 64])), "qdata"),
        (corrupt(qdata=torch.zeros(24, 96, dtype=torch.int8)), "qdata"),
        (corrupt(scale=torch.ones(24, 2)), "scale"),
        (corrupt(scale=torch.full((24, 3), float("nan"))), "NaN"),
        (corrupt(zero_point=torch.full((24, 3), 300, dtype=torch.int32)), "zero_point"),
        (corrupt(zero_point=torch.zeros(24, 3)), "zero_point"),
        ({"qdata": torch.zeros(1)}, "missing"),
        (
            {**slimops.quantize(weight(), bits=4, group_size=32).state_dict(), "qdata": torch.zeros(24, 48, dtype=torch.uint8)},
            "nibble is 0",
        ),
    ],
)
def test_corrupted_state_dict_is_refused(state, match):
    with pytest.raises(ValueError, match=match):
        QuantizedWeight.from_state_dict(state)


def test_bad_arguments():
    with pytest.raises(ValueError, match="does not divide"):
        slimops.quantize(weight(4, 10), group_size=4)
    with pytest.raises(ValueError, match="bits"):
        slimops.quantize(weight(), bits=3)
    with pytest.raises(ValueError, match="NaN"):
        slimops.quantize(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(TypeError, match="floating"):
        slimops.quantize(torch.ones(2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="2-D"):
        slimops.quantize(torch.ones(2, 2, 2))


def test_int4_helpers_match_reference():
    q = torch.randint(-7, 8, (3, 9), dtype=torch.int8)
    packed = qmod.pack_int4(q)
    np.testing.assert_array_equal(packed.numpy(), ref.pack_int4(q.numpy()))
    assert torch.equal(qmod.unpack_int4(packed, 9), q)


@pytest.mark.parametrize("bits,group_size,symmetric", [(8, -1, True), (4, 32, False)])
def test_safetensors_round_trip_is_bit_exact(tmp_path, bits, group_size, symmetric):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    qw = slimops.quantize(weight(), bits=bits, group_size=group_size, symmetric=symmetric)
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file(qw.state_dict(), str(path))
    back = QuantizedWeight.from_state_dict(safetensors_torch.load_file(str(path)))
    for key, value in qw.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
