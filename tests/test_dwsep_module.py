"""DWSepConv2d, fold_bn and fuse_dwsep against the unfused torch modules in eval mode."""

import pytest
import torch
from torch import nn

import slimops
from slimops.nn import DWSepConv2d, fold_bn, fuse_dwsep

DTYPES = (torch.float32, torch.float64)
# The fused chain against torch's unfused one: two convolutions, BN folding and
# the activations round differently, far below these bounds.
TOLERANCE = {torch.float32: {"rtol": 1e-4, "atol": 1e-4}, torch.float64: {"rtol": 1e-9, "atol": 1e-10}}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_bn(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from the identity, so folding matters."""
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 1.5)
                if bn.affine:
                    bn.weight.uniform_(0.5, 1.5)
                    bn.bias.uniform_(-0.5, 0.5)
    return model


def dwsep_chain(c=8, o=12, kernel_size=3, stride=1, padding=1, dilation=1, bias=True, bn=True,
                act1=None, act2=None) -> dict:
    """from_modules keyword arguments of a chain of standard torch modules."""
    parts = {"dw_conv": nn.Conv2d(c, c, kernel_size, stride, padding, dilation, groups=c, bias=bias),
             "pw_conv": nn.Conv2d(c, o, 1, bias=bias), "act1": act1, "act2": act2}
    if bn:
        parts["bn1"], parts["bn2"] = nn.BatchNorm2d(c), nn.BatchNorm2d(o)
    return parts


def unfused(parts: dict) -> nn.Sequential:
    order = ("dw_conv", "bn1", "act1", "pw_conv", "bn2", "act2")
    return randomize_bn(nn.Sequential(*(parts[k] for k in order if parts.get(k) is not None))).eval()


def assert_fused_matches(parts, dtype, x_shape=(2, 8, 11, 11), memory_format=torch.contiguous_format):
    reference = unfused(parts).to(dtype)
    fused = DWSepConv2d.from_modules(**parts)
    assert fused.dw_weight.dtype == dtype
    x = torch.randn(x_shape, dtype=dtype).contiguous(memory_format=memory_format)
    y = fused(x)
    expected = reference(x)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, **TOLERANCE[dtype])
    return y


# ---- fold_bn -----------------------------------------------------------------------------
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_fold_bn_matches_conv_then_bn(bias, affine):
    conv = nn.Conv2d(6, 10, 3, padding=1, bias=bias).double()
    bn = randomize_bn(nn.BatchNorm2d(10, affine=affine)).double().eval()
    weight, folded_bias = fold_bn(conv, bn)
    assert weight.dtype == folded_bias.dtype == torch.float64 and not weight.requires_grad
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(nn.functional.conv2d(x, weight, folded_bias, padding=1), bn(conv(x)),
                               rtol=1e-12, atol=1e-12)


def test_fold_bn_returns_the_conv_dtype():
    conv = nn.Conv2d(4, 4, 3, groups=4).half()
    weight, bias = fold_bn(conv, randomize_bn(nn.BatchNorm2d(4)))
    assert weight.dtype == bias.dtype == torch.float16


@pytest.mark.parametrize("bn, message", [
    (nn.BatchNorm2d(5), "5 features but the conv has 4 output channels"),
    (nn.BatchNorm2d(4, track_running_stats=False), "no running statistics"),
    (nn.BatchNorm1d(4), "expected an nn.BatchNorm2d"),
])
def test_fold_bn_refuses(bn, message):
    with pytest.raises(ValueError, match=message):
        fold_bn(nn.Conv2d(4, 4, 3, groups=4), bn)


# ---- from_modules against the unfused modules ---------------------------------------------
ACTIVATION_PAIRS = [
    (None, None),
    (nn.ReLU6(inplace=True), nn.Identity()),
    (nn.ReLU(), nn.ReLU()),
    (nn.SiLU(), nn.Hardswish()),
    (nn.Hardswish(), nn.SiLU()),
    (nn.Identity(), nn.ReLU6()),
    (nn.Hardtanh(0.0, 6.0), nn.Hardtanh(0.0, 6.0)),
]


@pytest.mark.parametrize("act1, act2", ACTIVATION_PAIRS, ids=lambda a: type(a).__name__)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_activation(dtype, act1, act2):
    assert_fused_matches(dwsep_chain(act1=act1, act2=act2), dtype)


GEOMETRIES = {  # kernel_size, stride, padding, dilation
    "k3": (3, 1, 1, 1),
    "k3 stride 2": (3, 2, 1, 1),
    "k5": (5, 1, 2, 1),
    "k5 stride 2": (5, 2, 2, 1),
    "k7": (7, 1, 3, 1),
    "k3 dilation 2": (3, 1, 2, 2),
    "k3 dilation 2 same": (3, 1, "same", 2),
    "k4 same (asymmetric)": (4, 1, "same", 1),
    "k(3, 5) stride (1, 2) padding (0, 2)": ((3, 5), (1, 2), (0, 2), 1),
    "valid": (3, 1, "valid", 1),
}


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=list(GEOMETRIES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_sizes_strides_padding(dtype, geometry, memory_format):
    kernel_size, stride, padding, dilation = geometry
    parts = dwsep_chain(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                        act1=nn.ReLU6(), act2=nn.SiLU())
    y = assert_fused_matches(parts, dtype, memory_format=memory_format)
    assert y.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("bn", [True, False], ids=["bn", "no bn"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_and_batchnorm(dtype, bias, bn):
    parts = dwsep_chain(bias=bias, bn=bn, act1=nn.ReLU())
    assert_fused_matches(parts, dtype)
    fused = DWSepConv2d.from_modules(**parts)
    has_bias = bias or bn
    assert (fused.dw_bias is not None) == has_bias and (fused.pw_bias is not None) == has_bias


@pytest.mark.parametrize("dtype", DTYPES)
def test_residual(dtype):
    parts = dwsep_chain(o=8, padding="same", act1=nn.ReLU6())
    reference = unfused(parts).to(dtype)
    fused = DWSepConv2d.from_modules(**parts, residual=True)
    x = torch.randn(2, 8, 9, 9, dtype=dtype)
    torch.testing.assert_close(fused(x), reference(x) + x, **TOLERANCE[dtype])
    torch.testing.assert_close(fused.to_modules()(x), reference(x) + x, **TOLERANCE[dtype])


@pytest.mark.parametrize("parts", [dwsep_chain(o=12), dwsep_chain(o=8, stride=2)], ids=["O != C", "stride 2"])
def test_residual_refused_where_the_shapes_differ(parts):
    with pytest.raises(ValueError, match="residual needs out_channels == in_channels, stride 1"):
        DWSepConv2d.from_modules(**parts, residual=True)


@pytest.mark.parametrize("padding", [1, "same", (0, 2)])
def test_to_modules_computes_the_same(padding):
    parts = dwsep_chain(kernel_size=(3, 4), padding=padding, act1=nn.Hardswish(), act2=nn.ReLU())
    unfused(parts).double()
    fused = DWSepConv2d.from_modules(**parts)
    x = torch.randn(2, 8, 10, 10, dtype=torch.float64)
    torch.testing.assert_close(fused.to_modules()(x), fused(x), **TOLERANCE[torch.float64])


# ---- refused configurations ----------------------------------------------------------------
class Conv2dSubclass(nn.Conv2d):
    pass


# from_modules arguments replacing those of dwsep_chain(), what the error names, and whether
# fuse_dwsep reports the chain (it does where the depthwise conv and the 1x1 conv are there).
UNSUPPORTED = {
    "groups != C": ({"dw_conv": nn.Conv2d(8, 8, 3, padding=1, groups=4)}, "groups == in_channels == out_channels",
                    False),
    "channel multiplier 2": ({"dw_conv": nn.Conv2d(8, 16, 3, padding=1, groups=8), "bn1": nn.BatchNorm2d(16),
                              "pw_conv": nn.Conv2d(16, 12, 1)}, "channel multiplier 1", True),
    "padding_mode reflect": ({"dw_conv": nn.Conv2d(8, 8, 3, padding=1, groups=8, padding_mode="reflect")},
                             "padding_mode='reflect'", True),
    "1x1 stride 2": ({"pw_conv": nn.Conv2d(8, 12, 1, stride=2)}, r"stride=\(2, 2\)", True),
    "pw 3x3": ({"pw_conv": nn.Conv2d(8, 12, 3, padding=1)}, r"kernel_size=\(3, 3\)", False),
    "pw groups 2": ({"pw_conv": nn.Conv2d(8, 12, 1, groups=2)}, "groups=2", True),
    "unknown activation": ({"act1": nn.GELU()}, "act1 is GELU", True),
    "conv subclass": ({"dw_conv": Conv2dSubclass(8, 8, 3, padding=1, groups=8)}, "got Conv2dSubclass", False),
    "BN of the wrong size": ({"bn2": nn.BatchNorm2d(8)}, "8 features but the conv has 12 output channels", True),
}
# fuse_dwsep fuses the chain before an unsupported act2 and leaves the activation after it.
REFUSED = {**UNSUPPORTED, "act2 Hardtanh(-1, 1)": ({"act2": nn.Hardtanh()}, "act2 is Hardtanh", None)}


@pytest.mark.parametrize("change, message, reported", REFUSED.values(), ids=list(REFUSED))
def test_from_modules_refuses(change, message, reported):
    with pytest.raises(ValueError, match=message):
        DWSepConv2d.from_modules(**{**dwsep_chain(), **change})


def test_constructor_refuses():
    with pytest.raises(ValueError, match="'same' needs stride 1"):
        DWSepConv2d(8, 8, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="act1='gelu' is not one of"):
        DWSepConv2d(8, 8, act1="gelu")


@pytest.mark.parametrize("change, message, reported", UNSUPPORTED.values(), ids=list(UNSUPPORTED))
def test_fuse_dwsep_leaves_unsupported_chains(change, message, reported):
    model = unfused({**dwsep_chain(), **change})
    before = list(model)
    summary = fuse_dwsep(model)
    assert summary.fused == [] and list(model) == before
    if reported:
        assert list(summary.skipped) == ["0"]
        assert summary.skipped["0"].startswith("DWSepConv2d.from_modules:") or "fold_bn" in summary.skipped["0"]
    else:
        assert summary.skipped == {}


def test_fuse_dwsep_stops_before_an_unsupported_act2():
    model = unfused(dwsep_chain(act2=nn.Hardtanh(-1.0, 1.0))).double()
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    expected = model(x)
    assert fuse_dwsep(model).fused == ["0"]
    assert [type(m) for m in model] == [DWSepConv2d, nn.Identity, nn.Identity, nn.Identity, nn.Hardtanh]
    torch.testing.assert_close(model(x), expected, **TOLERANCE[torch.float64])


# ---- whole networks ----------------------------------------------------------------------------
def conv_bn_act(c_in, c_out, kernel_size, stride=1, groups=1, act=nn.ReLU6):
    """torchvision's Conv2dNormActivation shape: an nn.Sequential of conv, BN, activation."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), act(inplace=True))


class SqueezeExcite(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 4, 1)
        self.expand = nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: [1x1 expand ConvBNAct,] depthwise ConvBNAct, [SE,] 1x1 conv, BN in .conv; the
    residual add in forward."""

    def __init__(self, c_in, c_out, stride, expand, kernel_size=3, act=nn.ReLU6, squeeze_excite=False):
        super().__init__()
        hidden = c_in * expand
        layers = [conv_bn_act(c_in, hidden, 1, act=act)] if expand != 1 else []
        layers.append(conv_bn_act(hidden, hidden, kernel_size, stride, groups=hidden, act=act))
        layers += [SqueezeExcite(hidden)] if squeeze_excite else []
        layers += [nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_residual else y


class Classifier(nn.Module):
    def __init__(self, features, channels):
        super().__init__()
        self.features = features
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(channels, 10))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def mobilenet_v2_style():
    features = nn.Sequential(conv_bn_act(3, 16, 3, stride=2), InvertedResidual(16, 8, 1, expand=1),
                             InvertedResidual(8, 12, 2, expand=6), InvertedResidual(12, 12, 1, expand=6),
                             conv_bn_act(12, 32, 1))
    return randomize_bn(Classifier(features, 32)).eval()


def efficientnet_style():
    silu = {"act": nn.SiLU}
    features = nn.Sequential(conv_bn_act(3, 16, 3, stride=2, **silu), InvertedResidual(16, 16, 1, 1, **silu),
                             InvertedResidual(16, 24, 2, 6, kernel_size=5, **silu),
                             InvertedResidual(24, 24, 1, 6, kernel_size=5, **silu),
                             InvertedResidual(24, 24, 1, 6, kernel_size=5, squeeze_excite=True, **silu))
    return randomize_bn(Classifier(features, 24)).eval()


def chain_members(block: str, expand: int) -> set[str]:
    """Names of the modules fusing an InvertedResidual's chain replaces: conv[dw] (conv, BN, act), the 1x1
    conv and its BN."""
    dw = 0 if expand == 1 else 1
    return {f"{block}.conv.{dw}.{i}" for i in range(3)} | {f"{block}.conv.{dw + 1}", f"{block}.conv.{dw + 2}"}


NETWORKS = {  # builder, {block name: expand ratio} of the blocks that fuse
    "mobilenet_v2": (mobilenet_v2_style, {"features.1": 1, "features.2": 6, "features.3": 6}),
    "efficientnet": (efficientnet_style, {"features.1": 1, "features.2": 6, "features.3": 6}),
}


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fuse_dwsep_network(dtype, network):
    build, blocks = NETWORKS[network]
    model = build().to(dtype)
    x = torch.randn(2, 3, 32, 32, dtype=dtype)
    with torch.no_grad():
        expected = model(x)
    leaves_before = {name: m for name, m in model.named_modules() if not list(m.children())}
    state_before = {k: v.clone() for k, v in model.state_dict().items()}

    summary = fuse_dwsep(model)

    fused_names = [f"{block}.conv.{0 if expand == 1 else 1}.0" for block, expand in blocks.items()]
    assert summary.fused == fused_names and summary.skipped == {}
    assert f"{len(fused_names)} blocks fused" in str(summary)
    modules = dict(model.named_modules())
    members = set().union(*(chain_members(block, expand) for block, expand in blocks.items()))
    for name, module in leaves_before.items():
        if name in fused_names:
            assert isinstance(modules[name], DWSepConv2d) and not modules[name].residual
        elif name in members:
            assert type(modules[name]) is nn.Identity
        else:
            assert modules[name] is module, name
    state_after = model.state_dict()
    for key, value in state_before.items():
        if key.rpartition(".")[0] not in members:
            torch.testing.assert_close(state_after[key], value, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_fuse_dwsep_mobilenet_v1_pair(dtype):
    """A depthwise ConvBNAct followed by a 1x1 ConvBNAct: both nested, with act2."""
    model = randomize_bn(nn.Sequential(conv_bn_act(8, 8, 3, groups=8), conv_bn_act(8, 16, 1))).eval().to(dtype)
    x = torch.randn(2, 8, 10, 10, dtype=dtype)
    expected = model(x)
    summary = fuse_dwsep(model)
    assert summary.fused == ["0.0"]
    assert (model[0][0].act1, model[0][0].act2) == ("relu6", "relu6")
    assert all(type(m) is nn.Identity for m in (*model[0][1:], *model[1]))
    torch.testing.assert_close(model(x), expected, **TOLERANCE[dtype])


def test_fuse_dwsep_twice_changes_nothing():
    model = mobilenet_v2_style()
    fuse_dwsep(model)
    again = fuse_dwsep(model)
    assert again.fused == [] and again.skipped == {}


# ---- training, state_dict, dtypes ------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_match_the_unfused_chain(dtype):
    fused = DWSepConv2d.from_modules(**dwsep_chain(kernel_size=5, stride=2, padding=2, act1=nn.SiLU(),
                                                   act2=nn.ReLU6())).to(dtype).train()
    reference = fused.to_modules()
    x = torch.randn(2, 8, 11, 11, dtype=dtype, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.randn_like(fused(x))
    fused(x).backward(grad)
    reference(x_ref).backward(grad)
    dw, pw = (m for m in reference.modules() if isinstance(m, nn.Conv2d))
    pairs = [(x, x_ref), (fused.dw_weight, dw.weight), (fused.dw_bias, dw.bias), (fused.pw_weight, pw.weight),
             (fused.pw_bias, pw.bias)]
    for ours, theirs in pairs:
        torch.testing.assert_close(ours.grad, theirs.grad, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_reach_every_parameter_of_a_fused_network(dtype):
    model = mobilenet_v2_style().to(dtype)
    fuse_dwsep(model)
    model.train()
    model(torch.randn(2, 3, 32, 32, dtype=dtype)).square().sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        if ".dw_" in name or ".pw_" in name:
            assert param.grad.abs().sum() > 0, name


def test_state_dict_round_trip():
    fused = DWSepConv2d.from_modules(**dwsep_chain(act1=nn.ReLU6()))
    state = fused.state_dict()
    assert set(state) == {"dw_weight", "dw_bias", "pw_weight", "pw_bias"}
    fresh = DWSepConv2d(8, 12, 3, padding=1, act1="relu6")
    fresh.load_state_dict(state)
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(fresh.double()(x), fused.double()(x), rtol=0, atol=0)


def test_state_dict_round_trip_of_a_fused_network():
    model, copy = mobilenet_v2_style(), mobilenet_v2_style()
    fuse_dwsep(model)
    fuse_dwsep(copy)
    copy.load_state_dict(model.state_dict())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(copy.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("cast, dtype", [(nn.Module.half, torch.float16),
                                         (lambda m: m.to(torch.bfloat16), torch.bfloat16)], ids=["half", "bfloat16"])
def test_half_moves_every_weight(cast, dtype):
    fused = DWSepConv2d.from_modules(**dwsep_chain(act1=nn.ReLU6()))
    model = mobilenet_v2_style()
    fuse_dwsep(model)
    for module in (fused, model):
        cast(module)
        assert all(p.dtype == dtype for p in module.parameters())
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    y = fused(x.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), fused.double()(x), rtol=0.05, atol=0.05)


def test_extra_repr():
    fused = DWSepConv2d.from_modules(**dwsep_chain(kernel_size=4, padding="same", act1=nn.ReLU6(), bias=False,
                                                   bn=False))
    assert repr(fused) == ("DWSepConv2d(8, 12, kernel_size=(4, 4), stride=(1, 1), padding=(1, 2, 1, 2), "
                           "dilation=(1, 1), act1='relu6', act2='none', residual=False, dw_bias=False, pw_bias=False)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_channels_last_network(dtype):
    """model.to(memory_format=channels_last) lays the 4-D weights out NHWC too; outputs follow the input."""
    model = mobilenet_v2_style().to(dtype)
    x = torch.randn(2, 3, 32, 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x)
        fuse_dwsep(model)
        model.to(memory_format=torch.channels_last)
        block = model.features[2].conv[1][0]
        assert block.dw_weight.is_contiguous(memory_format=torch.channels_last)
        block_input = torch.randn(1, 48, 8, 8, dtype=dtype).contiguous(memory_format=torch.channels_last)
        assert block(block_input).is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x), expected, **TOLERANCE[dtype])


def test_slimops_convert_fuses_with_a_dwsep_config_and_skips_by_name():
    build, blocks = NETWORKS["mobilenet_v2"]
    model, reference = build().eval(), build().eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 32, 32)
    names = [f"{block}.conv.{0 if expand == 1 else 1}.0" for block, expand in blocks.items()]
    summary = slimops.convert(model, slimops.DWSepConfig(skip=(names[0],)))
    assert summary.fused == names[1:] and summary.skipped == {names[0]: "skipped by name"}
    assert type(dict(model.named_modules())[names[0]]) is nn.Conv2d
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), **TOLERANCE[torch.float32])
    with pytest.raises(ValueError, match="calibrate"):
        slimops.convert(model, slimops.DWSepConfig(), calibrate=lambda m: None)
