"""dwsep_conv2d packs a layer's weights once (backends/dwsep_weights.py): the
packing must follow every change of the weights and never outlive them."""

import gc

import pytest
import torch

import slimops  # noqa: F401  (registers the ops)
from slimops.backends import dwsep_weights
from slimops.nn import DWSepConv2d

op = torch.ops.slimops.dwsep_conv2d


def layer(c=24, o=40):
    torch.manual_seed(0)
    return DWSepConv2d(c, o, 3, 1, 1, act1="relu6").eval()


def unfused(m, x):
    """The same layer through torch's own convolutions."""
    return m.to_modules()(x)


def x_for(m):
    return torch.randn(2, m.in_channels, 9, 9).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", ["dw_weight", "dw_bias", "pw_weight", "pw_bias"])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_an_in_place_update_of_any_weight_is_seen(name, mode):
    m, x = layer(), None
    x = x_for(m)
    context = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with context():
        before = m(x)
        getattr(m, name).mul_(-1.5).add_(0.25)
        after = m(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, unfused(m, x), rtol=1e-4, atol=1e-4)


def test_replaced_data_and_load_state_dict_are_seen():
    m = layer()
    x = x_for(m)
    with torch.no_grad():
        m(x)
        m.pw_weight.data = torch.randn_like(m.pw_weight)
        torch.testing.assert_close(m(x), unfused(m, x), rtol=1e-4, atol=1e-4)
        other = layer()
        with torch.no_grad():
            for p in other.parameters():
                p.uniform_(-1, 1)
        m.load_state_dict(other.state_dict())
        torch.testing.assert_close(m(x), other(x), rtol=0, atol=0)


def test_an_optimizer_step_is_seen():
    m = layer().train()
    x = x_for(m)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    m(x).square().sum().backward()
    opt.step()
    with torch.no_grad():
        torch.testing.assert_close(m(x), unfused(m, x), rtol=1e-4, atol=1e-4)


def test_weights_made_in_inference_mode_are_packed_on_each_call():
    with torch.inference_mode():
        m = layer()
        x = x_for(m)
        assert dwsep_weights.entry_for(m.dw_weight, m.dw_bias, m.pw_weight, m.pw_bias) is None
        m(x)
        m.pw_weight.mul_(2)
        torch.testing.assert_close(m(x), unfused(m, x), rtol=1e-4, atol=1e-4)


def test_one_packing_per_layer_and_none_after_the_weights_go():
    m = layer()
    args = (m.dw_weight, m.dw_bias, m.pw_weight, m.pw_bias)
    first = dwsep_weights.entry_for(*args)
    assert first is not None and dwsep_weights.entry_for(*args) is first
    key = id(m.pw_weight)
    assert key in dwsep_weights._entries
    del m, args, first
    gc.collect()
    assert key not in dwsep_weights._entries


def test_a_layer_sharing_the_1x1_weight_gets_its_own_packing():
    """Entries are found by the 1x1 weight but must match all four tensors."""
    a, b = layer(), layer()
    with torch.no_grad():
        b.dw_weight.uniform_(-1, 1)
    b.pw_weight = a.pw_weight
    x = x_for(a)
    with torch.no_grad():
        a(x)
        torch.testing.assert_close(b(x), unfused(b, x), rtol=1e-4, atol=1e-4)


def test_another_storage_over_the_same_memory_is_not_taken_for_the_packed_one():
    """The key's pointer and version can match after `.data` swaps (malloc reuses addresses, and the
    parameter keeps its version counter): the storage object must match too."""
    m = layer()
    x = x_for(m)
    with torch.no_grad():
        m(x)
        alias = torch.from_numpy(m.pw_weight.detach().numpy())  # a second storage, same address
        m.pw_weight.data = alias
        alias.mul_(-2)  # counted by alias's version, not by the parameter's
        torch.testing.assert_close(m(x), unfused(m, x), rtol=1e-4, atol=1e-4)


def test_repacking_a_tensor_keeps_one_finalizer():
    m = layer()
    x = x_for(m)
    with torch.no_grad():
        m(x)
        first = dwsep_weights._entries[id(m.pw_weight)].finalizer
        for _ in range(3):
            m.pw_weight.add_(0.01)
            m(x)
        assert dwsep_weights._entries[id(m.pw_weight)].finalizer is first and first.alive


def test_clear_after_writes_the_version_counter_does_not_see():
    m = layer()
    x = x_for(m)
    with torch.no_grad():
        m(x)
        m.pw_weight.data.mul_(-2)  # through .data: no version bump, documented as needing clear()
        dwsep_weights.clear()
        torch.testing.assert_close(m(x), unfused(m, x), rtol=1e-4, atol=1e-4)


def test_swap_tensors_works_on_a_layer_that_ran():
    """Entries hold no weak reference to the weight tensors: swap_tensors refuses tensors that have one,
    and module.to() swaps under set_swap_module_params_on_conversion(True)."""
    m = layer()
    x = x_for(m)
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        with torch.no_grad():
            m(x)
            m.to(torch.float64)
            torch.testing.assert_close(m(x.double()), unfused(m, x.double()))
            m.to(torch.float32)
            torch.testing.assert_close(m(x), unfused(m, x), rtol=1e-4, atol=1e-4)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    other = torch.nn.Parameter(torch.randn_like(m.pw_weight))
    with torch.no_grad():
        m(x)
        torch.utils.swap_tensors(m.pw_weight, other)
        torch.testing.assert_close(m(x), unfused(m, x), rtol=1e-4, atol=1e-4)


def test_an_entry_follows_its_weight_to_new_storage():
    """After `.data = ...` the entry's finalizer watches the new storage: the old one dying must not
    drop it, and the new one dying must."""
    m = layer()
    x = x_for(m)
    with torch.no_grad():
        m(x)
        old = m.pw_weight.data  # keeps the first storage alive
        m.pw_weight.data = torch.randn_like(m.pw_weight)
        m(x)
    key = id(m.pw_weight)
    entry = dwsep_weights._entries[key]
    del old
    gc.collect()
    assert dwsep_weights._entries.get(key) is entry
    del m, entry
    gc.collect()
    assert key not in dwsep_weights._entries


def test_clear_survives_an_entry_added_while_it_runs():
    """Another thread can add an entry between clear()'s steps (the GIL switches inside detach())."""
    m = layer()
    x = x_for(m)
    with torch.no_grad():
        m(x)
    entry = dwsep_weights._entries[id(m.pw_weight)]
    real = entry.finalizer

    class AddsAnEntry:
        def detach(self):
            dwsep_weights._entries[-1] = entry  # what a concurrent first call of another layer does
            return real.detach()

    entry.finalizer = AddsAnEntry()
    try:
        dwsep_weights.clear()
    finally:
        dwsep_weights._entries.pop(-1, None)
    assert id(m.pw_weight) not in dwsep_weights._entries
    with torch.no_grad():
        torch.testing.assert_close(m(x), unfused(m, x), rtol=1e-4, atol=1e-4)
