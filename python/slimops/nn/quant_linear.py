"""QuantLinear: a drop-in replacement for nn.Linear with int8 weights and
dynamically quantized int8 activations (W8A8), running torch.ops.slimops.int8_linear."""

import torch
import torch.nn.functional as F
from torch import nn

from ..quantization import quantize

FORMAT = "slimops.QuantLinear.w8a8"
FORMAT_VERSION = 1


class QuantLinear(nn.Module):
    """y = int8_linear(x, qweight, weight_scale, bias).

    Buffers: ``qweight`` int8 [out, in] (symmetric, per output channel) and
    ``weight_scale`` float32 [out]; ``bias`` is a float parameter as in
    nn.Linear. The state_dict also carries a format tag and version, checked
    on load together with every tensor's dtype and shape.

    Fine-tuning after quantization: with a float master ``weight``
    (``from_linear(..., finetune=True)`` or ``enable_finetuning()``), training
    mode runs fake quantization of weights and activations with a
    straight-through estimator, so backward updates the master weight, and
    ``eval()`` re-packs it into ``qweight``. Without one, ``weight`` is None.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_bits: int = 8,
                 act_bits: int | None = 8, device=None, dtype=None):
        super().__init__()
        if weight_bits != 8 or act_bits != 8:
            raise ValueError(
                f"QuantLinear supports weight_bits=8 with act_bits=8 (W8A8); got weight_bits={weight_bits}, "
                f"act_bits={act_bits}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.weight_bits = weight_bits
        self.act_bits = act_bits
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype or torch.float32))
        else:
            self.register_parameter("bias", None)
        self.register_parameter("weight", None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_bits: int = 8, act_bits: int | None = 8,
                    finetune: bool = False) -> "QuantLinear":
        """Quantize an nn.Linear's weight (symmetric int8, per output channel);
        finetune=True also keeps a float master copy for fine-tuning."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, weight_bits, act_bits,
                     device=w.device, dtype=w.dtype)
        qw = quantize(w, bits=8, group_size=-1, symmetric=True)
        module.qweight.copy_(qw.qdata)
        module.weight_scale.copy_(qw.scale.reshape(-1))
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        if finetune:
            module.weight = nn.Parameter(w.detach().float().clone())
        return module

    def enable_finetuning(self) -> "QuantLinear":
        """Add a float master weight, starting from the dequantized int8 weight."""
        if self.weight is None:
            self.weight = nn.Parameter(self.dequantized_weight())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.weight is not None:
            return F.linear(_fake_quantize_rows(x), _fake_quantize_rows(self.weight), self.bias)
        return torch.ops.slimops.int8_linear(x, self.qweight, self.weight_scale, self.bias)

    def train(self, mode: bool = True) -> "QuantLinear":
        if not mode and self.training and self.weight is not None:
            self.repack()
        return super().train(mode)

    @torch.no_grad()
    def repack(self) -> None:
        """Quantize the float master weight into qweight and weight_scale."""
        qw = quantize(self.weight.detach(), bits=8, group_size=-1, symmetric=True)
        self.qweight.copy_(qw.qdata)
        self.weight_scale.copy_(qw.scale.reshape(-1))

    def dequantized_weight(self) -> torch.Tensor:
        """float32 [out, in]: what the int8 weight stands for."""
        return self.qweight.float() * self.weight_scale[:, None]

    def to_linear(self) -> nn.Linear:
        """An nn.Linear holding the dequantized weight (for debugging)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.qweight.device)
        with torch.no_grad():
            linear.weight.copy_(self.dequantized_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, weight_bits={self.weight_bits}, act_bits={self.act_bits}")

    def get_extra_state(self):
        return {"format": FORMAT, "version": FORMAT_VERSION}

    def set_extra_state(self, state):
        self._check_format(state)

    @staticmethod
    def _check_format(state):
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} state_dict (extra state {state!r})")
        if state.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{FORMAT} layout version {state.get('version')} is not supported (this slimops reads {FORMAT_VERSION})"
            )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # nn.Module would silently cast a float tensor into the int8 buffer.
        # Problems go to error_msgs, as torch's own checks do (load_state_dict
        # raises one RuntimeError listing them all), and leave this module as it was.
        problems = self._state_problems(state_dict, prefix)
        if problems:
            error_msgs.extend(f"{prefix}: {p}" for p in problems)
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _state_problems(self, state_dict, prefix) -> list[str]:
        problems = []
        expected = {
            "qweight": (torch.int8, (self.out_features, self.in_features)),
            "weight_scale": (torch.float32, (self.out_features,)),
        }
        for name, (dtype, shape) in expected.items():
            t = state_dict.get(prefix + name)
            if t is not None and (t.dtype != dtype or tuple(t.shape) != shape):
                problems.append(f"{name}: expected {dtype} {shape}, got {t.dtype} {tuple(t.shape)}")
        scale = state_dict.get(prefix + "weight_scale")
        if scale is not None and scale.dtype.is_floating_point and not bool(torch.isfinite(scale).all()):
            problems.append("weight_scale holds NaN or Inf")
        # A missing tag is reported by torch itself as a missing "_extra_state" key.
        if prefix + "_extra_state" in state_dict:
            try:
                self._check_format(state_dict[prefix + "_extra_state"])
            except ValueError as e:
                problems.append(str(e))
        return problems


def _fake_quantize_rows(t: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 fake quantization of each row (the last dimension), as
    the kernels quantize weights per channel and activations per token. The
    straight-through estimator passes the gradient through the rounding."""
    amax = t.detach().abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    q = torch.round(t / scale).clamp(-127, 127) * scale
    return t + (q - t).detach()
