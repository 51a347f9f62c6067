"""QuantLinear: a drop-in replacement for nn.Linear with quantized weights,
running the slimops op that matches its configuration:

  weight_bits 8, act_bits 8     W8A8   int8_linear   (per output channel, symmetric)
  weight_bits 8, act_bits None  W8A16  w8a16_linear  (per output channel, symmetric)
  weight_bits 4, act_bits 8     W4A8   w4a8_linear   (group-wise, symmetric or zero points)
  weight_bits 4, act_bits None  W4A16  w4a16_linear  (group-wise, symmetric or zero points)
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..formats.quantized import QuantizedWeight
from ..quantization import dequantize_tensor, quantize, quantize_tensor

FORMAT = "slimops.QuantLinear"
FORMAT_VERSION = 1
SUPPORTED = {(8, 8), (8, None), (4, 8), (4, None)}


class QuantLinear(nn.Module):
    """Buffers: ``qweight`` (int8 [out, in] at 8 bits; uint8 [out, ceil(in/2)],
    two 4-bit values per byte, at 4 bits), ``weight_scale`` (float32 [out] at 8
    bits, [out, G] at 4 bits) and, when asymmetric, ``weight_zero_point``
    (int32 [out, G]); ``bias`` is a float parameter as in nn.Linear. The
    state_dict carries a format tag with the configuration, checked on load
    together with every tensor's dtype and shape.

    Fine-tuning after quantization: with a float master ``weight``
    (``from_linear(..., finetune=True)`` or ``enable_finetuning()``), training
    mode runs fake quantization of the weight (and of the activations, when
    they are quantized) with a straight-through estimator, so backward updates
    the master weight, and ``eval()`` re-packs it. Without one, ``weight`` is None.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_bits: int = 8,
                 act_bits: int | None = 8, group_size: int = -1, symmetric: bool = True, device=None, dtype=None):
        super().__init__()
        if (weight_bits, act_bits) not in SUPPORTED:
            raise ValueError(
                f"QuantLinear supports (weight_bits, act_bits) in {sorted(SUPPORTED, key=str)}; "
                f"got weight_bits={weight_bits}, act_bits={act_bits}"
            )
        if weight_bits == 8 and (group_size != -1 or not symmetric):
            raise ValueError("8-bit QuantLinear weights are symmetric per output channel (group_size=-1)")
        if group_size == 0:
            raise ValueError("QuantLinear quantizes per output channel (group_size=-1) or per group, not per tensor")
        if group_size != -1 and (group_size < 0 or in_features % group_size):
            raise ValueError(f"group_size={group_size} does not divide in_features={in_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight_bits = weight_bits
        self.act_bits = act_bits
        self.group_size = group_size
        self.symmetric = symmetric
        for name, (dtype_, shape) in self._expected_buffers().items():
            self.register_buffer(name, torch.zeros(shape, dtype=dtype_, device=device))
        self.weight_scale.fill_(1.0)
        if weight_bits == 4 and symmetric:
            self.qweight.fill_(0x88)  # both nibbles hold q + 8 = 8: an all-zero weight
        if "weight_zero_point" not in self._expected_buffers():
            self.register_buffer("weight_zero_point", None)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype or torch.float32))
        else:
            self.register_parameter("bias", None)
        self.register_parameter("weight", None)

    def _expected_buffers(self) -> dict:
        n, k = self.out_features, self.in_features
        if self.weight_bits == 8:
            return {"qweight": (torch.int8, (n, k)), "weight_scale": (torch.float32, (n,))}
        groups = 1 if self.group_size == -1 else k // self.group_size
        expected = {"qweight": (torch.uint8, (n, (k + 1) // 2)), "weight_scale": (torch.float32, (n, groups))}
        if not self.symmetric:
            expected["weight_zero_point"] = (torch.int32, (n, groups))
        return expected

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_bits: int = 8, act_bits: int | None = 8, group_size: int = -1,
                    symmetric: bool = True, finetune: bool = False) -> "QuantLinear":
        """Quantize an nn.Linear's weight; finetune=True also keeps a float
        master copy for fine-tuning."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, weight_bits, act_bits,
                     group_size, symmetric, device=w.device, dtype=w.dtype)
        module._pack(w)
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        if finetune:
            module.weight = nn.Parameter(w.float().clone())
        return module

    @classmethod
    def from_quantized(cls, qweight: QuantizedWeight, bias: torch.Tensor | None = None,
                       act_bits: int | None = 8) -> "QuantLinear":
        """A QuantLinear running an already quantized weight (e.g. from
        slimops.gptq_quantize); its bits, group size and symmetry set the
        layer's configuration, checked as the constructor checks any."""
        if not isinstance(qweight, QuantizedWeight):
            raise TypeError(f"expected a QuantizedWeight, got {type(qweight).__name__}")
        n, k = qweight.shape
        module = cls(k, n, bias is not None, qweight.bits, act_bits, qweight.group_size, qweight.symmetric,
                     device=qweight.qdata.device, dtype=None if bias is None else bias.dtype)
        module._load(qweight)
        if bias is not None:
            module.bias.data.copy_(bias.detach())
        return module

    def _pack(self, w: torch.Tensor) -> None:
        self._load(quantize(w, bits=self.weight_bits, group_size=self.group_size, symmetric=self.symmetric))

    @torch.no_grad()
    def _load(self, qw: QuantizedWeight) -> None:
        self.qweight.copy_(qw.qdata)
        self.weight_scale.copy_(qw.scale.reshape(self.weight_scale.shape))
        if qw.zero_point is not None:
            self.weight_zero_point.copy_(qw.zero_point)

    def quantized_weight(self) -> QuantizedWeight:
        scale = self.weight_scale.reshape(self.out_features, -1)
        return QuantizedWeight(self.qweight, scale, self.weight_zero_point, self.weight_bits, self.group_size,
                               self.symmetric, (self.out_features, self.in_features))

    def dequantized_weight(self) -> torch.Tensor:
        """float32 [out, in]: what the quantized weight stands for."""
        return self.quantized_weight().dequantize()

    def to_linear(self) -> nn.Linear:
        """An nn.Linear holding the dequantized weight (what this layer
        computes with), in the bias' dtype (for debugging)."""
        dtype = self.bias.dtype if self.bias is not None else torch.float32
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.qweight.device, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(self.dequantized_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def enable_finetuning(self) -> "QuantLinear":
        """Add a float master weight, starting from the dequantized weight."""
        if self.weight is None:
            self.weight = nn.Parameter(self.dequantized_weight())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.weight is not None:
            x = _fake_quantize_rows(x) if self.act_bits == 8 else x
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.linear(x, self._fake_quantized_weight().to(x.dtype), bias)
        if self.weight_bits == 8:
            op = torch.ops.slimops.int8_linear if self.act_bits == 8 else torch.ops.slimops.w8a16_linear
            return op(x, self.qweight, self.weight_scale, self.bias)
        op = torch.ops.slimops.w4a8_linear if self.act_bits == 8 else torch.ops.slimops.w4a16_linear
        return op(x, self.qweight, self.weight_scale, self.weight_zero_point, self.group_size, self.bias)

    def _fake_quantized_weight(self) -> torch.Tensor:
        with torch.no_grad():
            q, scale, zero_point = quantize_tensor(self.weight, self.weight_bits, self.group_size, self.symmetric)
            fake = dequantize_tensor(q, scale, zero_point, self.group_size)
        return _straight_through(self.weight, fake)

    def _apply(self, fn, recurse=True):
        # model.half() / .to(bfloat16) cast every floating buffer; the ops take
        # float32 scales whatever the activations are.
        super()._apply(fn, recurse)
        self._buffers["weight_scale"] = self._buffers["weight_scale"].float()
        return self

    def train(self, mode: bool = True) -> "QuantLinear":
        if not mode and self.training and self.weight is not None:
            self.repack()
        return super().train(mode)

    def repack(self) -> None:
        """Quantize the float master weight into the packed buffers."""
        self._pack(self.weight.detach())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, weight_bits={self.weight_bits}, act_bits={self.act_bits}, "
                f"group_size={self.group_size}, symmetric={self.symmetric}")

    def _config(self) -> dict:
        return {"weight_bits": self.weight_bits, "act_bits": self.act_bits, "group_size": self.group_size,
                "symmetric": self.symmetric}

    def get_extra_state(self):
        return {"format": FORMAT, "version": FORMAT_VERSION, **self._config()}

    def set_extra_state(self, state):
        self._check_format(state)

    def _check_format(self, state):
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} state_dict (extra state {state!r})")
        if state.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{FORMAT} layout version {state.get('version')} is not supported (this slimops reads {FORMAT_VERSION})"
            )
        saved = {key: state.get(key) for key in self._config()}
        if saved != self._config():
            raise ValueError(f"the state_dict was saved with {saved}, this module is {self._config()}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # nn.Module would silently cast a float tensor into an integer buffer.
        # Problems go to error_msgs, as torch's own checks do (load_state_dict
        # raises one RuntimeError listing them all), and leave this module as it was.
        problems = self._state_problems(state_dict, prefix)
        if problems:
            error_msgs.extend(f"{prefix}: {p}" for p in problems)
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if self.weight is not None and prefix + "weight" not in state_dict:
            # Otherwise the next eval() would re-pack the stale master weight over what was loaded.
            with torch.no_grad():
                self.weight.copy_(self.dequantized_weight())

    def _state_problems(self, state_dict, prefix) -> list[str]:
        problems = []
        for name, (dtype, shape) in self._expected_buffers().items():
            t = state_dict.get(prefix + name)
            if t is not None and (t.dtype != dtype or tuple(t.shape) != shape):
                problems.append(f"{name}: expected {dtype} {shape}, got {t.dtype} {tuple(t.shape)}")
        scale = state_dict.get(prefix + "weight_scale")
        if scale is not None and scale.dtype.is_floating_point and not bool(torch.isfinite(scale).all()):
            problems.append("weight_scale holds NaN or Inf")
        qweight = state_dict.get(prefix + "qweight")
        if self.weight_bits == 4 and self.symmetric and qweight is not None and qweight.dtype == torch.uint8:
            if bool(((qweight & 0xF) == 0).any()) or bool(((qweight >> 4) == 0).any()):
                problems.append("qweight: a symmetric 4-bit nibble is 0 (values are stored as q + 8)")
        zero_point = state_dict.get(prefix + "weight_zero_point")
        if zero_point is not None and zero_point.numel() and bool(((zero_point < 0) | (zero_point > 15)).any()):
            problems.append("weight_zero_point outside 0..15")
        # A missing tag is reported by torch itself as a missing "_extra_state" key.
        if prefix + "_extra_state" in state_dict:
            try:
                self._check_format(state_dict[prefix + "_extra_state"])
            except ValueError as e:
                problems.append(str(e))
        return problems


def _straight_through(t: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """quantized in the forward pass, identity in the backward pass."""
    return t + (quantized - t).detach()


def _fake_quantize_rows(t: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 fake quantization of each row (the last dimension), as
    the kernels quantize activations per token."""
    amax = t.detach().abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    return _straight_through(t, torch.round(t / scale).clamp(-127, 127) * scale)
