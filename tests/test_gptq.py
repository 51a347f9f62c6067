"""slimops.gptq: GPTQ quantization against calibration inputs, and
slimops.convert(..., method="gptq")."""

import dataclasses

import pytest
import torch
from torch import nn

import slimops
from slimops.gptq import collect_hessians, gptq_quantize
from slimops.nn import QuantConfig, QuantLinear

# (bits, group_size, symmetric) the GPTQ weight format takes, as slimops.quantize does.
FORMATS = [(4, 128, True), (4, 128, False), (4, -1, True), (4, -1, False),
           (8, 128, True), (8, 128, False), (8, -1, True), (8, -1, False)]
FORMAT_IDS = [f"w{b}-{'channel' if g == -1 else f'g{g}'}-{'sym' if s else 'asym'}" for b, g, s in FORMATS]


def correlated_inputs(rows=2048, k=256, rank=24, seed=0):
    """Activations like a network's: a few strong shared directions, features
    of very different magnitudes, a little noise."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, rank, generator=gen) @ torch.randn(rank, k, generator=gen)
    x = x + 0.1 * torch.randn(rows, k, generator=gen)
    return x * (0.2 + 3 * torch.rand(k, generator=gen))


def weight(n=64, k=256, seed=1):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


def assert_same_quantized_weight(a, b):
    assert torch.equal(a.qdata, b.qdata) and torch.equal(a.scale, b.scale)
    assert (a.zero_point is None and b.zero_point is None) or torch.equal(a.zero_point, b.zero_point)
    assert (a.bits, a.group_size, a.symmetric, a.shape) == (b.bits, b.group_size, b.symmetric, b.shape)


@pytest.mark.parametrize("bits,group_size,symmetric", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("act_order", [False, True])
def test_without_correlations_it_is_round_to_nearest(bits, group_size, symmetric, act_order):
    # A diagonal H couples no columns: no error is passed on, and GPTQ with
    # [min, max] ranges is exactly round-to-nearest.
    w = weight()
    expected = slimops.quantize(w, bits=bits, group_size=group_size, symmetric=symmetric)
    for hessian in (7.5 * torch.eye(256, dtype=torch.float64), torch.diag(torch.rand(256, dtype=torch.float64) + 0.5)):
        got = gptq_quantize(w, hessian, bits, group_size, symmetric, act_order=act_order, search_clip=False)
        assert_same_quantized_weight(got, expected)


@pytest.mark.parametrize("bits,group_size,symmetric", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("options", [{}, {"act_order": False, "search_clip": False}], ids=["default", "plain"])
def test_output_error_is_clearly_below_round_to_nearest(bits, group_size, symmetric, options):
    x, w = correlated_inputs(), weight()
    hessian = x.double().T @ x.double()
    reference = x @ w.T

    def output_error(qw):
        return float((x @ qw.dequantize().T - reference).norm())

    gptq = gptq_quantize(w, hessian, bits, group_size, symmetric, **options)
    rtn = slimops.quantize(w, bits=bits, group_size=group_size, symmetric=symmetric)
    assert output_error(gptq) < 0.8 * output_error(rtn), (output_error(gptq), output_error(rtn))


def test_the_result_runs_in_the_ops_unchanged():
    x, w = correlated_inputs(rows=8), weight()
    qw = gptq_quantize(w, x.double().T @ x.double(), 4, 128, symmetric=False)
    y = torch.ops.slimops.w4a16_linear(x, qw.qdata, qw.scale, qw.zero_point, 128, None)
    expected = x @ qw.dequantize().T
    assert (y - expected).norm() < 0.01 * expected.norm()  # the CPU kernel rounds to bf16
    assert_same_quantized_weight(slimops.QuantizedWeight.from_state_dict(qw.state_dict()), qw)


def test_an_input_that_is_always_zero_is_rounded_to_nearest():
    x, w = correlated_inputs(), weight()
    x[:, 5] = 0
    qw = gptq_quantize(w, x.double().T @ x.double(), 8, -1, symmetric=True, act_order=False, search_clip=False)
    rtn = slimops.quantize(w, bits=8, group_size=-1, symmetric=True)
    # Column 0 sets the per-channel scale before any error arrives; column 5 takes none.
    assert torch.equal(qw.int_values()[:, 5], rtn.int_values()[:, 5])
    assert torch.equal(gptq_quantize(w, torch.zeros(256, 256), 4, 128).qdata,
                       gptq_quantize(w, torch.eye(256), 4, 128).qdata)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"hessian": torch.eye(128)}, "Hessian must be"),
        ({"hessian": torch.full((256, 256), float("nan"))}, "Hessian holds NaN"),
        ({"w": weight().index_put((torch.tensor([3]), torch.tensor([7])), torch.tensor(float("nan")))}, "NaN"),
        ({"w": torch.ones(256)}, r"\[N, K\]"),
        ({"group_size": 96}, "does not divide"),
        ({"group_size": 0}, "does not divide"),
        ({"bits": 3}, "bits"),
        ({"damp": -0.1}, "damp"),
        ({"hessian": -torch.eye(256)}, "negative diagonal"),
        ({"hessian": torch.eye(256).index_put((torch.tensor([0, 1]), torch.tensor([1, 0])), torch.tensor(5.0)),
          "damp": 0.0}, "not positive definite"),
    ],
    ids=["hessian-shape", "hessian-nan", "weight-nan", "weight-1d", "group", "per-tensor", "bits", "damp",
         "negative-diagonal", "not-positive-definite"],
)
def test_bad_input_is_refused(change, message):
    args = {"w": weight(), "hessian": torch.eye(256), "bits": 4, "group_size": 128, "damp": 0.01, **change}
    with pytest.raises(ValueError, match=message):
        gptq_quantize(args["w"], args["hessian"], args["bits"], args["group_size"], damp=args["damp"])


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 128))


def test_collect_hessians_sums_x_xt_of_every_call_in_call_order():
    model = mlp()
    batches = [correlated_inputs(rows=10, seed=s) for s in range(3)]

    def calibrate(m):
        for x in batches:
            m(x.reshape(2, 5, 256))  # leading dimensions are rows too

    hessians = collect_hessians(model, calibrate)
    assert list(hessians) == ["0", "2"]
    x = torch.cat(batches).double()
    torch.testing.assert_close(hessians["0"].xtx, x.T @ x)
    assert hessians["0"].rows == 30 and hessians["0"].xtx.dtype == torch.float64
    with torch.no_grad():
        hidden = torch.cat([nn.functional.gelu(model[0](x.reshape(2, 5, 256))).reshape(10, 256) for x in batches])
    hidden = hidden.double()
    torch.testing.assert_close(hessians["2"].xtx, hidden.T @ hidden)
    assert list(collect_hessians(model, calibrate, names=["2"])) == ["2"]
    with pytest.raises(ValueError, match="no modules named"):
        collect_hessians(model, calibrate, names=["7"])


def test_collect_hessians_sees_an_input_passed_by_keyword():
    x = torch.randn(3, 16)
    hessians = collect_hessians(nn.Linear(16, 4), lambda m: m(input=x))
    torch.testing.assert_close(hessians[""].xtx, x.double().T @ x.double())


def no_hooks_left(model):
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_hooks_are_removed_after_calibration_even_when_it_raises():
    model = mlp()
    collect_hessians(model, lambda m: m(torch.randn(4, 256)))
    assert no_hooks_left(model)

    def failing(m):
        m(torch.randn(4, 256))
        raise RuntimeError("calibration data missing")

    with pytest.raises(RuntimeError, match="calibration data missing"):
        collect_hessians(model, failing)
    assert no_hooks_left(model)
    with pytest.raises(RuntimeError, match="calibration data missing"):
        slimops.convert(model, QuantConfig(method="gptq"), calibrate=failing)
    assert no_hooks_left(model) and all(type(m) is not QuantLinear for m in model.modules())


@pytest.mark.parametrize("symmetric", [True, False])
def test_convert_with_gptq_beats_round_to_nearest_on_the_model_output(symmetric):
    calibration, held_out = correlated_inputs(rows=1280).split([1024, 256])
    config = QuantConfig(weight_bits=4, act_bits=None, group_size=128, symmetric=symmetric)
    float_model, rtn, gptq = mlp(), mlp(), mlp()
    slimops.convert(rtn, config)
    summary = slimops.convert(gptq, dataclasses.replace(config, method="gptq"), calibrate=lambda m: m(calibration))
    assert summary.converted == ["0", "2"] and all(isinstance(gptq[i], QuantLinear) for i in (0, 2))
    assert no_hooks_left(gptq)
    with torch.no_grad():
        expected = float_model(held_out)
        assert (gptq(held_out) - expected).norm() < 0.8 * (rtn(held_out) - expected).norm()


def test_convert_refuses_gptq_misuse_before_touching_the_model():
    model = mlp()
    with pytest.raises(ValueError, match="needs calibrate"):
        slimops.convert(model, QuantConfig(method="gptq"))
    with pytest.raises(ValueError, match="method must be one of"):
        slimops.convert(model, QuantConfig(method="awq"), calibrate=lambda m: m(torch.randn(2, 256)))
    with pytest.raises(ValueError, match="only used by method='gptq'"):
        slimops.convert(model, QuantConfig(), calibrate=lambda m: m(torch.randn(2, 256)))
    with pytest.raises(ValueError, match="did not run these layers.*'2'"):
        slimops.convert(model, QuantConfig(method="gptq"), calibrate=lambda m: m[0](torch.randn(2, 256)))
    assert all(type(m) is not QuantLinear for m in model.modules())


@pytest.mark.parametrize("config", [(8, 8, -1, True), (4, 8, 32, False), (4, None, 16, True)])
def test_from_quantized_is_from_linear_for_the_same_weight(config):
    bits, act_bits, group_size, symmetric = config
    linear = nn.Linear(64, 48)
    qw = slimops.quantize(linear.weight.detach(), bits=bits, group_size=group_size, symmetric=symmetric)
    built = QuantLinear.from_quantized(qw, linear.bias, act_bits=act_bits)
    expected = QuantLinear.from_linear(linear, *config)
    assert built.extra_repr() == expected.extra_repr()
    for name, tensor in expected.state_dict().items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(built.state_dict()[name], tensor), name
    x = torch.randn(3, 64)
    assert torch.equal(built(x), expected(x))
    assert QuantLinear.from_quantized(qw).bias is None


def test_from_quantized_refuses_what_quant_linear_cannot_run():
    with pytest.raises(TypeError, match="QuantizedWeight"):
        QuantLinear.from_quantized(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="per tensor"):
        QuantLinear.from_quantized(slimops.quantize(torch.randn(4, 8), bits=4, group_size=0))
    with pytest.raises(ValueError, match="8-bit"):
        QuantLinear.from_quantized(slimops.quantize(torch.randn(4, 8), bits=8, group_size=4))


def test_a_gptq_layer_saves_loads_and_fine_tunes():
    x, w = correlated_inputs(rows=64), weight()
    qw = gptq_quantize(w, x.double().T @ x.double(), 4, 128, symmetric=False)
    layer = QuantLinear.from_quantized(qw, torch.zeros(64), act_bits=None)
    fresh = QuantLinear(256, 64, weight_bits=4, act_bits=None, group_size=128, symmetric=False)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh(x), layer(x))
    layer.enable_finetuning().train()
    layer(x).sum().backward()
    assert layer.weight.grad is not None
    layer.eval()  # re-packs the master weight, by round-to-nearest
    assert torch.isfinite(layer(x)).all()
