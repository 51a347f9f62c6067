"""sparse_linear: slimops' sparse kernels (CSR, BSR 16x16, 2:4) on pruned fp32 weights against what a user has
otherwise on the CPU: dense fp32 F.linear and torch's own CSR matmul (`w.to_sparse_csr()`). Each row also times
`SparseLinear.from_linear(layout="auto")`, whose goal is never to be more than 5% slower than dense.
K = N = 4096, cold cache (every candidate rotates weight copies past the last-level cache). On CUDA the Triton
rows come from bench/sparse_linear_cuda.py."""
import math

import torch
import torch.nn.functional as F

from . import ceilings
from .harness import Candidate, cpu_flags
from .row import SUBJECT, Target, measure

OP = "sparse_linear"
K = N = 4096

# (format, sparsity, M). Targets from issue 4 / ANCHORS.md.
CPU_ROWS = [("csr", 0.9, 1), ("csr", 0.9, 16), ("csr", 0.7, 1), ("csr", 0.7, 16), ("csr", 0.5, 1),
            ("2:4", 0.5, 1), ("2:4", 0.5, 16), ("bsr", 0.9, 1), ("bsr", 0.9, 128)]
CPU_ROWS_QUICK = [("csr", 0.9, 1), ("2:4", 0.5, 16)]
CPU_TARGETS = {
    ("csr", 0.9, 1): [Target(3.0, "torch-csr"), Target(4.0, "fp32")],
    ("csr", 0.9, 16): [Target(3.0, "torch-csr")],
    ("csr", 0.7, 1): [Target(1.5, "fp32")],
    ("2:4", 0.5, 1): [Target(1.7, "fp32")],
    ("2:4", 0.5, 16): [Target(1.7, "fp32")],
    ("bsr", 0.9, 128): [Target(4.0, "fp32")],
}
AUTO_GOAL = 0.95  # auto's speed over dense's, at least


def run(device="cpu", quick=False, budget_s=1.5, log=print):
    if device == "cuda":
        from . import sparse_linear_cuda

        return sparse_linear_cuda.run(quick=quick, budget_s=budget_s, log=log)
    try:
        import slimops
    except ImportError as e:
        log(f"note: slimops not importable ({e!r}); sparse_linear skipped")
        return []
    with torch.inference_mode():
        return [_cpu_row(slimops, *r, budget_s) for r in (CPU_ROWS_QUICK if quick else CPU_ROWS)]


def pruned_weight(fmt, sparsity, gen):
    """A K x N fp32 weight pruned by magnitude to the row's structure (the magnitudes are random, so this is
    random sparsity of that structure)."""
    from slimops import prune

    w = torch.randn(N, K, generator=gen)
    if fmt == "csr":
        mask = prune.unstructured_mask(w, sparsity)
    elif fmt == "bsr":
        mask = prune.block_mask(w, (16, 16), sparsity)
    else:
        mask = prune.nm_mask(w, 2, 4)
    return w * mask


def sparse_call(fmt, w):
    """(format object, its op called on x) for the row's format."""
    from slimops.formats import BSRWeight, CSRWeight, NMWeight

    ops = torch.ops.slimops
    if fmt == "csr":
        c = CSRWeight.from_dense(w)
        return c, lambda x: ops.csr_linear(x, c.row_ptr, c.col_idx, c.values, None, N)
    if fmt == "bsr":
        b = BSRWeight.from_dense(w, (16, 16))
        return b, lambda x: ops.bsr_linear(x, b.block_row_ptr, b.block_col_idx, b.values, None, N)
    nm = NMWeight.from_dense(w, (2, 4))
    return nm, lambda x: ops.nm_linear(x, nm.values, nm.indices, None, 2, 4)


def _bytes(fmt_obj):
    return sum(t.numel() * t.element_size() for t in fmt_obj.state_dict().values())


def _copies(nbytes):
    llc = ceilings.for_machine("cpu", cpu_flags()).last_level_cache
    return max(2, math.ceil(2 * llc / nbytes))


def _floor(M, nbytes):
    ms, bound = ceilings.floor_ms(ceilings.for_machine("cpu", cpu_flags()), nbytes + 4 * M * (K + N), 0, "fp32")
    return ms, bound, nbytes, 0


def _rel_err(y, want):
    return float((y - want).abs().max() / want.abs().max().clamp_min(1e-30))


def _cpu_row(slimops, fmt, sparsity, M, budget_s):
    gen = torch.Generator().manual_seed(int(sparsity * 100) + M)
    w = pruned_weight(fmt, sparsity, gen)
    x = torch.randn(M, K, generator=gen)
    fmt_obj, call = sparse_call(fmt, w)
    linear = torch.nn.Linear(K, N, bias=False)
    linear.weight.data.copy_(w)
    auto = slimops.nn.SparseLinear.from_linear(linear, layout="auto", expected_rows=M)
    want = x.double() @ w.double().T
    notes = [f"sparse layout vs fp64 product: max rel err {_rel_err(call(x).double(), want):.1e}",
             f"auto chose {auto.layout}: max rel err {_rel_err(auto(x).double(), want):.1e}"]

    sparse_bytes = _bytes(fmt_obj)
    candidates = [Candidate.rotating(SUBJECT, lambda c: c(x), [(sparse_call(fmt, w)[1],)
                                                               for _ in range(_copies(sparse_bytes))])]
    dense_copies = [(w.clone(),) for _ in range(_copies(w.numel() * 4))]
    candidates.append(Candidate.rotating("fp32", lambda d: F.linear(x, d), dense_copies))
    baselines = ["fp32"]
    if fmt == "csr":
        torch_csr = [(w.to_sparse_csr(),) for _ in range(_copies(sparse_bytes * 2))]  # int64 indices
        candidates.append(Candidate.rotating("torch-csr", lambda t: (t @ x.T).T, torch_csr))
        baselines.append("torch-csr")
    autos = [(slimops.nn.SparseLinear.from_linear(linear, layout="auto", expected_rows=M),)
             for _ in range(_copies(max(1, sum(t.numel() * t.element_size() for t in auto.state_dict().values()))))]
    candidates.append(Candidate.rotating("slimops-auto", lambda m: m(x), autos))

    shape = {"format": fmt, "sparsity": sparsity, "M": M, "K": K, "N": N}
    row = measure(OP, shape, "cold", candidates, baselines, _floor(M, sparse_bytes),
                  CPU_TARGETS.get((fmt, sparsity, M), ()), "cpu", budget_s, notes)
    medians = {name: s["median_ms"] for name, s in row["candidates"].items()}
    auto_speed = medians["fp32"] / medians["slimops-auto"]
    row["ratios"]["auto-vs-fp32"] = auto_speed
    row["targets"].append({"label": f"auto >= {AUTO_GOAL:g}x fp32 (never slower than dense)", "value": auto_speed,
                           "met": bool(auto_speed >= AUTO_GOAL)})
    return row
