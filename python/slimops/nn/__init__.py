"""Drop-in modules backed by slimops ops, and the model converters."""

from .convert import ConversionSummary, QuantConfig, convert, to_float
from .quant_linear import QuantLinear

__all__ = ["ConversionSummary", "QuantConfig", "QuantLinear", "convert", "to_float"]
