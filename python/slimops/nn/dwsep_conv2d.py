"""DWSepConv2d: depthwise conv -> act1 -> 1x1 conv -> act2 (+ x) as one module
running torch.ops.slimops.dwsep_conv2d, built directly or from standard torch
modules with their BatchNorms folded in (fold_bn)."""

import math

import torch
from torch import nn

from .._checks import DWSEP_ACTIVATIONS

_ACTIVATION_MODULES = {"none": nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU,
                       "hardswish": nn.Hardswish}
_SUPPORTED_ACTIVATIONS = "None, nn.Identity, nn.ReLU, nn.ReLU6, nn.Hardtanh(0, 6), nn.SiLU or nn.Hardswish"


def activation_name(module: nn.Module | None) -> str | None:
    """The op's name for an activation module (None for no activation), or
    None when the op has no such activation. Types are matched exactly: a
    subclass may compute something else."""
    if module is None:
        return "none"
    if type(module) is nn.Hardtanh and (module.min_val, module.max_val) == (0.0, 6.0):
        return "relu6"
    return next((name for name, cls in _ACTIVATION_MODULES.items() if type(module) is cls), None)


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of conv followed by bn, with bn's running statistics
    (what bn computes in eval mode, whatever its mode): computed in float64, returned
    in conv.weight's dtype, detached."""
    if type(bn) is not nn.BatchNorm2d:
        raise ValueError(f"fold_bn: expected an nn.BatchNorm2d, got {type(bn).__name__}")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"fold_bn: the BatchNorm2d has {bn.num_features} features but the conv has "
                         f"{conv.out_channels} output channels")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fold_bn: the BatchNorm2d has no running statistics (track_running_stats=False), "
                         "so it normalizes with batch statistics and cannot be folded")
    weight = conv.weight.detach().double()
    bias = torch.zeros_like(bn.running_mean, dtype=torch.float64) if conv.bias is None else conv.bias.detach().double()
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        scale = scale * bn.weight.detach().double()
        shift = shift * bn.weight.detach().double() + bn.bias.detach().double()
    weight = weight * scale.reshape(-1, 1, 1, 1)
    bias = bias * scale + shift
    return weight.to(conv.weight.dtype), bias.to(conv.weight.dtype)


def _pair(value, name) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"DWSepConv2d: {name} must be an int or a pair, got {value!r}")
    return pair


def _padding4(padding, kernel_size, stride, dilation) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, an (h, w) pair, a 4-tuple,
    'valid', or 'same' (stride 1 only; an odd total puts the extra row and
    column at the bottom and right, as TensorFlow and torch do)."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"DWSepConv2d: padding='same' needs stride 1 (with stride {stride} it depends on "
                             "the input size); give the padding explicitly")
        totals = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
        return totals[0] // 2, totals[0] - totals[0] // 2, totals[1] // 2, totals[1] - totals[1] // 2
    if isinstance(padding, str):
        raise ValueError(f"DWSepConv2d: padding={padding!r} is not 'same', 'valid' or integers")
    if isinstance(padding, int):
        return (padding,) * 4
    padding = tuple(padding)
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) == 4:
        return padding
    raise ValueError(f"DWSepConv2d: padding must be an int, (h, w) or (top, bottom, left, right), got {padding!r}")


class _Residual(nn.Module):
    """body(x) + x (the reverse of a residual DWSepConv2d)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x) + x


class DWSepConv2d(nn.Module):
    """y = act2(pw(act1(dw(x) + dw_bias)) + pw_bias) (+ x when residual), one
    op call: dw a depthwise KHxKW conv (channel multiplier 1, zero padding
    (top, bottom, left, right)), pw a 1x1 conv from in_channels to out_channels.

    Parameters: dw_weight [C, 1, KH, KW], dw_bias [C], pw_weight [O, C, 1, 1],
    pw_bias [O] (biases None when disabled). The op takes them in x's dtype, as
    nn.Conv2d does: move the module with .half() / .to(dtype) with its input.
    Training works: the op's backward recomputes the unfused chain.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0, dilation=1,
                 act1: str = "none", act2: str = "none", residual: bool = False, dw_bias: bool = True,
                 pw_bias: bool = True, device=None, dtype=None):
        super().__init__()
        for name, act in (("act1", act1), ("act2", act2)):
            if act not in DWSEP_ACTIVATIONS:
                raise ValueError(f"DWSepConv2d: {name}={act!r} is not one of {DWSEP_ACTIVATIONS}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        self.padding = _padding4(padding, self.kernel_size, self.stride, self.dilation)
        self.act1 = act1
        self.act2 = act2
        self.residual = residual
        if residual:
            self._check_residual()
        factory = {"device": device, "dtype": dtype}
        self.dw_weight = nn.Parameter(torch.empty(in_channels, 1, *self.kernel_size, **factory))
        self.dw_bias = nn.Parameter(torch.empty(in_channels, **factory)) if dw_bias else None
        self.pw_weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1, **factory))
        self.pw_bias = nn.Parameter(torch.empty(out_channels, **factory)) if pw_bias else None
        self.reset_parameters()

    def _check_residual(self):
        top, bottom, left, right = self.padding
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        keeps_size = self.stride == (1, 1) and top + bottom == dh * (kh - 1) and left + right == dw * (kw - 1)
        if self.out_channels != self.in_channels or not keeps_size:
            raise ValueError("DWSepConv2d: residual needs out_channels == in_channels, stride 1 and a padding that "
                             f"keeps the spatial size; got {self.in_channels} -> {self.out_channels}, "
                             f"stride {self.stride}, padding {self.padding}, kernel {self.kernel_size}, "
                             f"dilation {self.dilation}")

    def reset_parameters(self) -> None:
        """nn.Conv2d's initialization, for each of the two convolutions."""
        for weight, bias in ((self.dw_weight, self.dw_bias), (self.pw_weight, self.pw_bias)):
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            if bias is not None:
                bound = 1 / math.sqrt(weight[0].numel())
                nn.init.uniform_(bias, -bound, bound)

    @classmethod
    def from_modules(cls, dw_conv: nn.Conv2d, pw_conv: nn.Conv2d, bn1: nn.BatchNorm2d | None = None,
                     act1: nn.Module | None = None, bn2: nn.BatchNorm2d | None = None, act2: nn.Module | None = None,
                     residual: bool = False) -> "DWSepConv2d":
        """The module computing dw_conv -> bn1 -> act1 -> pw_conv -> bn2 -> act2 (+ x).

        BatchNorms are folded with their running statistics (fold_bn): the
        result computes what the chain computes in eval mode. Built on
        dw_conv's device and dtype. ValueError names anything the op cannot
        run: modules are matched by exact type (nn.Conv2d, nn.BatchNorm2d, the
        activations of activation_name), as subclasses may compute otherwise.
        """
        _check_depthwise(dw_conv)
        _check_pointwise(pw_conv, dw_conv.out_channels)
        names = []
        for arg, module in (("act1", act1), ("act2", act2)):
            name = activation_name(module)
            if name is None:
                raise ValueError(f"DWSepConv2d.from_modules: {arg} is {type(module).__name__}; supported: "
                                 f"{_SUPPORTED_ACTIVATIONS}")
            names.append(name)
        dw_weight, dw_bias = fold_bn(dw_conv, bn1) if bn1 is not None else (dw_conv.weight, dw_conv.bias)
        pw_weight, pw_bias = fold_bn(pw_conv, bn2) if bn2 is not None else (pw_conv.weight, pw_conv.bias)
        module = cls(dw_conv.in_channels, pw_conv.out_channels, dw_conv.kernel_size, dw_conv.stride, dw_conv.padding,
                     dw_conv.dilation, names[0], names[1], residual, dw_bias=dw_bias is not None,
                     pw_bias=pw_bias is not None, device=dw_conv.weight.device, dtype=dw_conv.weight.dtype)
        with torch.no_grad():
            for param, value in ((module.dw_weight, dw_weight), (module.dw_bias, dw_bias),
                                 (module.pw_weight, pw_weight), (module.pw_bias, pw_bias)):
                if param is not None:
                    param.copy_(value)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.slimops.dwsep_conv2d(x, self.dw_weight, self.dw_bias, self.pw_weight, self.pw_bias,
                                              list(self.stride), list(self.padding), list(self.dilation), self.act1,
                                              self.act2, self.residual)

    def to_modules(self) -> nn.Module:
        """The unfused equivalent, for debugging: [nn.ZeroPad2d when the padding
        is asymmetric,] depthwise nn.Conv2d, act1, 1x1 nn.Conv2d, act2 in an
        nn.Sequential (wrapped to add x when residual), with copies of the
        weights (BatchNorms stay folded)."""
        c, o = self.in_channels, self.out_channels
        top, bottom, left, right = self.padding
        symmetric = top == bottom and left == right
        factory = {"device": self.dw_weight.device, "dtype": self.dw_weight.dtype}
        dw = nn.Conv2d(c, c, self.kernel_size, self.stride, (top, left) if symmetric else 0, self.dilation, groups=c,
                       bias=self.dw_bias is not None, **factory)
        pw = nn.Conv2d(c, o, 1, bias=self.pw_bias is not None, **factory)
        with torch.no_grad():
            for conv, weight, bias in ((dw, self.dw_weight, self.dw_bias), (pw, self.pw_weight, self.pw_bias)):
                conv.weight.copy_(weight)
                if bias is not None:
                    conv.bias.copy_(bias)
        pad = [] if symmetric else [nn.ZeroPad2d((left, right, top, bottom))]
        body = nn.Sequential(*pad, dw, _ACTIVATION_MODULES[self.act1](), pw, _ACTIVATION_MODULES[self.act2]())
        unfused = _Residual(body) if self.residual else body
        return unfused.train(self.training)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, act1={self.act1!r}, act2={self.act2!r}, "
                f"residual={self.residual}, dw_bias={self.dw_bias is not None}, pw_bias={self.pw_bias is not None}")


def _check_depthwise(conv) -> None:
    if type(conv) is not nn.Conv2d:
        raise ValueError(f"DWSepConv2d.from_modules: dw_conv must be an nn.Conv2d, got {type(conv).__name__}")
    c = conv.in_channels
    if conv.groups != c or conv.out_channels != c:
        raise ValueError(f"DWSepConv2d.from_modules: dw_conv must be depthwise with channel multiplier 1 "
                         f"(groups == in_channels == out_channels), got in_channels={c}, "
                         f"out_channels={conv.out_channels}, groups={conv.groups}")
    if conv.padding_mode != "zeros":
        raise ValueError(f"DWSepConv2d.from_modules: dw_conv has padding_mode={conv.padding_mode!r}; "
                         "only 'zeros' is supported")


def _check_pointwise(conv, channels) -> None:
    if type(conv) is not nn.Conv2d:
        raise ValueError(f"DWSepConv2d.from_modules: pw_conv must be an nn.Conv2d, got {type(conv).__name__}")
    # Dilation does not change a 1x1 conv; padding 'same' of a 1x1 conv is 0.
    unpadded = conv.padding in ("valid", "same", (0, 0))
    if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or not unpadded or conv.groups != 1:
        raise ValueError(f"DWSepConv2d.from_modules: pw_conv must be a 1x1 conv with stride 1, no padding and "
                         f"groups 1, got kernel_size={conv.kernel_size}, stride={conv.stride}, "
                         f"padding={conv.padding}, groups={conv.groups}")
    if conv.in_channels != channels:
        raise ValueError(f"DWSepConv2d.from_modules: pw_conv takes {conv.in_channels} channels but dw_conv gives "
                         f"{channels}")
