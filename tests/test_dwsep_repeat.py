"""dwsep_conv2d's repeat path (backends/cpu.py dwsep_conv2d_repeat): a layer's
call that repeats its last one, weights unchanged, skips the checks and the
kernel choice. It must give the checked path's bits, and every other call
(another x, other options, changed weights, bad input) must take the checked
path."""

import pytest
import torch

import slimops  # noqa: F401  (registers the ops)
from slimops import _checks
from slimops.backends import dwsep_weights, registry
from slimops.backends.registry import Kernel
from slimops.nn import DWSepConv2d

op = torch.ops.slimops.dwsep_conv2d


@pytest.fixture
def checks(monkeypatch):
    """Counts the op's full checks (the repeat path runs none)."""
    calls = []
    real = _checks.check_dwsep_conv2d

    def counted(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(_checks, "check_dwsep_conv2d", counted)
    return calls


def layer(c=24, o=40, stride=1):
    torch.manual_seed(0)
    return DWSepConv2d(c, o, 3, stride, 1, act1="relu6").eval()


def channels_last(x):
    return x.contiguous(memory_format=torch.channels_last)


def call(m, x, stride=1, padding=1, act1="relu6"):
    return op(x, m.dw_weight, m.dw_bias, m.pw_weight, m.pw_bias, [stride] * 2, [padding] * 4, [1, 1], act1, "none",
              False)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_a_repeat_skips_the_checks_and_gives_the_same_bits(checks, layout):
    m = layer()
    x = torch.randn(2, 24, 11, 9)
    x = channels_last(x) if layout == "nhwc" else x
    with torch.no_grad():
        first = call(m, x)
        assert len(checks) == 1
        again = call(m, x.clone())  # another tensor of the same kind: a repeat too
        assert len(checks) == 1
    assert torch.equal(first, again)
    assert again.is_contiguous(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)
    torch.testing.assert_close(again, m.to_modules()(x), rtol=1e-4, atol=1e-4)


def test_another_kind_of_x_or_other_options_take_the_checked_path(checks):
    m = layer()
    x = channels_last(torch.randn(1, 24, 10, 10))
    with torch.no_grad():
        call(m, x)
        others = [
            lambda: call(m, channels_last(torch.randn(1, 24, 12, 10))),  # shape
            lambda: call(m, channels_last(torch.randn(3, 24, 10, 10))),  # batch: x's strides are the same
            lambda: call(m, torch.randn(1, 24, 10, 10)),  # memory format
            lambda: call(m, x, stride=2),
            lambda: call(m, x, padding=0),
            lambda: call(m, x, act1="silu"),
        ]
        for i, other in enumerate(others):
            call(m, x)  # the last call is x's again
            before = len(checks)
            other()
            assert len(checks) == before + 1, i
    # Each of them was recorded in turn and is now the repeat.
    with torch.no_grad():
        y = call(m, x, act1="silu")
        n = len(checks)
        torch.testing.assert_close(call(m, x, act1="silu"), y, rtol=0, atol=0)
        assert len(checks) == n


def test_bad_input_after_good_calls_still_raises():
    m = layer()
    x = channels_last(torch.randn(1, 24, 8, 8))
    with torch.no_grad():
        call(m, x)
        call(m, x)
        with pytest.raises(ValueError, match="dw_weight must be"):
            call(m, channels_last(torch.randn(1, 23, 8, 8)))
        with pytest.raises(TypeError, match="x must be float32"):
            call(m, x.to(torch.int32))
        with pytest.raises(TypeError, match="x's dtype"):
            call(m, x.double())
        with pytest.raises(ValueError, match="stride"):
            call(m, x, stride=0)
        with pytest.raises(TypeError, match="dense"):
            call(m, x.to_sparse())
        with pytest.raises(ValueError, match="x is on meta"):
            call(m, x.to("meta"))


@pytest.mark.parametrize("change", ["in_place", "data", "dtype_view", "bias_none"])
def test_changed_weights_take_the_checked_path(checks, change):
    m = layer()
    x = channels_last(torch.randn(1, 24, 8, 8))
    with torch.no_grad():
        call(m, x)
        if change == "in_place":
            m.pw_weight.mul_(-2)
        elif change == "data":
            m.dw_weight.data = torch.randn_like(m.dw_weight)
        elif change == "dtype_view":
            # Same address, shape and strides: only the dtype tells (plain tensors: a parameter that
            # requires grad cannot be given integer data).
            dw, db, pw, pb = (t.detach().clone() for t in (m.dw_weight, m.dw_bias, m.pw_weight, m.pw_bias))
            op(x, dw, db, pw, pb, [1, 1], [1, 1, 1, 1], [1, 1], "relu6", "none", False)
            op(x, dw, db, pw, pb, [1, 1], [1, 1, 1, 1], [1, 1], "relu6", "none", False)
            pw.data = pw.data.view(torch.int32)
            with pytest.raises(TypeError, match="pw_weight must have x's dtype"):
                op(x, dw, db, pw, pb, [1, 1], [1, 1, 1, 1], [1, 1], "relu6", "none", False)
            return
        else:
            m.pw_bias = None
        before = len(checks)
        y = call(m, x)
        assert len(checks) == before + 1
    torch.testing.assert_close(y, m.to_modules()(x), rtol=1e-4, atol=1e-4)


def test_weights_without_versions_have_no_repeat(checks):
    with torch.inference_mode():
        m = layer()
        x = channels_last(torch.randn(1, 24, 8, 8))
        call(m, x)
        call(m, x)
    assert len(checks) == 2
    assert dwsep_weights.entry_of(m.pw_weight) is None


def test_only_the_first_kernel_without_why_not_repeats(monkeypatch):
    ran = []
    first = Kernel("first", None, None, (torch.float32,), repeat=lambda *a: ran.append("first") or "y")
    declines = Kernel("declines", None, None, (torch.float32,), why_not=lambda *a: None,
                      repeat=lambda *a: ran.append("declines") or "y")
    unverified = Kernel("unverified", None, None, (torch.float32,), verified=False,
                        repeat=lambda *a: ran.append("unverified") or "y")
    monkeypatch.setattr(registry, "_KERNELS", {"a": [first, declines], "b": [declines, first],
                                               "c": [unverified], "d": []})
    monkeypatch.delenv("SLIMOPS_ALLOW_UNVERIFIED", raising=False)
    assert registry.repeat("a", ()) == "y" and ran == ["first"]
    assert registry.repeat("b", ()) is None  # a why_not may decline a repeat's arguments
    assert registry.repeat("c", ()) is None
    assert registry.repeat("d", ()) is None and registry.repeat("missing", ()) is None
    monkeypatch.setenv("SLIMOPS_ALLOW_UNVERIFIED", "1")
    assert registry.repeat("c", ()) == "y" and ran == ["first", "unverified"]


def test_a_swapped_kernel_list_is_obeyed(monkeypatch):
    m = layer()
    x = channels_last(torch.randn(1, 24, 8, 8))
    with torch.no_grad():
        call(m, x)
        torch_only = [k for k in registry._KERNELS["dwsep_conv2d"] if k.name == "torch"]
        ran = []
        wrapped = Kernel("torch", lambda *a: ran.append(1) or torch_only[0].run(*a), None, torch_only[0].dtypes)
        monkeypatch.setitem(registry._KERNELS, "dwsep_conv2d", [wrapped])
        y = call(m, x)
    assert ran == [1]
    torch.testing.assert_close(y, m.to_modules()(x), rtol=1e-4, atol=1e-4)


def test_the_record_keeps_its_own_option_lists():
    """A caller that changes its lists after a call must not change what counts as a repeat."""
    from slimops.backends import cpu

    m = layer()
    x = channels_last(torch.randn(1, 24, 8, 8))
    stride, padding, dilation = [1, 1], [1, 1, 1, 1], [1, 1]
    args = (x, m.dw_weight.detach(), m.dw_bias.detach(), m.pw_weight.detach(), m.pw_bias.detach())
    # The detached tensors are new objects each time: keep one set for both calls.
    cpu.dwsep_conv2d(*args, stride, padding, dilation, "relu6", "none", False)
    assert cpu.dwsep_conv2d_repeat(*args, stride, padding, dilation, "relu6", "none", False) is not None
    stride[0] = 2
    assert cpu.dwsep_conv2d_repeat(*args, stride, padding, dilation, "relu6", "none", False) is None
