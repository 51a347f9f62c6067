"""slimops.nn.fuse_dwsep: replace the depthwise-separable chains of a model by
DWSepConv2d modules, in place.

A chain is depthwise nn.Conv2d -> [nn.BatchNorm2d] -> [activation] -> 1x1
nn.Conv2d -> [nn.BatchNorm2d] -> [activation], consecutive children of an
nn.Sequential, looking one level into nested Sequentials: MobileNetV2's
InvertedResidual keeps its depthwise conv in conv[1][0] (a Conv-BN-ReLU6
Sequential) and its 1x1 conv in conv[2]. Residual adds live in the blocks' own
forward and stay there.

The DWSepConv2d takes the depthwise conv's place and every other module of the
chain becomes an nn.Identity, so the indices and state_dict keys of all other
modules stay as they were (the fused weights are under the depthwise conv's
name: "<name>.dw_weight", "<name>.pw_weight", ...).
"""

import fnmatch
from dataclasses import dataclass, field

from torch import nn

from .dwsep_conv2d import DWSepConv2d, activation_name


@dataclass(frozen=True)
class DWSepConfig:
    """What slimops.convert does with this config: fuse_dwsep. skip: fnmatch
    patterns of depthwise conv names whose chains stay unfused."""

    skip: tuple[str, ...] = ()


@dataclass
class DWSepFusionSummary:
    fused: list[str] = field(default_factory=list)  # where each DWSepConv2d now sits
    skipped: dict[str, str] = field(default_factory=dict)  # depthwise conv name -> why its chain was left

    def __str__(self) -> str:
        lines = [f"slimops.fuse_dwsep: {len(self.fused)} blocks fused, {len(self.skipped)} chains left unfused"]
        lines += [f"  {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Slot:
    parent: nn.Module
    key: str
    name: str
    module: nn.Module


def _calls_children_in_order(module: nn.Module) -> bool:
    """An nn.Sequential, or a subclass keeping its forward (torchvision's
    Conv2dNormActivation): its children run one after the other."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _children(seq: nn.Sequential):
    # _modules, not named_children(), which yields a module used twice only once.
    return seq._modules.items()


def _slots(seq: nn.Sequential, name: str) -> list[_Slot]:
    """seq's children in call order, with nested in-order Sequentials flattened one level."""
    slots = []
    for key, child in _children(seq):
        child_name = _join(name, key)
        if _calls_children_in_order(child):
            slots += [_Slot(child, k, _join(child_name, k), m) for k, m in _children(child)]
        else:
            slots.append(_Slot(seq, key, child_name, child))
    return slots


def _is_depthwise(module) -> bool:
    # Channel multipliers other than 1 match too, so that the summary says why they stay.
    return type(module) is nn.Conv2d and module.groups > 1 and module.groups == module.in_channels


def _is_pointwise(module) -> bool:
    return type(module) is nn.Conv2d and module.kernel_size == (1, 1)


def _is_batchnorm(module) -> bool:
    return type(module) is nn.BatchNorm2d


def _match(slots: list[_Slot], start: int):
    """(from_modules keyword arguments, end index) of the chain starting at
    slots[start], or None when there is none."""
    modules = [slot.module for slot in slots]
    if not _is_depthwise(modules[start]):
        return None
    parts = {"dw_conv": modules[start]}
    i = start + 1

    def take(key, accept):
        nonlocal i
        if i < len(modules) and accept(modules[i]):
            parts[key] = modules[i]
            i += 1

    take("bn1", _is_batchnorm)
    # Whatever one module sits before the 1x1 conv is taken as act1, so that an
    # unsupported activation shows in the summary instead of hiding the chain.
    if i + 1 < len(modules) and _is_pointwise(modules[i + 1]):
        take("act1", lambda m: not _is_pointwise(m))
    take("pw_conv", _is_pointwise)
    if "pw_conv" not in parts:
        return None
    take("bn2", _is_batchnorm)
    take("act2", lambda m: activation_name(m) is not None)
    return parts, i


def fuse_dwsep(model: nn.Module, skip: tuple[str, ...] = ()) -> DWSepFusionSummary:
    """Replace every depthwise-separable chain of model's Sequentials by a
    DWSepConv2d (see the module docstring), in place, except those whose
    depthwise conv's name matches a pattern of skip; returns what was fused
    and, for chains DWSepConv2d.from_modules refused or skip named, why.

    BatchNorms are folded with their running statistics: the fused model
    computes what the original computes in eval mode, so fuse a trained model.
    Modules are matched by exact type; anything else is left untouched.
    """
    summary = DWSepFusionSummary()
    containers = [(name, m) for name, m in model.named_modules() if _calls_children_in_order(m)]
    for name, seq in containers:
        slots = _slots(seq, name)
        i = 0
        while i < len(slots):
            match = _match(slots, i)
            if match is None:
                i += 1
                continue
            parts, end = match
            if any(fnmatch.fnmatchcase(slots[i].name, pattern) for pattern in skip):
                summary.skipped[slots[i].name] = "skipped by name"
                i += 1
                continue
            try:
                fused = DWSepConv2d.from_modules(**parts)
            except ValueError as error:
                summary.skipped[slots[i].name] = str(error)
                i += 1
                continue
            fused.train(slots[i].module.training)
            setattr(slots[i].parent, slots[i].key, fused)
            for slot in slots[i + 1:end]:
                setattr(slot.parent, slot.key, nn.Identity())
            summary.fused.append(slots[i].name)
            i = end
    return summary
