"""slimops.convert: swap a model's nn.Linear layers for slimops modules in place,
and slimops.to_float: the reverse, for debugging."""

import fnmatch
from dataclasses import dataclass, field

from torch import nn

from ..gptq import InputHessian, collect_hessians, gptq_quantize
from ._replace import module_bytes, progress_bar, set_child
from .convert_dwsep import DWSepConfig, DWSepFusionSummary, fuse_dwsep
from .convert_sparse import SparseConfig, SparseConversionSummary, sparsify
from .quant_linear import QuantLinear
from .sparse_linear import SparseLinear

METHODS = ("rtn", "gptq")


@dataclass(frozen=True)
class QuantConfig:
    """What convert() does to each nn.Linear it matches (QuantLinear's
    weight_bits, act_bits, group_size and symmetric).

    skip: fnmatch patterns of qualified module names to leave alone (e.g.
    "classifier", "*.lm_head"); min_features: layers with fewer input features
    stay float (their quantization overhead outweighs the bytes saved). Layers
    whose input features group_size does not divide stay float too.

    method: "rtn" rounds each weight to nearest (slimops.quantize); "gptq"
    runs slimops.gptq_quantize against the inputs each layer receives while
    convert's ``calibrate`` callable runs the model.
    """

    weight_bits: int = 8
    act_bits: int | None = 8
    group_size: int = -1
    symmetric: bool = True
    skip: tuple[str, ...] = ()
    min_features: int = 0
    method: str = "rtn"


@dataclass
class ConversionSummary:
    converted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_before: int = 0  # of the converted layers' parameters and buffers
    bytes_after: int = 0

    def __str__(self) -> str:
        ratio = self.bytes_before / self.bytes_after if self.bytes_after else float("nan")
        return (
            f"slimops.convert: {len(self.converted)} layers converted, {len(self.skipped)} left float; "
            f"{self.bytes_before / 2**20:.1f} MiB -> {self.bytes_after / 2**20:.1f} MiB ({ratio:.2f}x smaller)"
        )


def convert(model: nn.Module, config: QuantConfig | SparseConfig | DWSepConfig | None = None, *,
            progress: bool | None = None,
            calibrate=None) -> ConversionSummary | SparseConversionSummary | DWSepFusionSummary:
    """With a QuantConfig (the default): replace every nn.Linear of model (in
    place) by a QuantLinear, except those config.skip names or that are
    smaller than config.min_features; returns a ConversionSummary (print it
    for the sizes before and after). With a SparseConfig: the same with
    SparseLinear (each layer's layout in the summary). With a DWSepConfig: fuse
    the model's depthwise-separable conv chains into DWSepConv2d modules (fuse_dwsep).
    progress: a tqdm bar (None: only for models of 50 or more linear layers).
    calibrate: with config.method "gptq", a callable ``calibrate(model)`` that
    runs forward passes over calibration data (not the data you evaluate on).
    """
    if isinstance(config, (DWSepConfig, SparseConfig)) and calibrate is not None:
        raise ValueError("calibrate= is only used by QuantConfig(method='gptq')")
    if isinstance(config, DWSepConfig):
        return fuse_dwsep(model, config.skip)
    if isinstance(config, SparseConfig):
        return sparsify(model, config, progress)
    config = config or QuantConfig()
    _check_config(config, calibrate)
    linears = [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear]
    targets = [(name, linear) for name, linear in linears if _selected(name, linear, config)]
    summary = ConversionSummary(skipped=[name for name, linear in linears if not _selected(name, linear, config)])
    hessians = _calibration_hessians(model, targets, calibrate) if config.method == "gptq" else {}
    for name, linear in progress_bar(targets, progress):
        quantized = _quantized_layer(linear, config, hessians.get(name))
        set_child(model, name, quantized)
        summary.converted.append(name)
        summary.bytes_before += module_bytes(linear)
        summary.bytes_after += module_bytes(quantized)
    return summary


def _check_config(config: QuantConfig, calibrate) -> None:
    """Refuse an unsupported configuration before touching the model."""
    if config.method not in METHODS:
        raise ValueError(f"QuantConfig.method must be one of {METHODS}, got {config.method!r}")
    if config.method == "gptq" and calibrate is None:
        raise ValueError("method='gptq' needs calibrate=: a callable that runs the model on calibration data")
    if config.method != "gptq" and calibrate is not None:
        raise ValueError(f"calibrate= is only used by method='gptq' (this config's method is {config.method!r})")
    probe_features = max(config.group_size, 1)
    QuantLinear(probe_features, 1, weight_bits=config.weight_bits, act_bits=config.act_bits,
                group_size=config.group_size, symmetric=config.symmetric, device="meta")


def _selected(name: str, linear: nn.Linear, config: QuantConfig) -> bool:
    indivisible = config.group_size > 0 and linear.in_features % config.group_size != 0
    return not (
        any(fnmatch.fnmatchcase(name, pattern) for pattern in config.skip)
        or linear.in_features < config.min_features
        or indivisible
    )


def _calibration_hessians(model: nn.Module, targets, calibrate) -> dict[str, InputHessian]:
    # One calibration pass of the float model serves every layer. Collecting
    # each layer's Hessian again after the layers before it are quantized (the
    # sequential variant) measured no better on all-MiniLM-L6-v2 (mean cosine
    # 0.9863 against 0.9866 for W4A16 g128 with zero points) and took three
    # times as long.
    names = [name for name, _ in targets]
    hessians = collect_hessians(model, calibrate, names)
    never_ran = [name for name in names if name not in hessians]
    if never_ran:
        raise ValueError(f"calibrate did not run these layers, so GPTQ has no inputs for them: {never_ran}")
    return hessians


def _quantized_layer(linear: nn.Linear, config: QuantConfig, hessian: InputHessian | None) -> QuantLinear:
    if hessian is None:
        return QuantLinear.from_linear(linear, config.weight_bits, config.act_bits, config.group_size,
                                       config.symmetric)
    qweight = gptq_quantize(linear.weight.detach(), hessian.xtx, bits=config.weight_bits,
                            group_size=config.group_size, symmetric=config.symmetric)
    return QuantLinear.from_quantized(qweight, linear.bias, config.act_bits)


def to_float(model: nn.Module) -> nn.Module:
    """Replace every QuantLinear and SparseLinear of model (in place) by an
    nn.Linear holding its dequantized (or dense, pruned entries zero) weight; returns model."""
    converted = (QuantLinear, SparseLinear)
    for name, module in [(n, m) for n, m in model.named_modules() if isinstance(m, converted)]:
        set_child(model, name, module.to_linear())
    return model
