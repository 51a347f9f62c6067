"""w4a16_linear: on CUDA, slimops' Triton kernel (4-bit group-wise weights, fp16 activations) against cuBLAS fp16
on the dense weight and torch's int4 kernel (tinygemm, bf16 activations); on the CPU, slimops' kernel (bf16
products, float32 activations given) against fp32 F.linear and torch's int4 CPU kernel (bf16 activations)."""
import numpy as np
import torch
import torch.nn.functional as F

from . import ceilings, w4a8_linear
from .harness import Candidate, cpu_flags
from .row import SUBJECT, Target, measure

OP = "w4a16_linear"
GROUP = 128
CUDA_ROWS = [(m, 4096, 14336, "cold") for m in (1, 16, 128, 4096)]
CUDA_ROWS_QUICK = [(1, 4096, 14336, "cold")]
# ANCHORS.md: >= 3.5x cuBLAS fp16 at M=1, >= 3x at M=16, >= 1.3x at M=128.
CUDA_TARGETS = {
    (1, 4096, 14336, "cold"): [Target(3.5, "cublas-fp16")],
    (16, 4096, 14336, "cold"): [Target(3.0, "cublas-fp16")],
    (128, 4096, 14336, "cold"): [Target(1.3, "cublas-fp16")],
}


# (M, K, N, cache); the ANCHORS.md 4-bit CPU targets are those of w4a8_linear's rows.
CPU_ROWS = [(1, 4096, 4096, "cold"), (1, 4096, 4096, "hot"), (16, 4096, 4096, "cold"), (128, 4096, 4096, "hot"),
            (1, 4096, 11008, "cold")]
CPU_ROWS_QUICK = [(1, 4096, 4096, "hot"), (32, 1024, 1024, "hot")]


def run(device="cpu", quick=False, budget_s=1.5, log=print):
    import slimops

    with torch.inference_mode():
        if device == "cpu":
            return [_cpu_row(slimops, *r, budget_s) for r in (CPU_ROWS_QUICK if quick else CPU_ROWS)]
        return [_cuda_row(slimops, *r, budget_s) for r in (CUDA_ROWS_QUICK if quick else CUDA_ROWS)]


def _cpu_row(slimops, M, K, N, cache, budget_s):
    gen = torch.Generator().manual_seed(M * 7919 + K + N)
    weights = [torch.randn(N, K, generator=gen) * 0.02 for _ in range(w4a8_linear._n_copies(cache, N * K // 2))]
    x = torch.randn(M, K, generator=gen)
    xb = x.bfloat16()
    quantized = [slimops.quantize(w, bits=4, group_size=GROUP, symmetric=True) for w in weights]
    torch_packed = [w4a8_linear._torch_int4(qw) for qw in quantized]
    notes = []
    w4a8_linear._check_torch_int4(x, quantized[0], *torch_packed[0], notes)
    q = quantized[0]
    y = torch.ops.slimops.w4a16_linear(x, q.qdata, q.scale, None, GROUP).double().numpy()
    want = slimops.reference.w4a16_linear(x.numpy(), q.qdata.numpy(), q.scale.numpy(), None, GROUP)
    err = float(np.max(np.abs(y - want)) / max(np.max(np.abs(want)), 1e-30))
    notes.append(f"slimops (bf16 products) vs float64 reference: max rel err {err:.2e}"
                 + ("" if err <= 3e-2 else " EXCEEDS 3e-2"))
    candidates = [
        Candidate.rotating(SUBJECT, lambda wp, s: torch.ops.slimops.w4a16_linear(x, wp, s, None, GROUP),
                           [(qw.qdata, qw.scale) for qw in quantized]),
        Candidate.rotating("torch-int4", lambda p, sz: torch._weight_int4pack_mm_for_cpu(xb, p, GROUP, sz),
                           torch_packed),
        Candidate.rotating("fp32", lambda w: F.linear(x, w), [(w,) for w in weights]),
    ]
    nbytes = N * K // 2 + 4 * N * (K // GROUP) + 4 * M * K + 4 * M * N
    ops = 2 * M * K * N
    floor = (*ceilings.floor_ms(ceilings.for_machine("cpu", cpu_flags()), nbytes, ops, "fp32"),
             nbytes, ops)
    return measure(OP, {"M": M, "K": K, "N": N, "group": GROUP}, cache, candidates, ["torch-int4", "fp32"], floor,
                   w4a8_linear.CPU_TARGETS.get((M, K, N, cache), ()), "cpu", budget_s, notes)


def _tinygemm(x, q, reference, notes):
    """torch._weight_int4pack_mm on the same 4-bit values with bf16 activations, or None. Its packed input holds
    the even element in the high nibble, and it computes w = (u - 8) * scale + zero, so zero is 0 here."""
    try:
        u = (q.int_values().to(torch.int32) + 8)
        packed = torch._convert_weight_to_int4pack((u[:, ::2] << 4 | u[:, 1::2]).to(torch.uint8), 8)
        scale = q.scale.t()
        sz = torch.stack([scale, torch.zeros_like(scale)], dim=-1).contiguous().bfloat16()
        xb = x.bfloat16()
        y = torch._weight_int4pack_mm(xb, packed, GROUP, sz)
    except (RuntimeError, AttributeError) as e:
        notes.append(f"tinygemm skipped: {str(e)[:120]}")
        return None
    err = ((y.float() - reference).norm() / reference.norm()).item()
    notes.append(f"tinygemm vs fp16 linear on the dequantized weight: rel err {err:.1e}")
    return lambda: torch._weight_int4pack_mm(xb, packed, GROUP, sz)


def _cuda_row(slimops, M, K, N, cache, budget_s):
    gen = torch.Generator(device="cuda").manual_seed(M + K + N)
    llc = ceilings.for_machine("cuda", set()).last_level_cache
    copies = max(2, -(-2 * llc // (N * K // 2)))
    weights = [torch.randn(N, K, generator=gen, device="cuda") * 0.02 for _ in range(copies)]
    x = torch.randn(M, K, generator=gen, device="cuda", dtype=torch.float16)
    notes = []
    packed = [slimops.quantize(w, bits=4, group_size=GROUP) for w in weights]
    dense = [(q.dequantize().half(),) for q in packed]
    y = torch.ops.slimops.w4a16_linear(x, packed[0].qdata, packed[0].scale, None, GROUP)
    reference = F.linear(x, dense[0][0]).float()
    err = ((y.float() - reference).norm() / reference.norm()).item()
    notes.append(f"slimops vs fp16 linear on the dequantized weight: rel err {err:.1e}")
    candidates = [
        Candidate.rotating(SUBJECT, lambda q: torch.ops.slimops.w4a16_linear(x, q.qdata, q.scale, None, GROUP),
                           [(q,) for q in packed]),
        Candidate.rotating("cublas-fp16", lambda w: F.linear(x, w), dense),
    ]
    tiny = _tinygemm(x, packed[0], reference, notes)
    if tiny is not None:
        candidates.append(Candidate("tinygemm-bf16", [tiny]))
        notes.append("tinygemm times one weight copy (warm L2): a best case for it")
    nbytes = N * K // 2 + N * (K // GROUP) * 4 + 2 * M * K + 2 * M * N
    floor = (*ceilings.floor_ms(ceilings.for_machine("cuda", set()), nbytes, 2 * M * N * K, "fp16"),
             nbytes, 2 * M * N * K)
    return measure(OP, {"M": M, "K": K, "N": N, "group": GROUP}, cache, candidates, ["cublas-fp16", "tinygemm-bf16"],
                   floor, CUDA_TARGETS.get((M, K, N, cache), ()), "cuda", budget_s, notes)
