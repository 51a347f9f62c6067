"""w4a8_linear: slimops W4A8 (4-bit group-wise weights, per-token int8 activations) against what a user would pick
instead on the CPU: torch's own int4 kernel (`torch._weight_int4pack_mm_for_cpu`, bf16 activations) and fp32
F.linear. Group 128, symmetric."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from . import ceilings
from .harness import Candidate, cpu_flags
from .row import SUBJECT, Target, measure

OP = "w4a8_linear"
GROUP = 128

# (M, K, N, cache) rows. Cold rows rotate weight copies past the last-level cache.
CPU_ROWS = [(m, k, n, cache) for k, n in ((4096, 4096), (4096, 11008)) for m in (1, 16) for cache in ("cold", "hot")]
CPU_ROWS_QUICK = [(1, 4096, 4096, "cold"), (16, 4096, 4096, "hot")]

# Issue 3 / ANCHORS.md: best 4-bit path vs torch int4 (bf16 activations) >= 3x at M=1, >= 2x at M=16; >= 10x fp32
# at M=1. The anchors are cold-cache measurements at K=N=4096; the same goals are shown on every row of that M.
CPU_TARGETS = {}
for _k, _n in ((4096, 4096), (4096, 11008)):
    for _cache in ("cold", "hot"):
        CPU_TARGETS[(1, _k, _n, _cache)] = [Target(3.0, "torch-int4"), Target(10.0, "fp32")]
        CPU_TARGETS[(16, _k, _n, _cache)] = [Target(2.0, "torch-int4")]


def run(device="cpu", quick=False, budget_s=1.5, log=print):
    if device != "cpu":
        log("note: w4a8_linear has CPU kernels only; skipped on cuda")
        return []
    slimops = _import_slimops(log)
    with torch.inference_mode():
        return [_cpu_row(slimops, *r, budget_s) for r in (CPU_ROWS_QUICK if quick else CPU_ROWS)]


def _import_slimops(log):
    try:
        import slimops

        torch.ops.slimops.w4a8_linear
    except (ImportError, AttributeError, RuntimeError) as e:
        log(f"note: slimops w4a8_linear not importable ({e!r}); timing the baselines only")
        return None
    return slimops


def _n_copies(cache, weight_bytes):
    if cache == "hot":
        return 1
    llc = ceilings.for_machine("cpu", cpu_flags()).last_level_cache
    return max(2, math.ceil(2 * llc / weight_bytes))


def _floor(M, K, N):
    groups = K // GROUP
    nbytes = N * K // 2 + 4 * N * groups + 4 * M * K + 4 * M * N
    ops = 2 * M * K * N
    ms, bound = ceilings.floor_ms(ceilings.for_machine("cpu", cpu_flags()), nbytes, ops, "int8")
    return ms, bound, nbytes, ops


def _torch_int4(qw):
    """torch's packed int4 weight and its [K/g, N, 2] scales-and-zeros for the same product. torch dequantizes a
    nibble u as (u - 8) * scale + zero; slimops' symmetric nibble is q + 8, so zero = 0 gives q * scale."""
    u = qw.int_values().to(torch.int32) + 8
    packed = torch._convert_weight_to_int4pack_for_cpu(u.contiguous(), 1)
    scale = qw.scale.t().contiguous()
    sz = torch.stack([scale, torch.zeros_like(scale)], dim=-1).to(torch.bfloat16).contiguous()
    return packed, sz


def _check_torch_int4(x, qw, packed, sz, notes):
    """The baseline computes the same product: compared once with x @ dequantized weight (bf16 rounding)."""
    y = torch._weight_int4pack_mm_for_cpu(x.bfloat16(), packed, GROUP, sz).float()
    want = x @ qw.dequantize().t()
    err = float((y - want).abs().max() / want.abs().max().clamp_min(1e-30))
    notes.append(f"torch-int4 vs dequantized weight: max rel err {err:.2e}" + ("" if err <= 3e-2 else " EXCEEDS 3e-2"))


def _check_slimops(slimops, x, qw, notes):
    y = torch.ops.slimops.w4a8_linear(x, qw.qdata, qw.scale, None, GROUP).numpy()
    want = slimops.reference.w4a8_linear(x.numpy(), qw.qdata.numpy(), qw.scale.numpy(), None, GROUP)
    err = float(np.max(np.abs(y - want)) / max(np.max(np.abs(want)), 1e-30))
    notes.append(f"slimops vs reference: max rel err {err:.2e}" + ("" if err <= 1e-5 else " EXCEEDS 1e-5"))


def _cpu_row(slimops, M, K, N, cache, budget_s):
    gen = torch.Generator().manual_seed(M * 7919 + K + N)
    copies = _n_copies(cache, N * K // 2)
    weights = [torch.randn(N, K, generator=gen) * 0.02 for _ in range(copies)]
    x = torch.randn(M, K, generator=gen)
    xb = x.bfloat16()
    notes = []
    # Quantized with the slimops primitives whether or not the kernels import: both 4-bit candidates get the
    # same integers and scales.
    from slimops.quantization import quantize

    quantized = [quantize(w, bits=4, group_size=GROUP, symmetric=True) for w in weights]
    torch_packed = [_torch_int4(qw) for qw in quantized]
    _check_torch_int4(x, quantized[0], *torch_packed[0], notes)
    candidates = []
    if slimops is not None:
        _check_slimops(slimops, x, quantized[0], notes)
        candidates.append(Candidate.rotating(
            SUBJECT, lambda wp, s: torch.ops.slimops.w4a8_linear(x, wp, s, None, GROUP),
            [(qw.qdata, qw.scale) for qw in quantized]))
    candidates += [
        Candidate.rotating("torch-int4", lambda p, sz: torch._weight_int4pack_mm_for_cpu(xb, p, GROUP, sz),
                           torch_packed),
        Candidate.rotating("fp32", lambda w: F.linear(x, w), [(w,) for w in weights]),
    ]
    return measure(OP, {"M": M, "K": K, "N": N}, cache, candidates, ["torch-int4", "fp32"], _floor(M, K, N),
                   CPU_TARGETS.get((M, K, N, cache), ()), "cpu", budget_s, notes)
