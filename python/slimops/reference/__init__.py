"""NumPy references: the numerical source of truth for every slimops op.

This package imports NumPy only (never torch), so a bug shared by the kernels
and PyTorch cannot hide in it. Each function states its rounding: NumPy's
``rint`` rounds half to even, and the kernels do the same.
"""

from .dwsep_conv2d import dwsep_conv2d
from .int8_linear import int8_linear, int8_matmul
from .quant import (
    dequantize,
    pack_int4,
    quantization_params,
    quantize,
    quantize_per_token,
    unpack_int4,
)
from .sparse_linear import bsr_linear, csr_linear, nm_linear
from .w4a8_linear import w4a8_linear
from .w4a16_linear import w4a16_linear
from .w8a16_linear import w8a16_linear

__all__ = [
    "bsr_linear",
    "csr_linear",
    "dequantize",
    "dwsep_conv2d",
    "int8_linear",
    "int8_matmul",
    "nm_linear",
    "pack_int4",
    "quantization_params",
    "quantize",
    "quantize_per_token",
    "unpack_int4",
    "w4a8_linear",
    "w4a16_linear",
    "w8a16_linear",
]
