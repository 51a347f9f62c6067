"""bsr_linear and nm_linear on CUDA: slimops' Triton kernels on a 16x16-block BSR weight (50-95% of the blocks
pruned) and a 2:4 weight, against cuBLAS fp16 on the same weight stored dense (zeros included), torch's CSR matmul
(cuSPARSE) on the same weight, and for 2:4 torch's semi-structured kernel where this torch has it. fp16, K = N =
4096, cold cache: every candidate rotates copies of its weight past twice the L2. bench/sparse_linear.py runs these
rows for --device cuda (scripts/gpu_check.sh allows the unverified Triton kernels)."""
import warnings

import torch
import torch.nn.functional as F

from . import ceilings
from .harness import Candidate
from .row import SUBJECT, Target, measure

K = N = 4096
MS = (1, 16, 128)
BLOCK = (16, 16)
BLOCK_SPARSITIES = (0.5, 0.7, 0.9, 0.95)
PATTERN = (2, 4)
BASELINES = ["cublas-fp16", "torch-csr", "torch-2:4"]
# DESIGN.md: a sparse path must never make a user slower than dense.
TARGETS = [Target(1.0, "cublas-fp16", "never slower than dense")]
DEVICE = "cuda"


def run(quick=False, budget_s=1.0, log=print):
    import slimops  # noqa: F401  (registers torch.ops.slimops)
    from slimops.formats import BSRWeight, NMWeight

    ms = (1,) if quick else MS
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    w = torch.randn(N, K, generator=gen, device=DEVICE).half() * 0.02
    rows = []
    with torch.inference_mode():
        for sparsity in (0.9,) if quick else BLOCK_SPARSITIES:
            bsr = BSRWeight.from_dense(w, BLOCK, _block_mask(sparsity, gen))
            for m in ms:
                rows.append(_row("bsr_linear", {"block": "x".join(map(str, BLOCK)), "sparsity": sparsity}, m, bsr,
                                 (bsr.block_row_ptr, bsr.block_col_idx, bsr.values), (None, N), 1 - sparsity,
                                 budget_s, log))
        kept = torch.rand(N, K // PATTERN[1], PATTERN[1], generator=gen, device=DEVICE).argsort(-1) < PATTERN[0]
        kept = kept.reshape(N, K)
        nm = NMWeight.from_dense(w * kept, PATTERN, kept)
        density = PATTERN[0] / PATTERN[1]
        for m in ms:
            rows.append(_row("nm_linear", {"pattern": f"{PATTERN[0]}:{PATTERN[1]}", "sparsity": 1 - density}, m, nm,
                             (nm.values, nm.indices), (None, *PATTERN), density, budget_s, log))
    return rows


def _block_mask(sparsity, gen):
    """Exactly round((1 - sparsity) * blocks) kept blocks, at random places."""
    rows, cols = N // BLOCK[0], K // BLOCK[1]
    order = torch.randperm(rows * cols, generator=gen, device=DEVICE)
    return (order < round((1 - sparsity) * rows * cols)).reshape(rows, cols)


def _nbytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def _rotated(arrays):
    """Enough copies of a weight's arrays that one pass over them streams twice the L2, so each call reads its
    weight from memory."""
    llc = ceilings.for_machine(DEVICE, set()).last_level_cache
    copies = max(2, -(-2 * llc // _nbytes(*arrays)))
    return [tuple(arrays)] + [tuple(a.clone() for a in arrays) for _ in range(copies - 1)]


def _row(op, shape, m, sparse, arrays, rest, density, budget_s, log):
    """One row: the slimops op on x, the format's `arrays`, then `rest` (the scale and the op's ints; no bias)
    against the baselines on the same weight."""
    gen = torch.Generator(device=DEVICE).manual_seed(m)
    x = torch.randn(m, K, generator=gen, device=DEVICE).half()
    dense = sparse.to_dense()
    slimops_op = getattr(torch.ops.slimops, op)
    y_dense = F.linear(x, dense).float()
    notes = [_rel_err("slimops", slimops_op(x, *arrays, *rest), y_dense)]
    # cuSPARSE multiplies the CSR weight by x^T: the [N, M] result comes back as a transposed view.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        csr = dense.to_sparse_csr()
    xt = x.t()
    notes.append(_rel_err("torch-csr", torch.mm(csr, xt).t(), y_dense))
    candidates = [
        Candidate.rotating(SUBJECT, lambda *a: slimops_op(x, *a, *rest), _rotated(arrays)),
        Candidate.rotating("cublas-fp16", lambda wd: F.linear(x, wd), _rotated((dense,))),
        Candidate.rotating("torch-csr", lambda c: torch.mm(c, xt), _rotated((csr,))),
    ]
    if op == "nm_linear":
        candidates += _semi_structured(x, dense, y_dense, notes)
    kernel = _chosen_kernel(op, x, arrays, rest)
    notes.append(f"slimops ran its {kernel!r} kernel")
    nbytes = _nbytes(*arrays) + 2 * m * (K + N)
    ops = round(2 * m * N * K * density)  # the products of kept weights only
    floor = (*ceilings.floor_ms(ceilings.for_machine(DEVICE, set()), nbytes, ops, "fp16"), nbytes, ops)
    log(f"{op} M={m} {shape}: timing {len(candidates)} candidates")
    return measure(op, {"M": m, "K": K, "N": N, **shape}, "cold", candidates, BASELINES, floor, TARGETS, DEVICE,
                   budget_s, notes)


def _semi_structured(x, dense, y_dense, notes):
    """torch's 2:4 kernel (CUTLASS or cuSPARSELt) on the same weight, or nothing where this torch or GPU lacks it."""
    try:
        from torch.sparse import to_sparse_semi_structured

        weights = [(to_sparse_semi_structured(w),) for (w,) in _rotated((dense,))]
        notes.append(_rel_err("torch-2:4", F.linear(x, weights[0][0]), y_dense))
    except (ImportError, RuntimeError, ValueError) as e:
        notes.append(f"torch-2:4 skipped: {str(e)[:120]}")
        return []
    return [Candidate.rotating("torch-2:4", lambda ws: F.linear(x, ws), weights)]


def _chosen_kernel(op, x, arrays, rest):
    from slimops.backends.registry import choose

    args = (x, *arrays, *rest, None)
    return choose(op, x.device, x.dtype, args).name


def _rel_err(name, y, y_dense):
    """A candidate against cuBLAS fp16 on the dense weight (a smoke check: both round in fp16)."""
    err = ((y.float() - y_dense).norm() / y_dense.norm()).item()
    return f"{name} vs fp16 linear on the dense weight: rel err {err:.1e}" + ("" if err <= 1e-2 else " EXCEEDS 1e-2")
