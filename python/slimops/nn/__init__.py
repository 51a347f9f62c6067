"""Drop-in modules backed by slimops ops, and the model converters."""

from .convert import ConversionSummary, QuantConfig, convert, to_float
from .convert_dwsep import DWSepConfig, DWSepFusionSummary, fuse_dwsep
from .dwsep_conv2d import DWSepConv2d, fold_bn
from .quant_linear import QuantLinear

__all__ = ["ConversionSummary", "DWSepConfig", "DWSepConv2d", "DWSepFusionSummary", "QuantConfig", "QuantLinear", "convert",
           "fold_bn", "fuse_dwsep", "to_float"]
