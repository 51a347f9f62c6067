"""slimops.prune: magnitude masks, PolynomialDecay, Pruner and torch.nn.utils.prune interop.

Masks are checked against brute-force NumPy rankings that spell out the tie
rule (the lower index is kept) with np.lexsort."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from slimops.prune import (PolynomialDecay, Pruner, block_mask, effective_weight_and_mask, global_unstructured_masks,
                           nm_mask, unstructured_mask)


def keep_largest_numpy(scores: np.ndarray, n_keep: int) -> np.ndarray:
    """Bool mask keeping the n_keep largest of a 1-D array; ties: lower index kept."""
    order = np.lexsort((np.arange(scores.size), -scores))  # by score descending, then by index
    keep = np.zeros(scores.size, dtype=bool)
    keep[order[:n_keep]] = True
    return keep


def tied_weight(shape, seed=0):
    """Small integers as floats: many exact ties in |w|."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 4, shape, generator=g).float()


def random_weight(shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# --- unstructured and global -------------------------------------------------------------------

@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.25, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("make", [random_weight, tied_weight])
def test_unstructured_matches_numpy_ranking(sparsity, make):
    w = make((24, 40))
    mask = unstructured_mask(w, sparsity)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    removed = round(sparsity * w.numel())
    assert (~mask).sum().item() == removed
    expected = keep_largest_numpy(w.abs().numpy().ravel(), w.numel() - removed).reshape(w.shape)
    np.testing.assert_array_equal(mask.numpy(), expected)


def test_unstructured_keeps_every_larger_magnitude():
    w = random_weight((32, 32), seed=3)
    mask = unstructured_mask(w, 0.7)
    assert w.abs()[mask].min() >= w.abs()[~mask].max()


def test_ties_are_deterministic_and_go_to_the_lower_index():
    w = torch.ones(2, 4)
    mask = unstructured_mask(w, 0.5)
    assert mask.tolist() == [[True, True, True, True], [False, False, False, False]]
    w = tied_weight((64, 64), seed=5)
    assert torch.equal(unstructured_mask(w, 0.37), unstructured_mask(w.clone(), 0.37))


def test_unstructured_counts_round_half_to_even():
    w = random_weight((2, 5))
    assert (~unstructured_mask(w, 0.25)).sum().item() == 2  # 2.5 -> 2
    assert (~unstructured_mask(w, 0.35)).sum().item() == 4  # 3.5 -> 4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_masks_in_other_float_dtypes_rank_the_same_values(dtype):
    w = random_weight((16, 32), seed=2, dtype=dtype)
    assert torch.equal(unstructured_mask(w, 0.6), unstructured_mask(w.double(), 0.6))
    assert torch.equal(block_mask(w, (4, 4), 0.5), block_mask(w.double(), (4, 4), 0.5))
    assert torch.equal(nm_mask(w, 2, 4), nm_mask(w.double(), 2, 4))


def test_global_ranks_all_layers_together():
    weights = {"small": random_weight((16, 16), seed=0), "large": 100 * random_weight((16, 32), seed=1)}
    masks = global_unstructured_masks(weights, 0.5)
    total = sum(w.numel() for w in weights.values())
    assert sum((~m).sum().item() for m in masks.values()) == round(0.5 * total)
    flat = torch.cat([w.abs().reshape(-1) for w in weights.values()]).double().numpy()
    expected = keep_largest_numpy(flat, total - round(0.5 * total))
    np.testing.assert_array_equal(torch.cat([m.reshape(-1) for m in masks.values()]).numpy(), expected)
    # Per layer, each loses half; globally the small-scale layer loses (nearly) everything first.
    assert (~masks["small"]).float().mean() > 0.9 and (~masks["large"]).float().mean() < 0.4
    for name, w in weights.items():
        assert (~unstructured_mask(w, 0.5)).float().mean().item() == 0.5


def test_global_ties_across_layers_go_to_the_earlier_layer():
    masks = global_unstructured_masks({"a": torch.ones(2, 2), "b": torch.ones(2, 2)}, 0.5)
    assert masks["a"].all() and not masks["b"].any()


# --- N:M and block -----------------------------------------------------------------------------

def nm_mask_brute_force(w: np.ndarray, n: int, m: int) -> np.ndarray:
    mat = np.abs(w.reshape(w.shape[0], -1))
    keep = np.zeros(mat.shape, dtype=bool)
    for r in range(mat.shape[0]):
        for start in range(0, mat.shape[1], m):
            keep[r, start:start + m] = keep_largest_numpy(mat[r, start:start + m], n)
    return keep.reshape(w.shape)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
@pytest.mark.parametrize("make", [random_weight, tied_weight])
def test_nm_keeps_exactly_n_of_every_m(n, m, make):
    w = make((12, 32))
    mask = nm_mask(w, n, m)
    assert (mask.reshape(12, 32 // m, m).sum(-1) == n).all()
    np.testing.assert_array_equal(mask.numpy(), nm_mask_brute_force(w.numpy(), n, m))


def test_nm_on_a_conv_weight_groups_the_flattened_input():
    w = random_weight((8, 4, 3, 3), seed=4)  # K = 4 * 3 * 3 = 36
    mask = nm_mask(w, 2, 4)
    assert mask.shape == w.shape
    assert (mask.reshape(8, 9, 4).sum(-1) == 2).all()
    np.testing.assert_array_equal(mask.numpy(), nm_mask_brute_force(w.numpy(), 2, 4))


def block_mask_brute_force(w: np.ndarray, bn: int, bk: int, sparsity: float) -> np.ndarray:
    mat = w.reshape(w.shape[0], -1)
    gn, gk = mat.shape[0] // bn, mat.shape[1] // bk
    norms = np.array([np.linalg.norm(mat[i * bn:(i + 1) * bn, j * bk:(j + 1) * bk])
                      for i in range(gn) for j in range(gk)])
    keep = keep_largest_numpy(norms, norms.size - round(sparsity * norms.size)).reshape(gn, gk)
    return np.kron(keep, np.ones((bn, bk), dtype=bool)).astype(bool).reshape(w.shape)


@pytest.mark.parametrize("block", [(1, 4), (4, 4), (8, 2), (2, 16)])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.875])
def test_block_mask_removes_whole_lowest_norm_blocks(block, sparsity):
    w = random_weight((16, 32), seed=6)
    mask = block_mask(w, block, sparsity)
    bn, bk = block
    blocks = mask.reshape(16 // bn, bn, 32 // bk, bk)
    per_block = blocks.sum(dim=(1, 3))
    assert ((per_block == 0) | (per_block == bn * bk)).all()
    assert (per_block == 0).sum().item() == round(sparsity * per_block.numel())
    np.testing.assert_array_equal(mask.numpy(), block_mask_brute_force(w.numpy(), bn, bk, sparsity))


def test_block_mask_on_a_conv_weight():
    w = random_weight((8, 4, 2, 2), seed=7)  # [8, 16]
    mask = block_mask(w, (2, 4), 0.5)
    assert mask.shape == w.shape
    np.testing.assert_array_equal(mask.numpy(), block_mask_brute_force(w.numpy(), 2, 4, 0.5))


def test_block_ties_go_to_the_lower_block():
    mask = block_mask(torch.ones(4, 4), (2, 2), 0.5)
    assert mask[:2].all() and not mask[2:].any()


# --- PolynomialDecay ---------------------------------------------------------------------------

def test_polynomial_decay_values():
    s = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, power=3)
    assert s.sparsity(0) == 0.0
    assert s.sparsity(50) == pytest.approx(0.7)      # 0.8 - 0.8 * 0.5**3
    assert s.sparsity(25) == pytest.approx(0.4625)   # 0.8 - 0.8 * 0.75**3
    assert s.sparsity(100) == 0.8 and s.sparsity(10_000) == 0.8
    shifted = PolynomialDecay(0.2, 0.6, begin_step=10, end_step=30, power=2)
    assert shifted.sparsity(9) == 0.0                # nothing pruned before begin_step
    assert shifted.sparsity(10) == pytest.approx(0.2)
    assert shifted.sparsity(20) == pytest.approx(0.5)  # 0.6 - 0.4 * 0.5**2
    assert shifted.sparsity(25) == pytest.approx(0.575)  # 0.6 - 0.4 * 0.25**2
    assert shifted.sparsity(30) == pytest.approx(0.6)
    linear = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=10, power=1)
    assert [linear.sparsity(t) for t in range(0, 11, 5)] == pytest.approx([0.0, 0.25, 0.5])


def test_polynomial_decay_is_monotone():
    s = PolynomialDecay(0.1, 0.9, begin_step=5, end_step=205, power=3, frequency=1)
    values = [s.sparsity(t) for t in range(0, 220)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_should_prune_steps():
    s = PolynomialDecay(0.0, 0.5, begin_step=10, end_step=45, frequency=10)
    assert [t for t in range(100) if s.should_prune(t)] == [10, 20, 30, 40, 45]
    s = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=300)
    assert [t for t in range(1000) if s.should_prune(t)] == [0, 100, 200, 300]


@pytest.mark.parametrize("kwargs", [
    dict(initial_sparsity=-0.1, final_sparsity=0.5),
    dict(initial_sparsity=0.6, final_sparsity=0.5),
    dict(initial_sparsity=0.0, final_sparsity=1.0),
    dict(initial_sparsity=0.0, final_sparsity=float("nan")),
    dict(begin_step=10, end_step=10),
    dict(begin_step=-1),
    dict(begin_step=0.5),
    dict(frequency=0),
    dict(frequency=2.5),
    dict(power=0),
])
def test_polynomial_decay_rejects_bad_arguments(kwargs):
    args = dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=100) | kwargs
    with pytest.raises(ValueError):
        PolynomialDecay(**args)


# --- Pruner ------------------------------------------------------------------------------------

def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def train(model, pruner, steps, seed=0):
    """SGD with momentum; yields (whether the optimizer step moved a pruned weight off zero,
    what pruner.step() returned) after each step."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        x = torch.randn(8, 16, generator=g)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        moved = any((w[~pruner.masks[n]] != 0).any() for n, w in pruner.weights.items() if n in pruner.masks)
        yield moved, pruner.step()


def test_pruner_follows_the_schedule_and_keeps_pruned_weights_zero():
    model = tiny_model()
    schedule = PolynomialDecay(0.0, 0.75, begin_step=2, end_step=12, power=3, frequency=3)
    pruner = Pruner(model, schedule)
    assert set(pruner.weights) == {"0.weight", "2.weight"}
    last_prune_step, previous_masks, moved_any = None, {}, False
    for step, (moved, recomputed) in enumerate(train(model, pruner, 16)):
        assert recomputed == schedule.should_prune(step)
        moved_any |= moved
        if schedule.should_prune(step):
            last_prune_step = step
        for name, w in pruner.weights.items():
            target = 0.0 if last_prune_step is None else schedule.sparsity(last_prune_step)
            assert pruner.sparsity()[name] == round(target * w.numel()) / w.numel()
            if name in pruner.masks:
                assert (w[~pruner.masks[name]] == 0).all()
                # Pruned weights stay pruned as the sparsity grows.
                if name in previous_masks:
                    assert not (pruner.masks[name] & ~previous_masks[name]).any()
        previous_masks = dict(pruner.masks)
    assert moved_any  # the optimizer did move pruned weights, so the zero checks above test the re-application
    assert all(s == 0.75 for s in pruner.sparsity().values())
    assert pruner.current_step == 16


def test_pruner_global_and_block_methods():
    model = tiny_model(1)
    schedule = PolynomialDecay(0.5, 0.5, begin_step=0, end_step=1)
    global_pruner = Pruner(model, schedule, method="global")
    list(train(model, global_pruner, 3))
    removed = sum((~m).sum().item() for m in global_pruner.masks.values())
    assert removed == round(0.5 * sum(w.numel() for w in global_pruner.weights.values()))
    assert all((w[~global_pruner.masks[n]] == 0).all() for n, w in global_pruner.weights.items())

    model = tiny_model(2)
    block_pruner = Pruner(model, schedule, method="block", block=(4, 4))
    list(train(model, block_pruner, 3))
    assert all(s == 0.5 for s in block_pruner.sparsity().values())
    w = model[0].weight.detach()
    assert ((w.reshape(8, 4, 4, 4) != 0).sum(dim=(1, 3)) % 16 == 0).all()


def test_pruner_nm_prunes_once_and_keeps_the_pattern():
    model = tiny_model(3)
    pruner = Pruner([(model[0], "weight"), (model[2], "weight")], method="n:m", nm=(2, 4))
    assert set(pruner.weights) == {"0.weight", "1.weight"}
    masks = dict(pruner.masks)
    assert all(s == 0.5 for s in pruner.sparsity().values())
    assert (model[0].weight[~masks["0.weight"]] == 0).all()
    moved, recomputed = zip(*train(model, pruner, 4))
    assert any(moved) and not any(recomputed)
    assert all(torch.equal(masks[n], pruner.masks[n]) for n in masks)
    assert ((model[2].weight.detach().reshape(8, 8, 4) != 0).sum(-1) <= 2).all()


def test_pruner_on_a_conv_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 4), nn.LayerNorm(4))
    pruner = Pruner(model, PolynomialDecay(0.5, 0.5, 0, 1))
    assert set(pruner.weights) == {"0.weight", "2.weight"}
    pruner.step()
    assert pruner.sparsity() == {"0.weight": round(0.5 * 216) / 216, "2.weight": 0.5}
    assert (model[0].weight == 0).sum().item() == 108


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="magnitude"), "method"),
    (dict(method="unstructured", schedule=None), "schedule"),
    (dict(method="n:m", schedule=PolynomialDecay(0.0, 0.5, 0, 10)), "no schedule"),
    (dict(method="block", block=None), "block"),
    (dict(method="block", block=(3, 4)), "tile"),
    (dict(method="n:m", schedule=None, nm=(2, 3)), "divisible"),
])
def test_pruner_rejects_bad_arguments(kwargs, match):
    args = dict(schedule=PolynomialDecay(0.0, 0.5, 0, 10)) | kwargs
    with pytest.raises(ValueError, match=match):
        Pruner(tiny_model(), **args)


def test_pruner_rejects_models_without_weights_and_torch_pruned_modules():
    with pytest.raises(ValueError, match="nothing to prune"):
        Pruner(nn.Sequential(nn.ReLU()), PolynomialDecay(0.0, 0.5, 0, 10))
    model = tiny_model()
    torch_prune.l1_unstructured(model[0], "weight", amount=0.5)
    with pytest.raises(ValueError, match="prune.remove"):
        Pruner(model, PolynomialDecay(0.0, 0.5, 0, 10))


# --- torch.nn.utils.prune interop ---------------------------------------------------------------

def test_effective_weight_of_a_module_pruned_by_torch():
    layer = tiny_model()[0]
    torch_prune.l1_unstructured(layer, "weight", amount=0.3)
    with torch.no_grad():
        layer.weight_orig.add_(1.0)  # no forward since: layer.weight is stale, weight_orig is current
    weight, mask = effective_weight_and_mask(layer)
    assert mask.dtype == torch.bool and torch.equal(mask, layer.weight_mask.bool())
    assert torch.equal(weight, layer.weight_orig.detach() * layer.weight_mask)
    assert not torch.equal(weight, layer.weight.detach())
    # No ties in random floats, so torch's L1 choice and ours agree exactly.
    assert torch.equal(mask, unstructured_mask(layer.weight_orig - 1.0, 0.3))


def test_effective_weight_after_prune_remove_and_of_a_plain_weight():
    layer = tiny_model()[0]
    torch_prune.random_unstructured(layer, "weight", amount=0.4)
    torch_mask = layer.weight_mask.bool().clone()
    torch_prune.remove(layer, "weight")
    weight, mask = effective_weight_and_mask(layer)
    assert torch.equal(mask, torch_mask) and (~mask).sum().item() == round(0.4 * weight.numel())
    assert torch.equal(weight, layer.weight.detach()) and weight.data_ptr() != layer.weight.data_ptr()

    plain = nn.Linear(8, 4)
    with torch.no_grad():
        plain.weight[:, ::2] = 0
    weight, mask = effective_weight_and_mask(plain)
    assert mask.sum().item() == 16 and not mask[:, ::2].any() and mask[:, 1::2].all()


# --- bad inputs --------------------------------------------------------------------------------

@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), True, "0.5", None])
def test_bad_sparsity(sparsity):
    w = random_weight((8, 8))
    for fn in (lambda: unstructured_mask(w, sparsity), lambda: block_mask(w, (2, 2), sparsity),
               lambda: global_unstructured_masks({"w": w}, sparsity)):
        with pytest.raises(ValueError, match="sparsity"):
            fn()


def test_bad_weights():
    nan_weight = random_weight((8, 8))
    nan_weight[3, 4] = float("nan")
    for fn in (unstructured_mask, lambda w, s: block_mask(w, (2, 2), s), lambda w, s: nm_mask(w, 2, 4),
               lambda w, s: global_unstructured_masks({"w": w}, s)):
        with pytest.raises(ValueError, match="NaN"):
            fn(nan_weight, 0.5)
        with pytest.raises(TypeError, match="floating"):
            fn(torch.ones(8, 8, dtype=torch.int32), 0.5)
        with pytest.raises(ValueError, match=r"\[N, K\]"):
            fn(torch.ones(8), 0.5)
    layer = nn.Linear(4, 4)
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        effective_weight_and_mask(layer)
    with pytest.raises(ValueError, match="at least one"):
        global_unstructured_masks({}, 0.5)


@pytest.mark.parametrize("n, m", [(3, 2), (0, 4), (2.0, 4), (2, None)])
def test_bad_nm(n, m):
    with pytest.raises(ValueError, match="1 <= n <= m"):
        nm_mask(random_weight((8, 8)), n, m)


def test_nm_needs_k_divisible_by_m():
    with pytest.raises(ValueError, match="K=10"):
        nm_mask(random_weight((8, 10)), 2, 4)


@pytest.mark.parametrize("block, match", [((3, 2), "tile"), ((2, 5), "tile"), ((0, 2), "positive"),
                                          ((2,), "positive"), (4, "positive"), ((2, 2.0), "positive")])
def test_bad_blocks(block, match):
    with pytest.raises(ValueError, match=match):
        block_mask(random_weight((8, 8)), block, 0.5)
