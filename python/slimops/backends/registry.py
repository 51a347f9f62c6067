"""Capabilities, not if-chains: each implementation of an op declares what it
can take, and the chooser picks the first one that can. When none can, the
error lists every implementation with the reason it declined.

A kernel that has not passed the GPU check on real hardware has
``verified=False`` and is skipped unless SLIMOPS_ALLOW_UNVERIFIED=1 (the GPU
check script sets it to test them).
"""

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Kernel:
    name: str
    run: Callable
    devices: tuple[str, ...] | None  # device types, or None for any device
    dtypes: tuple[torch.dtype, ...]  # accepted activation dtypes
    verified: bool = True
    # Extra limits, read from the call's arguments: returns why this kernel cannot take the call, or None.
    why_not: Callable[..., str | None] | None = None
    # Runs a call that repeats one this kernel ran before (the same checked arguments, by what the kernel
    # can see cheaply), skipping the op's checks and the choice; returns None for any other call.
    repeat: Callable | None = None


_KERNELS: dict[str, list[Kernel]] = {}
# Choices that depend only on (op, device type, dtype, unverified allowed): those made without
# asking any why_not. choose() runs on every call: its loop took 1 us back to back and 7-9 us
# between other layers' calls (cold caches), against ~0.3 us for this lookup.
_STATIC_CHOICES: dict[tuple, tuple[list[Kernel], Kernel]] = {}


def register(op: str, kernel: Kernel) -> None:
    """Add a kernel for op; earlier registrations are preferred."""
    _KERNELS.setdefault(op, []).append(kernel)
    _STATIC_CHOICES.clear()


def allow_unverified() -> bool:
    return os.environ.get("SLIMOPS_ALLOW_UNVERIFIED", "0") == "1"


def _static_decline(kernel: Kernel, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the kernel cannot take any call on this device type and dtype, or None."""
    if kernel.devices is not None and device.type not in kernel.devices:
        return f"runs on {', '.join(kernel.devices)}, not {device.type}"
    if dtype not in kernel.dtypes:
        return f"does not take {dtype}"
    if not kernel.verified and not allow_unverified():
        return "not yet verified on real hardware (set SLIMOPS_ALLOW_UNVERIFIED=1 to use it)"
    return None


def choose(op: str, device: torch.device, dtype: torch.dtype, args) -> Kernel:
    kernels = _KERNELS.get(op, ())
    key = (op, device.type, dtype, allow_unverified())
    known = _STATIC_CHOICES.get(key)
    if known is not None and known[0] is kernels:  # the same list (tests swap _KERNELS)
        return known[1]
    reasons = []
    static = True  # no why_not consulted so far
    for kernel in kernels:
        reason = _static_decline(kernel, device, dtype)
        if reason is None and kernel.why_not is not None:
            static = False
            reason = kernel.why_not(*args)
        if reason is None:
            if static:
                _STATIC_CHOICES[key] = (kernels, kernel)
            return kernel
        reasons.append(f"  {kernel.name}: {reason}")
    raise NotImplementedError(f"slimops.{op}: no kernel takes {dtype} on {device}:\n" + "\n".join(reasons))


def repeat(op: str, args):
    """The result of a call that the op's first kernel recognises as a repeat of one it ran, or None.

    Only the first kernel is asked, and only one without a why_not: choose() would pick it again for
    any call it ran (its declines depend only on the device type and dtype, which a repeat matches),
    unless it is unverified and unverified kernels have since been turned off."""
    kernels = _KERNELS.get(op)
    if not kernels:
        return None
    first = kernels[0]
    if first.repeat is None or first.why_not is not None or not (first.verified or allow_unverified()):
        return None
    return first.repeat(*args)
