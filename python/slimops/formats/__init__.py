"""Packed weight formats: plain data with a versioned, validated layout."""

from .quantized import QuantizedWeight

__all__ = ["QuantizedWeight"]
