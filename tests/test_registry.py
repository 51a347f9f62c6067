"""The kernel chooser: capabilities, unverified kernels, and the error that
lists every reason."""

import pytest
import torch

from slimops.backends import registry
from slimops.backends.registry import Kernel


@pytest.fixture
def op(monkeypatch):
    monkeypatch.setattr(registry, "_KERNELS", {})
    name = "test_op"
    registry.register(name, Kernel("gpu_only", lambda: "gpu", ("cuda",), (torch.float32,)))
    registry.register(name, Kernel("new", lambda: "new", ("cpu",), (torch.float32,), verified=False))
    registry.register(name, Kernel("small", lambda: "small", ("cpu",), (torch.float32,),
                                   why_not=lambda n: None if n < 10 else "too large"))
    registry.register(name, Kernel("any", lambda: "any", None, (torch.float32, torch.float16)))
    return name


def choose(op, n, dtype=torch.float32):
    return registry.choose(op, torch.device("cpu"), dtype, (n,)).name


def test_first_capable_kernel_wins(op, monkeypatch):
    monkeypatch.delenv("SLIMOPS_ALLOW_UNVERIFIED", raising=False)
    assert choose(op, 1) == "small"
    assert choose(op, 100) == "any"
    assert choose(op, 1, torch.float16) == "any"


def test_unverified_kernels_need_the_opt_in(op, monkeypatch):
    monkeypatch.setenv("SLIMOPS_ALLOW_UNVERIFIED", "1")
    assert choose(op, 1) == "new"


def test_error_lists_every_reason(op, monkeypatch):
    monkeypatch.delenv("SLIMOPS_ALLOW_UNVERIFIED", raising=False)
    with pytest.raises(NotImplementedError) as info:
        choose(op, 100, torch.bfloat16)
    message = str(info.value)
    for expected in ("gpu_only: runs on cuda, not cpu", "new: does not take torch.bfloat16",
                     "small: does not take", "any: does not take"):
        assert expected in message
