"""slimops.convert / slimops.to_float and fine-tuning after quantization."""

import pytest
import torch
from torch import nn

import slimops
from slimops.nn import QuantConfig, QuantLinear


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Sequential(nn.Linear(64, 64), nn.GELU()), nn.Linear(64, 8)
    )


def test_converts_every_linear_in_place():
    model = mlp()
    x = torch.randn(5, 32)
    expected = model(x)
    summary = slimops.convert(model)
    assert summary.converted == ["0", "2.0", "3"] and not summary.skipped
    assert all(type(m) is not nn.Linear for m in model.modules())
    assert 3.5 < summary.bytes_before / summary.bytes_after < 4.0
    assert "3 layers converted" in str(summary)
    assert (model(x) - expected).norm() / expected.norm() < 0.03


def test_skip_patterns_and_small_layers_stay_float():
    model = mlp()
    summary = slimops.convert(model, QuantConfig(skip=("3",), min_features=40))
    assert summary.converted == ["2.0"]
    assert summary.skipped == ["0", "3"]
    assert type(model[0]) is nn.Linear and type(model[3]) is nn.Linear
    assert isinstance(model[2][0], QuantLinear)


def test_to_float_restores_linear_layers():
    model = mlp()
    slimops.convert(model)
    x = torch.randn(4, 32)
    quantized_out = model[0](x)
    slimops.to_float(model)
    assert all(not isinstance(m, QuantLinear) for m in model.modules())
    # The float layer computes with the dequantized weight: close to the W8A8 output.
    torch.testing.assert_close(model[0](x), quantized_out, rtol=0.02, atol=0.02)


def test_progress_bar_is_optional():
    pytest.importorskip("tqdm")
    assert slimops.convert(mlp(), progress=True).converted


def test_unsupported_configuration_is_refused_before_any_change():
    model = mlp()
    with pytest.raises(ValueError, match="weight_bits"):
        slimops.convert(model, QuantConfig(weight_bits=4, act_bits=4))
    assert all(type(m) is not QuantLinear for m in model.modules())


def test_four_bit_conversion_skips_layers_the_group_does_not_divide():
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 8))
    summary = slimops.convert(model, QuantConfig(weight_bits=4, act_bits=None, group_size=32))
    assert summary.converted == ["0"] and summary.skipped == ["2"]
    assert model[0].weight_bits == 4 and model[0].act_bits is None


def test_fine_tuning_after_quantization_lowers_the_loss():
    torch.manual_seed(0)
    teacher = mlp(seed=1)
    student = mlp(seed=1)
    with torch.no_grad():  # perturb, so there is something to recover
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    for name in ("0", "3"):
        setattr(student, name, QuantLinear.from_linear(getattr(student, name), finetune=True))
    student[2][0] = QuantLinear.from_linear(student[2][0], finetune=True)
    x = torch.randn(256, 32)
    target = teacher(x).detach()

    def eval_loss():
        student.eval()
        with torch.no_grad():
            return nn.functional.mse_loss(student(x), target).item()

    before = eval_loss()
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    student.train()
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.mse_loss(student(x), target)
        loss.backward()
        opt.step()
    assert student[0].weight.grad is not None
    after = eval_loss()  # eval() re-packed the master weights into int8
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("config", [(8, 8, -1, True), (4, 8, 8, False), (4, None, 16, True)])
def test_enable_finetuning_starts_from_the_quantized_weight(config):
    m = QuantLinear.from_linear(nn.Linear(16, 8), *config).enable_finetuning()
    torch.testing.assert_close(m.weight.detach(), m.dequantized_weight())
    m.train()
    x = torch.randn(3, 16, requires_grad=True)
    m(x).sum().backward()
    assert m.weight.grad is not None and x.grad is not None
