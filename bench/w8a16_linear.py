"""w8a16_linear on CPU: slimops (per-channel int8 weights, float32 activations and math) against fp32 F.linear on the
dequantized weight and torch's own W8A16 CPU op, torch._weight_int8pack_mm."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from . import ceilings
from .harness import Candidate, cpu_flags
from .row import SUBJECT, measure

OP = "w8a16_linear"
# (M, K, N, cache) rows. Cold rows rotate weight copies past the last-level cache.
CPU_ROWS = [(m, 4096, 4096, cache) for m in (1, 16) for cache in ("cold", "hot")]
CPU_ROWS_QUICK = [(1, 4096, 4096, "cold")]
BASELINES = ["fp32", "int8pack"]


def run(device="cpu", quick=False, budget_s=1.5, log=print):
    if device != "cpu":
        log("note: w8a16_linear has a CPU kernel only")
        return []
    import slimops  # noqa: F401  (registers torch.ops.slimops)

    with torch.inference_mode():
        return [_cpu_row(*r, budget_s) for r in (CPU_ROWS_QUICK if quick else CPU_ROWS)]


def _cpu_row(M, K, N, cache, budget_s):
    import slimops

    gen = torch.Generator().manual_seed(M * 7919 + K + N)
    llc = ceilings.for_machine("cpu", cpu_flags()).last_level_cache
    copies = 1 if cache == "hot" else max(2, math.ceil(2 * llc / (N * K)))
    packed = []
    for _ in range(copies):
        q = slimops.quantize(torch.randn(N, K, generator=gen) * 0.02, bits=8)
        packed.append((q.qdata.contiguous(), q.scale.reshape(-1).contiguous()))
    x = torch.randn(M, K, generator=gen)
    notes = [_check_once(x, *packed[0])]
    dense = [(wq.float() * ws[:, None],) for wq, ws in packed]
    candidates = [
        Candidate.rotating(SUBJECT, lambda wq, ws: torch.ops.slimops.w8a16_linear(x, wq, ws, None), packed),
        Candidate.rotating("fp32", lambda w: F.linear(x, w), dense),
        Candidate.rotating("int8pack", lambda wq, ws: torch._weight_int8pack_mm(x, wq, ws), packed),
    ]
    nbytes = N * K + 4 * N + 4 * M * K + 4 * M * N
    ops = 2 * M * K * N
    floor = (*ceilings.floor_ms(ceilings.for_machine("cpu", cpu_flags()), nbytes, ops, "fp32"), nbytes, ops)
    return measure(OP, {"M": M, "K": K, "N": N}, cache, candidates, BASELINES, floor, (), "cpu", budget_s, notes)


def _check_once(x, wq, ws):
    """slimops and torch._weight_int8pack_mm against the float64 NumPy reference on the same product."""
    from slimops import reference

    ref = reference.w8a16_linear(x.numpy(), wq.numpy(), ws.numpy())
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    errs = {name: float(np.max(np.abs(y.double().numpy() - ref))) / scale for name, y in (
        ("slimops", torch.ops.slimops.w8a16_linear(x, wq, ws, None)), ("int8pack", torch._weight_int8pack_mm(x, wq, ws)))}
    verdict = "" if max(errs.values()) <= 1e-5 else " EXCEEDS 1e-5"
    return "vs reference, max rel err: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) + verdict
