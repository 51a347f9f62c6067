"""Drop-in modules backed by slimops ops."""

from .quant_linear import QuantLinear

__all__ = ["QuantLinear"]
