"""Drop-in modules backed by slimops ops (QuantLinear, SparseLinear, DWSepConv2d),
and the model converters (convert with a QuantConfig, SparseConfig or DWSepConfig; to_float)."""

from .convert import ConversionSummary, QuantConfig, convert, to_float
from .convert_dwsep import DWSepConfig, DWSepFusionSummary, fuse_dwsep
from .convert_sparse import SparseConfig, SparseConversionSummary
from .dwsep_conv2d import DWSepConv2d, fold_bn
from .quant_linear import QuantLinear
from .sparse_linear import SparseLinear

__all__ = ["ConversionSummary", "DWSepConfig", "DWSepConv2d", "DWSepFusionSummary", "QuantConfig", "QuantLinear",
           "SparseConfig", "SparseConversionSummary", "SparseLinear", "convert", "fold_bn", "fuse_dwsep", "to_float"]
