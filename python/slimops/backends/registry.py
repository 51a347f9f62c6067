"""Capabilities, not if-chains: each implementation of an op declares what it
can take, and the chooser picks the first one that can. When none can, the
error lists every implementation with the reason it declined.

A kernel that has not passed the GPU check on real hardware has
``verified=False`` and is skipped unless SLIMOPS_ALLOW_UNVERIFIED=1 (the GPU
check script sets it to test them).
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Kernel:
    name: str
    run: Callable
    devices: tuple[str, ...] | None  # device types, or None for any device
    dtypes: tuple[torch.dtype, ...]  # accepted activation dtypes
    verified: bool = True
    # Extra limits: returns why this kernel cannot take the call, or None.
    why_not: Callable[..., str | None] = field(default=lambda *args: None)


_KERNELS: dict[str, list[Kernel]] = {}


def register(op: str, kernel: Kernel) -> None:
    """Add a kernel for op; earlier registrations are preferred."""
    _KERNELS.setdefault(op, []).append(kernel)


def allow_unverified() -> bool:
    return os.environ.get("SLIMOPS_ALLOW_UNVERIFIED", "0") == "1"


def _decline(kernel: Kernel, device: torch.device, dtype: torch.dtype, args) -> str | None:
    if kernel.devices is not None and device.type not in kernel.devices:
        return f"runs on {', '.join(kernel.devices)}, not {device.type}"
    if dtype not in kernel.dtypes:
        return f"does not take {dtype}"
    if not kernel.verified and not allow_unverified():
        return "not yet verified on real hardware (set SLIMOPS_ALLOW_UNVERIFIED=1 to use it)"
    return kernel.why_not(*args)


def choose(op: str, device: torch.device, dtype: torch.dtype, args) -> Kernel:
    reasons = []
    for kernel in _KERNELS.get(op, ()):
        reason = _decline(kernel, device, dtype, args)
        if reason is None:
            return kernel
        reasons.append(f"  {kernel.name}: {reason}")
    raise NotImplementedError(f"slimops.{op}: no kernel takes {dtype} on {device}:\n" + "\n".join(reasons))
