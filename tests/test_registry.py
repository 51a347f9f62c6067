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


def test_remembered_choices_follow_the_opt_in_and_the_registry(monkeypatch):
    # Choices made without a why_not are remembered per (op, device type, dtype, opt-in).
    monkeypatch.setattr(registry, "_KERNELS", {})
    registry.register("static_op", Kernel("new", lambda: "new", ("cpu",), (torch.float32,), verified=False))
    registry.register("static_op", Kernel("any", lambda: "any", None, (torch.float32,)))
    monkeypatch.delenv("SLIMOPS_ALLOW_UNVERIFIED", raising=False)
    assert choose("static_op", 1) == "any"
    monkeypatch.setenv("SLIMOPS_ALLOW_UNVERIFIED", "1")
    assert choose("static_op", 1) == "new"
    monkeypatch.delenv("SLIMOPS_ALLOW_UNVERIFIED")
    assert choose("static_op", 1) == "any"
    assert registry.choose("static_op", torch.device("meta"), torch.float32, (1,)).name == "any"
    # A registry swapped under it (as the fixture above does), with no register() call, is read afresh.
    monkeypatch.setattr(registry, "_KERNELS", {"static_op": [Kernel("other", lambda: "other", None, (torch.float32,))]})
    assert choose("static_op", 1) == "other"


def test_a_why_not_is_asked_on_every_call(op, monkeypatch):
    monkeypatch.delenv("SLIMOPS_ALLOW_UNVERIFIED", raising=False)
    assert [choose(op, n) for n in (1, 100, 1, 100)] == ["small", "any", "small", "any"]
