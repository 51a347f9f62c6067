"""Packed weight formats: plain data with a versioned, validated layout."""

from .quantized import QuantizedWeight
from .sparse import BSRWeight, CSRWeight, NMWeight

__all__ = ["BSRWeight", "CSRWeight", "NMWeight", "QuantizedWeight"]
