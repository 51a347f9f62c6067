"""slimops.nn.QuantLinear: a drop-in nn.Linear running int8_linear (W8A8),
w4a8_linear (W4A8) or w4a16_linear (W4A16)."""

import io

import pytest
import torch
from torch import nn

import slimops
from slimops.nn import QuantLinear


def linear(k=64, n=48, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(k, n, bias=bias)


# (weight_bits, act_bits, group_size, symmetric), and the relative error allowed against the float layer.
CONFIGS = [
    ((8, 8, -1, True), 0.02),
    ((8, None, -1, True), 0.01),
    ((4, 8, 32, True), 0.15),
    ((4, None, 16, False), 0.1),
    ((4, None, -1, True), 0.2),
]
CONFIG_IDS = ["w8a8", "w8a16", "w4a8-g32", "w4a16-g16-asym", "w4a16-channel"]


@pytest.mark.parametrize("config,tolerance", CONFIGS, ids=CONFIG_IDS)
def test_close_to_the_float_layer(config, tolerance):
    lin = linear()
    x = torch.randn(8, 64)
    y = QuantLinear.from_linear(lin, *config)(x)
    ref = lin(x)
    assert (y - ref).norm() / ref.norm() < tolerance


@pytest.mark.parametrize("bias", [True, False])
def test_forward_is_the_op(bias):
    m = QuantLinear.from_linear(linear(bias=bias))
    x = torch.randn(2, 3, 64)
    y = torch.ops.slimops.int8_linear(x, m.qweight, m.weight_scale, m.bias)
    assert torch.equal(m(x), y)
    assert m(x).shape == (2, 3, 48)
    m16 = QuantLinear.from_linear(linear(bias=bias), 8, None)
    assert torch.equal(m16(x), torch.ops.slimops.w8a16_linear(x, m16.qweight, m16.weight_scale, m16.bias))
    m4 = QuantLinear.from_linear(linear(bias=bias), 4, 8, 32, False)
    y4 = torch.ops.slimops.w4a8_linear(x, m4.qweight, m4.weight_scale, m4.weight_zero_point, 32, m4.bias)
    assert torch.equal(m4(x), y4)


@pytest.mark.parametrize("config", [c for c, _ in CONFIGS], ids=CONFIG_IDS)
def test_dequantized_weight_matches_the_format(config):
    lin = linear()
    m = QuantLinear.from_linear(lin, *config)
    qw = slimops.quantize(lin.weight.detach(), bits=config[0], group_size=config[2], symmetric=config[3])
    assert torch.equal(m.dequantized_weight(), qw.dequantize())
    assert torch.equal(m.to_linear().weight, qw.dequantize())


@pytest.mark.parametrize("config", [c for c, _ in CONFIGS], ids=CONFIG_IDS)
def test_state_dict_round_trip_is_bit_exact(config):
    m = QuantLinear.from_linear(linear(), *config)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    m2 = QuantLinear(64, 48, True, *config)
    m2.load_state_dict(torch.load(buf, weights_only=True))
    for key, value in m.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(m2.state_dict()[key], value), key
    x = torch.randn(5, 64)
    assert torch.equal(m(x), m2(x))


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda sd: sd.__setitem__("qweight", sd["qweight"].float()), "qweight"),
        (lambda sd: sd.__setitem__("qweight", sd["qweight"][:, :10]), "qweight"),
        (lambda sd: sd.__setitem__("weight_scale", sd["weight_scale"].half()), "weight_scale"),
        (lambda sd: sd.__setitem__("weight_scale", sd["weight_scale"] * float("inf")), "NaN or Inf"),
        (lambda sd: sd.__setitem__("_extra_state", {**sd["_extra_state"], "version": 9}), "version"),
        (lambda sd: sd.__setitem__("_extra_state", {**sd["_extra_state"], "weight_bits": 4}), "saved with"),
        (lambda sd: sd.__setitem__("_extra_state", {"format": "other"}), "format"),
    ],
)
def test_corrupted_state_dict_is_refused(change, match):
    sd = QuantLinear.from_linear(linear()).state_dict()
    change(sd)
    m = QuantLinear(64, 48)
    before = {k: v.clone() for k, v in m.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(RuntimeError, match=match):
        m.load_state_dict(sd)
    for key, value in before.items():  # the refused module is left as it was
        assert torch.equal(m.state_dict()[key], value), key


def test_corrupted_layer_inside_a_model_is_named():
    model = nn.Sequential(QuantLinear.from_linear(linear()), QuantLinear.from_linear(linear(48, 16)))
    sd = model.state_dict()
    sd["1.qweight"] = sd["1.qweight"].float()
    fresh = nn.Sequential(QuantLinear(64, 48), QuantLinear(48, 16))
    with pytest.raises(RuntimeError, match=r"1\.: qweight"):
        fresh.load_state_dict(sd)
    assert not fresh[1].qweight.any()


def test_missing_format_tag_is_refused_only_when_strict():
    sd = QuantLinear.from_linear(linear()).state_dict()
    del sd["_extra_state"]
    m = QuantLinear(64, 48)
    with pytest.raises(RuntimeError, match="Missing key.*_extra_state"):
        m.load_state_dict(sd)
    m.load_state_dict(sd, strict=False)
    assert torch.equal(m.qweight, sd["qweight"])


def test_torch_compile_fullgraph():
    model = nn.Sequential(QuantLinear.from_linear(linear()), nn.ReLU(), QuantLinear.from_linear(linear(48, 16)))
    x = torch.randn(4, 64)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))


def test_gradients_reach_input_and_bias():
    m = QuantLinear.from_linear(linear())
    x = torch.randn(3, 64, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and m.bias.grad is not None
    torch.testing.assert_close(x.grad, m.dequantized_weight().sum(0).expand(3, 64))


def test_bad_construction():
    with pytest.raises(TypeError, match="nn.Linear"):
        QuantLinear.from_linear(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="weight_bits"):
        QuantLinear.from_linear(linear(), weight_bits=4, act_bits=4)
    with pytest.raises(ValueError, match="weight_bits"):
        QuantLinear.from_linear(linear(), weight_bits=3)
    with pytest.raises(ValueError, match="per output channel"):
        QuantLinear.from_linear(linear(), weight_bits=8, group_size=32)
    with pytest.raises(ValueError, match="does not divide"):
        QuantLinear.from_linear(linear(), weight_bits=4, group_size=48)


def test_corrupted_zero_points_are_refused():
    sd = QuantLinear.from_linear(linear(), 4, 8, 32, False).state_dict()
    sd["weight_zero_point"] = sd["weight_zero_point"] + 16
    with pytest.raises(RuntimeError, match="outside 0..15"):
        QuantLinear(64, 48, True, 4, 8, 32, False).load_state_dict(sd)


def test_half_inputs():
    m = QuantLinear.from_linear(linear())
    x = torch.randn(2, 64)
    for dtype in (torch.float16, torch.bfloat16):
        y = m(x.to(dtype))
        assert y.dtype == dtype
        torch.testing.assert_close(y.float(), m(x.to(dtype).float()), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("config", [c for c, _ in CONFIGS], ids=CONFIG_IDS)
def test_model_half_keeps_float32_scales(config):
    m = QuantLinear.from_linear(linear(), *config).half()
    assert m.weight_scale.dtype == torch.float32 and m.bias.dtype == torch.float16
    x = torch.randn(2, 64).half()
    assert m(x).dtype == torch.float16


def test_fine_tuning_in_half_precision():
    m = QuantLinear.from_linear(linear(), finetune=True).bfloat16()
    m.train()
    x = torch.randn(3, 64, dtype=torch.bfloat16, requires_grad=True)
    m(x).float().sum().backward()
    assert m.weight.grad is not None and x.grad is not None


def test_loading_without_a_master_weight_refreshes_it():
    trained = QuantLinear.from_linear(linear(seed=1), finetune=True)
    plain = QuantLinear.from_linear(linear(seed=2)).state_dict()
    trained.load_state_dict(plain, strict=False)
    torch.testing.assert_close(trained.weight.detach(), trained.dequantized_weight())
    trained.train()
    trained.eval()  # re-packs the master weight: must give back what was loaded
    assert torch.equal(trained.qweight, plain["qweight"])


def test_per_tensor_is_refused_clearly():
    with pytest.raises(ValueError, match="not per tensor"):
        QuantLinear(64, 48, weight_bits=4, group_size=0)
