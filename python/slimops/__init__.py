"""slimops: fast kernels for pruned, quantized and lightweight networks.

Importing slimops registers its ops as ``torch.ops.slimops.*``:
  quantize_per_token(x) -> (q int8, scale float32)            dynamic per-row int8 quantization
  int8_linear(x, w_int8, w_scale, bias=None, x_scale=None)     W8A8 linear
  w8a16_linear(x, w_int8, w_scale, bias=None)                  W8A16 linear
  w4a8_linear(x, w_packed, w_scale, w_zero_point, group_size, bias=None)   W4A8 linear
  w4a16_linear(x, w_packed, w_scale, w_zero_point, group_size, bias=None)  W4A16 linear
  dwsep_conv2d(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2, residual)
                                                               fused depthwise -> act -> 1x1 -> act (+ x)
  csr_linear / bsr_linear / nm_linear(x, <format arrays>, scale, ..., bias=None)   sparse linear
NumPy references live in ``slimops.reference``; drop-in modules (QuantLinear, SparseLinear,
DWSepConv2d) and convert() in ``slimops.nn``; GPTQ (quantization against calibration inputs) in
``slimops.gptq``; magnitude pruning (masks, PolynomialDecay, Pruner) in ``slimops.prune``; sparse
weight formats in ``slimops.formats``, and choose_layout (the fastest of them for a pruned weight,
never slower than dense) in ``slimops.sparse_layout``.
"""

import os

from . import _C, _ops, nn, prune, reference
from .formats import QuantizedWeight
from .gptq import collect_hessians, gptq_quantize
from .nn import DWSepConfig, DWSepConv2d, QuantConfig, SparseConfig, SparseLinear, convert, fold_bn, to_float
from .prune import PolynomialDecay, Pruner
from .quantization import quantize
from .sparse_layout import LayoutChoice, choose_layout

__version__ = "0.1.0"


def cpu_isa() -> str:
    """The CPU code path in use: "avx512_vnni", "avx2" or "scalar"."""
    return _C.cpu_isa()


def set_cpu_isa(isa: str) -> None:
    """Force a CPU code path ("scalar", "avx2", "avx512_vnni"); ValueError if unsupported."""
    _C.set_cpu_isa(isa)


def _check_isa_env() -> None:
    forced = os.environ.get("SLIMOPS_CPU_ISA", "")
    if forced and forced != _C.cpu_isa():
        raise ValueError(
            f"SLIMOPS_CPU_ISA={forced!r} cannot be used on this CPU (valid: scalar, avx2, avx512_vnni; "
            f"this CPU supports up to {_C.detected_cpu_isa()})"
        )


_check_isa_env()

__all__ = ["DWSepConfig", "DWSepConv2d", "LayoutChoice", "PolynomialDecay", "Pruner", "QuantConfig", "QuantizedWeight",
           "SparseConfig", "SparseLinear", "choose_layout", "collect_hessians", "convert", "cpu_isa", "fold_bn",
           "gptq_quantize", "nn", "prune", "quantize", "reference", "set_cpu_isa", "to_float"]
