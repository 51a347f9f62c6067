"""SparseLinear, slimops.convert with a SparseConfig, and slimops.choose_layout."""

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

import slimops
from slimops import prune, sparse_layout
from slimops.backends import fallback, registry
from slimops.backends.registry import Kernel
from slimops.nn import SparseConfig, SparseLinear

IN, OUT = 64, 32


def linear(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(IN, OUT)


def zeroed(layer, mask):
    with torch.no_grad():
        layer.weight.mul_(mask)
    return layer


# How a case zeroes the layer's weights before conversion.
PRUNED = {
    "csr": lambda w: prune.unstructured_mask(w, 0.8),
    "bsr": lambda w: prune.block_mask(w, (8, 8), 0.75),
    "2:4": lambda w: prune.nm_mask(w, 2, 4),
    "1:8": lambda w: prune.nm_mask(w, 1, 8),
}
# (layout, from_linear keywords, the PRUNED entry applied first or None, expected layout, block, pattern)
CASES = [
    ("csr", {}, "csr", "csr", None, None),
    ("csr", dict(sparsity=0.8), None, "csr", None, None),
    ("bsr", dict(block=(8, 8)), "bsr", "bsr", (8, 8), None),
    ("bsr", dict(block=(8, 8), sparsity=0.75), None, "bsr", (8, 8), None),
    ("2:4", {}, "2:4", "nm", None, (2, 4)),
    ("2:4", dict(sparsity=0.5), None, "nm", None, (2, 4)),
    ("n:m", dict(pattern=(1, 8)), "1:8", "nm", None, (1, 8)),
    ("n:m", dict(pattern=(1, 8), sparsity=0.875), None, "nm", None, (1, 8)),
    ("dense", {}, None, "dense", None, None),
    ("dense", dict(sparsity=0.5), None, "dense", None, None),
    ("auto", {}, None, "dense", None, None),
    ("auto", dict(sparsity=0.3), None, "dense", None, None),  # above csr's break-even: dense is faster
]


def converted(case, int8=False):
    """(SparseLinear, the nn.Linear it was made from with its pruned weights zeroed)."""
    layout, kwargs, zeros, *_ = case
    source = linear()
    if zeros is not None:
        zeroed(source, PRUNED[zeros](source.weight))
    module = SparseLinear.from_linear(source, layout, int8=int8, **kwargs)
    if kwargs.get("sparsity") is not None:  # what from_linear pruned, applied to the source for comparison
        zeroed(source, module.dense_weight() != 0)
    return module, source


def case_id(case):
    return f"{case[0]}-{'pruned' if 'sparsity' in case[1] else 'zeros'}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_from_linear_matches_the_masked_dense_layer(case):
    _, kwargs, _, kind, block, pattern = case
    module, source = converted(case)
    assert (module.layout, module.block, module.pattern) == (kind, block, pattern)
    torch.testing.assert_close(module.dense_weight(), source.weight.detach(), rtol=0, atol=0)
    if "sparsity" in kwargs and kind != "dense":
        assert module.density == pytest.approx(1 - kwargs["sparsity"], abs=1 / (IN * OUT))
    x = torch.randn(2, 3, IN)
    torch.testing.assert_close(module(x), source(x))
    assert f"layout={kind}" in repr(module) and "density=" in repr(module)


@pytest.mark.parametrize("case", [c for c in CASES if c[3] != "dense"], ids=case_id)
def test_int8_values_are_quantized_per_row(case):
    module, source = converted(case, int8=True)
    assert module.values.dtype == torch.int8 and module.scale.dtype == torch.float32
    assert not any(p is module.values for p in module.parameters())
    x = torch.randn(4, IN)
    y = source(x)
    assert (module(x) - y).norm() / y.norm() < 0.02
    assert "int8=True" in repr(module)
    module.half()
    assert module.scale.dtype == torch.float32 and module.bias.dtype == torch.float16


@pytest.mark.parametrize("layout,kwargs", [("csr", dict(sparsity=0.8)), ("bsr", dict(block=(8, 8), sparsity=0.75)),
                                           ("2:4", dict(sparsity=0.5))], ids=["csr", "bsr", "2:4"])
def test_training_keeps_the_pattern_and_learns_the_kept_values(layout, kwargs):
    module = SparseLinear.from_linear(linear(), layout, **kwargs)
    pattern = {name: b.clone() for name, b in module.named_buffers()}
    zeros_before = module.dense_weight() == 0
    values_before = module.values.detach().clone()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    target = torch.randn(16, OUT)
    for _ in range(5):
        x = torch.randn(16, IN, requires_grad=True)
        optimizer.zero_grad()
        F.mse_loss(module(x), target).backward()
        optimizer.step()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(torch.equal(b, pattern[name]) for name, b in module.named_buffers())
    assert not torch.equal(module.values.detach(), values_before)
    # BSR stores whole blocks: zeros inside a kept block are values and learn too.
    outside_pattern = zeros_before & (module.dense_weight() != 0)
    assert not outside_pattern.any() if layout != "bsr" else outside_pattern.sum() < zeros_before.sum()
    if layout == "bsr":
        blocks = (module.dense_weight() != 0).reshape(OUT // 8, 8, IN // 8, 8).any(dim=3).any(dim=1)
        assert blocks.sum() == module.values.shape[0]


def test_torch_nn_utils_prune_layers_use_their_mask():
    source = linear()
    torch_prune.l1_unstructured(source, "weight", amount=0.7)
    with torch.no_grad():  # weight_orig moves after the last forward: from_linear must read it, not the stale weight
        source.weight_orig.add_(1.0)
    module = SparseLinear.from_linear(source, "csr")
    expected = torch.where(source.weight_mask.bool(), source.weight_orig.detach(), 0.0)
    torch.testing.assert_close(module.dense_weight(), expected, rtol=0, atol=0)
    assert module.density == pytest.approx(0.3, abs=1 / (IN * OUT))


@pytest.mark.parametrize("case", CASES[::2] + [CASES[1]], ids=case_id)
@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_state_dict_round_trip_is_bit_exact(case, int8):
    module, _ = converted(case, int8=int8 and case[3] != "dense")
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh = SparseLinear(IN, OUT, layout=module.layout, block=module.block or (16, 16),
                         pattern=module.pattern or (2, 4), int8=module.int8)
    fresh.load_state_dict(torch.load(buffer))
    saved, loaded = module.state_dict(), fresh.state_dict()
    assert saved.keys() == loaded.keys()
    for key in saved:
        assert saved[key].dtype == loaded[key].dtype and torch.equal(saved[key], loaded[key]), key
    assert isinstance(fresh.values if fresh.layout != "dense" else fresh.weight, torch.Tensor)
    x = torch.randn(3, IN)
    assert torch.equal(fresh(x), module(x))


def test_loading_refuses_a_corrupted_or_foreign_state_and_keeps_the_module():
    module, _ = converted(CASES[1])
    state = module.state_dict()
    fresh = SparseLinear(IN, OUT, layout="csr")
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    corrupted = dict(state, col_idx=state["col_idx"].flip(0).contiguous())
    with pytest.raises(RuntimeError, match="strictly increasing"):
        fresh.load_state_dict(corrupted)
    with pytest.raises(RuntimeError, match="shape, block, pattern, int8"):
        SparseLinear(IN, OUT, layout="csr", int8=True).load_state_dict(state)
    with pytest.raises(RuntimeError, match=r"\(32, 64\)"):
        SparseLinear(IN, OUT + 1, layout="csr").load_state_dict(state)
    with pytest.raises(RuntimeError, match="missing"):
        SparseLinear(IN, OUT, layout="bsr", block=(8, 8)).load_state_dict(state)
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(layout="coo"), ValueError, "layout must be one of"),
        (dict(sparsity=1.0), ValueError, r"sparsity must be None or a number in \[0, 1\)"),
        (dict(sparsity=-0.1), ValueError, "sparsity must be"),
        (dict(sparsity=True), ValueError, "sparsity must be"),
        (dict(layout="2:4"), ValueError, "breaks the 2:4 pattern.*pass sparsity=0.5"),
        (dict(layout="2:4", sparsity=0.7), ValueError, "has sparsity 0.5"),
        (dict(layout="n:m"), ValueError, r"needs pattern=\(n, m\)"),
        (dict(layout="n:m", pattern=(2, 5)), ValueError, "m in"),
        (dict(layout="csr", pattern=(2, 4)), ValueError, "pattern= is for layout 'n:m'"),
        (dict(layout="bsr", block=(16, 24)), ValueError, "does not divide"),
        (dict(expected_rows=0), ValueError, "expected_rows"),
    ],
)
def test_bad_from_linear_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SparseLinear.from_linear(linear(), **kwargs)


def test_other_bad_input():
    with pytest.raises(TypeError, match="expected an nn.Linear"):
        SparseLinear.from_linear(nn.Conv1d(4, 4, 1))
    with pytest.raises(ValueError, match="layout must be one of"):
        SparseLinear(IN, OUT, layout="2:4")
    with pytest.raises(ValueError, match="int8=True needs a sparse layout"):
        SparseLinear(IN, OUT, layout="dense", int8=True)
    module = SparseLinear.from_linear(linear(), "csr", sparsity=0.9)
    for x in (torch.randn(3, IN - 1), torch.randn(3, IN + 1), torch.tensor(1.0)):
        with pytest.raises(ValueError, match=rf"expected x \[\.\.\., {IN}\]"):
            module(x)


@pytest.mark.parametrize("layout,kwargs", [("csr", dict(sparsity=0.9)), ("bsr", dict(block=(8, 8), sparsity=0.75)),
                                           ("2:4", dict(sparsity=0.5)), ("dense", {})],
                         ids=["csr", "bsr", "2:4", "dense"])
def test_torch_compile_fullgraph(layout, kwargs):
    module = SparseLinear.from_linear(linear(), layout, **kwargs)
    x = torch.randn(4, IN)
    compiled = torch.compile(module, fullgraph=True)
    torch.testing.assert_close(compiled(x), module(x))
    compiled(x).sum().backward()
    assert module.bias.grad is not None


# ---- slimops.convert(model, SparseConfig(...)) and slimops.to_float ------------
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Sequential(nn.Linear(64, 64), nn.GELU()), nn.Linear(64, 8))


def test_convert_and_to_float():
    model = mlp()
    summary = slimops.convert(model, SparseConfig(layout="csr", sparsity=0.75, skip=("3",), min_features=40))
    assert summary.converted == ["2.0"] and summary.skipped == ["0", "3"]
    assert summary.layouts == {"2.0": "csr"}
    assert type(model[0]) is nn.Linear and isinstance(model[2][0], SparseLinear)
    assert "1 layers made SparseLinear (csr 1)" in str(summary) and summary.bytes_after < summary.bytes_before
    x = torch.randn(5, 32)
    y = model(x)
    slimops.to_float(model)
    assert type(model[2][0]) is nn.Linear
    assert (model[2][0].weight == 0).float().mean().item() == pytest.approx(0.75)
    torch.testing.assert_close(model(x), y)


def test_convert_auto_keeps_unpruned_layers_dense():
    model = mlp()
    summary = slimops.convert(model, SparseConfig())
    assert set(summary.layouts.values()) == {"dense"}
    assert all(m.layout == "dense" for m in model.modules() if isinstance(m, SparseLinear))


def test_convert_refuses_before_changing_the_model():
    model = mlp()
    with pytest.raises(ValueError, match="layout must be one of"):
        slimops.convert(model, SparseConfig(layout="ell"))
    with pytest.raises(ValueError, match="layer '0'.*breaks the 2:4 pattern"):
        slimops.convert(model, SparseConfig(layout="2:4"))
    with pytest.raises(ValueError, match="calibrate= is only used"):
        slimops.convert(model, SparseConfig(), calibrate=lambda m: None)
    assert not any(isinstance(m, SparseLinear) for m in model.modules())


# ---- slimops.choose_layout ------------------------------------------------------
def fake_fast_kernel(monkeypatch, op, why_not=lambda *args: None):
    """Put a fast kernel (computing with the fallback) ahead of op's registered kernels."""
    dtypes = (torch.float32, torch.float16, torch.bfloat16)
    fast = Kernel("fake_fast", getattr(fallback, op), ("cpu",), dtypes, why_not=why_not)
    monkeypatch.setitem(registry._KERNELS, op, [fast, *registry._KERNELS[op]])


def only_the_fallback(monkeypatch):
    for op in ("csr_linear", "bsr_linear", "nm_linear"):
        monkeypatch.setitem(registry._KERNELS, op, [k for k in registry._KERNELS[op] if k.name == "torch"])


def tables_of(monkeypatch, isa):
    """choose_layout's break-even tables as on a CPU whose kernels run isa (the policy, apart from the
    machine the tests run on)."""
    monkeypatch.setattr(sparse_layout, "_table_isa", lambda device: (isa, 1.0))


def random_weight(n=OUT, k=IN, seed=0):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


def test_a_dense_weight_stays_dense():
    choice = slimops.choose_layout(random_weight())
    assert choice.kind == "dense" and "break-even" in choice.reason
    with pytest.raises(AttributeError):
        choice.kind = "csr"  # frozen


def test_an_exact_2_4_weight_takes_nm_when_a_fast_nm_kernel_is_registered(monkeypatch):
    tables_of(monkeypatch, "avx512_vnni")
    only_the_fallback(monkeypatch)
    w = random_weight()
    w = w * prune.nm_mask(w, 2, 4)
    assert slimops.choose_layout(w).kind == "dense"
    fake_fast_kernel(monkeypatch, "nm_linear")
    choice = slimops.choose_layout(w)
    assert (choice.kind, choice.pattern) == ("nm", (2, 4)) and "fake_fast" in choice.reason
    module = SparseLinear.from_linear(zeroed(linear(), w != 0), "auto")
    assert (module.layout, module.pattern) == ("nm", (2, 4))


def test_the_cheapest_accepted_candidate_wins(monkeypatch):
    tables_of(monkeypatch, "avx512_vnni")
    only_the_fallback(monkeypatch)
    for op in ("csr_linear", "bsr_linear", "nm_linear"):
        fake_fast_kernel(monkeypatch, op)
    w = random_weight()
    assert slimops.choose_layout(w * prune.nm_mask(w, 1, 4)).pattern == (1, 4)  # 0.25 / 0.55 beats csr's 0.25 / 0.5
    # Whole 8x8 zero blocks (16x16 blocks would store more): at 16 rows 0.2 / bsr's 0.6 beats 0.2 / csr's
    # 0.5; at 1 row bsr's break-even is 0.3 and csr wins.
    blocky = w * prune.block_mask(w, (8, 8), 0.8)
    choice = slimops.choose_layout(blocky, expected_rows=16)
    assert (choice.kind, choice.block) == ("bsr", (8, 8))
    assert slimops.choose_layout(blocky, expected_rows=1).kind == "csr"
    sparse = w * prune.unstructured_mask(w, 0.9)
    assert slimops.choose_layout(sparse).kind == "csr"
    # The break-even density depends on the rows: csr at density 0.4 up to 32 rows only.
    medium = w * prune.unstructured_mask(w, 0.6)
    assert slimops.choose_layout(medium, expected_rows=8).kind == "csr"
    assert slimops.choose_layout(medium, expected_rows=64).kind == "dense"


def test_a_kernel_declining_the_call_means_dense(monkeypatch):
    only_the_fallback(monkeypatch)
    fake_fast_kernel(monkeypatch, "csr_linear", why_not=lambda x, *rest: "too many rows" if x.shape[0] > 4 else None)
    w = random_weight()
    sparse = w * prune.unstructured_mask(w, 0.9)
    assert slimops.choose_layout(sparse, expected_rows=4).kind == "csr"
    choice = slimops.choose_layout(sparse, expected_rows=5)
    assert choice.kind == "dense" and "no fast kernel" in choice.reason
    assert slimops.choose_layout(sparse, dtype=torch.float64).kind == "dense"
    assert slimops.choose_layout(sparse.double()).kind == "dense"


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("rows", [1, 16])
def test_a_sparse_choice_always_has_a_fast_kernel(sparsity, rows):
    # Whatever fast kernels are registered today, a sparse pick must come with one.
    w = random_weight(64, 128)
    for mask in (prune.unstructured_mask(w, sparsity), prune.nm_mask(w, 2, 4), prune.block_mask(w, (16, 16), sparsity)):
        choice = slimops.choose_layout(w * mask, expected_rows=rows)
        if choice.kind != "dense":
            module = SparseLinear.from_linear(zeroed(nn.Linear(128, 64), mask), "auto", expected_rows=rows)
            assert module.layout == choice.kind
            kernel = registry.choose(f"{choice.kind}_linear", torch.device("cpu"), torch.float32,
                                     _op_args(module, torch.zeros(rows, 128)))
            assert kernel.name != "torch"


def _op_args(module, x):
    if module.layout == "csr":
        return (x, module.row_ptr, module.col_idx, module.values.detach(), None, module.out_features, None)
    if module.layout == "bsr":
        return (x, module.block_row_ptr, module.block_col_idx, module.values.detach(), None, module.out_features, None)
    return (x, module.values.detach(), module.indices, None, *module.pattern, None)


def test_choose_layout_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        slimops.choose_layout(torch.ones(4))
    with pytest.raises(ValueError, match="expected_rows"):
        slimops.choose_layout(torch.ones(4, 4), expected_rows=0)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        slimops.choose_layout(torch.ones(4, 4), mask=torch.ones(4, 4))
    with pytest.raises(TypeError, match="dtype"):
        slimops.choose_layout(torch.ones(4, 4), dtype="float32")


def test_int8_values_have_their_own_break_even_at_few_rows(monkeypatch):
    tables_of(monkeypatch, "avx512_vnni")
    w = random_weight()
    medium = w * prune.unstructured_mask(w, 0.6)  # density 0.4
    assert slimops.choose_layout(medium, expected_rows=1).kind == "csr"
    assert slimops.choose_layout(medium, expected_rows=1, int8=True).kind == "dense"  # 0.4 > 0.3
    assert slimops.choose_layout(medium, expected_rows=16, int8=True).kind == "csr"


def test_the_avx2_tables_keep_csr_to_high_density_at_few_rows_and_aligned_n_m_to_64_rows(monkeypatch):
    tables_of(monkeypatch, "avx2")
    w = random_weight()
    dense_ish = w * prune.unstructured_mask(w, 0.4)  # density 0.6
    assert slimops.choose_layout(dense_ish, expected_rows=8).kind == "csr"
    assert slimops.choose_layout(dense_ish, expected_rows=32).kind == "csr"
    assert slimops.choose_layout(dense_ish, expected_rows=64).kind == "dense"  # 0.6 > 0.5
    two_four = w * prune.nm_mask(w, 2, 4)
    for rows in (1, 16, 64):  # 0.5 / 0.75 beats csr's 0.5 / 0.7 (at 64 rows 0.5 / 0.55 beats 0.5 / 0.5)
        assert slimops.choose_layout(two_four, expected_rows=rows).pattern == (2, 4)
    assert slimops.choose_layout(two_four, expected_rows=128).kind == "dense"  # 0.5 > 0.45
    assert slimops.choose_layout(w * prune.nm_mask(w, 4, 8), expected_rows=16).pattern == (4, 8)
    # 1:4 takes the generic walk's table: 0.25 / 0.55 loses to csr's 0.25 / 0.7.
    assert slimops.choose_layout(w * prune.nm_mask(w, 1, 4), expected_rows=16).kind == "csr"
    # A K that is not a multiple of 32 has no aligned runs: a 2:4 weight then goes csr.
    odd = random_weight(32, 48)
    assert slimops.choose_layout(odd * prune.nm_mask(odd, 2, 4), expected_rows=16).kind == "csr"
    medium = w * prune.unstructured_mask(w, 0.6)  # density 0.4: int8 values go to csr's gather kernel
    assert slimops.choose_layout(medium, expected_rows=1, int8=True).kind == "csr"  # 0.4 < 0.6
    assert slimops.choose_layout(w * prune.unstructured_mask(w, 0.3), expected_rows=1, int8=True).kind == "dense"
    assert slimops.choose_layout(two_four, expected_rows=1, int8=True).pattern == (2, 4)  # int8 streams too
    one_four = w * prune.nm_mask(w, 1, 4)  # density 0.25: 0.25 / csr's 0.6 beats the generic walk's 0.25 / 0.25
    assert slimops.choose_layout(one_four, expected_rows=1, int8=True).kind == "csr"


@pytest.mark.parametrize("isa", ["avx512_vnni", "avx2", "scalar"])
def test_break_even_densities_follow_the_cpu_code_path(isa):
    detected = slimops._C.detected_cpu_isa()
    if isa == "avx512_vnni" and detected != "avx512_vnni":
        pytest.skip("this CPU has no AVX-512")
    medium = random_weight() * prune.unstructured_mask(random_weight(), 0.6)  # density 0.4
    # 16 rows: csr on AVX-512 (break-even 0.5) and on an AVX2 CPU (0.7); dense on the AVX2 path of an
    # AVX-512 CPU (0.5 * 0.5) and on the scalar path.
    kind = "dense" if isa == "scalar" or (isa == "avx2" and detected == "avx512_vnni") else "csr"
    previous = slimops.cpu_isa()
    try:
        slimops.set_cpu_isa(isa)
        assert slimops.choose_layout(medium, expected_rows=16).kind == kind
    finally:
        slimops.set_cpu_isa(previous)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("isa", ["avx512_vnni", "avx2"])
def test_half_precision_weights_go_sparse_only_very_sparse_and_from_3_rows(monkeypatch, isa, dtype):
    tables_of(monkeypatch, isa)
    w = random_weight()
    very = (w * prune.unstructured_mask(w, 0.9)).to(dtype)
    assert slimops.choose_layout(very, expected_rows=1, dtype=dtype).kind == "dense"
    assert slimops.choose_layout(very, expected_rows=16, dtype=dtype).kind == "csr"
    two_four = (w * prune.nm_mask(w, 2, 4)).to(dtype)
    assert slimops.choose_layout(two_four, expected_rows=16, dtype=dtype).kind == "dense"
