"""choose_layout: the storage a pruned [N, K] weight runs fastest in, never slower than dense.

The policy: find the structure of the weight's zeros (exact N:M groups, whole zero
blocks), estimate each candidate format's cost against the dense layer as

    stored density / the format's break-even density

(the stored density counts what the format keeps and multiplies: the nonzeros for
CSR, whole blocks for BSR, n of every m for N:M), and take the cheapest candidate
below 1 whose op has a fast kernel for the call, as the kernel registry says.
Otherwise the weight stays dense.
"""

import math
import numbers
from dataclasses import dataclass

import torch

from . import _C, _ops  # noqa: F401  (_ops registers the kernels the registry is asked about)
from .backends.registry import Kernel, choose
from .formats.sparse import FLOAT_DTYPES, NM_GROUPS, BSRWeight, CSRWeight, NMWeight

__all__ = ["BREAK_EVEN_DENSITY", "LayoutChoice", "choose_layout"]

KINDS = ("dense", "csr", "bsr", "nm")
# Stored density above which a format's fast CPU kernel loses to the dense layer, per the
# CPU code path the kernels run (slimops.cpu_isa()): ((up to this many activation rows,
# density), ...), the first matching entry applies. Measured at K = N = 4096 (bench/sparse_linear.py
# style, cold weights) with about 10% margin. "nm" is for the N:M weights whose runs of 16 kept
# values are aligned (2:4 and 4:8 with K % 32 == 0: the kernels read their position fields
# directly), "nm_generic" for the other patterns (1:4, 3:8, ...; decoded run by run, slower).
BREAK_EVEN_DENSITY = {
    # On a 2-core Zen 4 (break-even measured: CSR ~0.6 at 1-16 rows, ~0.48 at 128; BSR 16x16 ~0.4 at
    # 1 row, > 0.7 at 16, ~0.55 at 128; 2:4 wins 1.4-2.5x up to 16 rows, 0.84x at 128; measured before
    # the aligned xT walk, which is not timed on AVX-512 yet).
    "avx512_vnni": {
        "csr": ((32, 0.5), (math.inf, 0.35)),
        "bsr": ((2, 0.3), (32, 0.6), (math.inf, 0.4)),
        "nm": ((32, 0.55), (math.inf, 0.45)),  # 2:4 (density 0.5) passes up to 32 rows
        "nm_generic": ((32, 0.55), (math.inf, 0.45)),
    },
    # On a 2-core Zen 2, whose torch dense layer runs AVX2 too and is slow from 2 to 16 rows (12.9 ms at
    # 8 rows against 3.3 at 1). Measured speedups over it: CSR 1.37x at density 0.7 and 1 row, 2.6x at 8,
    # 1.07x at 0.6 and 32 rows, 1.03x at 0.4 and 64, 0.99x at 0.3 and 128; BSR 16x16 1.10x at 0.3 and 1 row,
    # 1.69x at 0.7 and 8, 1.23x at 0.5 and 32, 1.14x at 0.4 and 64, 1.26x at 0.3 and 128. 2:4 (float32):
    # 2.2x at 1 row, 3.3x at 2, 3.8x at 8, 2.7x at 16, 1.7x at 32, 1.2x at 64, 1.0x at 128, as fast as CSR
    # on the same weight from 4 to 16 rows and 1.2-1.4x faster at 1-2 (int8 values: 1.13x at 64 rows,
    # 0.86x at 128); 4:8 the same. 1:4 runs the generic walk: 3.1x at 16 rows, 2.0x at 32, 1.4x at 64,
    # but CSR on the same weight is 1.4x faster, so CSR takes it. From 9 rows CSR and BSR then walked
    # their rows in lane passes (sparse_xt/lane_passes.h), measured again at 32-128 rows: CSR 1.40x at
    # density 0.7 and 32 rows, 1.08x at 0.8; 1.36x at 0.55 and 64, 0.99x at 0.65; 1.14x at 0.45 and 128,
    # 0.98x at 0.55; 0.76x at 0.45 and 512 rows. BSR 16x16 1.23x at 0.7 and 32, 1.09x at 0.8; 1.10x at 0.6
    # and 64, 0.94x at 0.7; 1.06x at 0.5 and 128, 0.90x at 0.6; 0.93x at 0.4 and 512. (CSR at 16 rows
    # stays at 0.7 although it won 1.5x at 0.9: above 0.75 it would take 2:4 weights from the faster N:M
    # kernel; at 64 rows it stays below N:M's 0.55 for the same reason.)
    "avx2": {
        "csr": ((1, 0.65), (16, 0.7), (32, 0.7), (64, 0.5), (128, 0.45), (math.inf, 0.25)),
        "bsr": ((1, 0.27), (2, 0.6), (16, 0.65), (32, 0.7), (64, 0.55), (128, 0.45), (math.inf, 0.27)),
        "nm": ((16, 0.75), (32, 0.6), (64, 0.55), (math.inf, 0.45)),
        "nm_generic": ((16, 0.55), (32, 0.4), (64, 0.25), (math.inf, 0.2)),
    },
}
# int8 values at 1-2 rows: BSR, and CSR on AVX-512, run the xT kernel (no streaming int8 kernel for
# them), which wastes most of its tiles there. Zen 4: CSR break-even ~0.4 at 1 row; N:M streams int8
# values on AVX-512 (2:4 int8 at 1 row: 3.1x dense). Zen 2: BSR 1.14x at 0.3; CSR's gather kernel and
# N:M's streaming one take int8 values on AVX2 (CSR int8 at 1 row: 5.1x dense at density 0.1, 2.5x
# at 0.3, 1.7x at 0.5, as float32 values; 2:4 int8: 2.5x dense at 1 row, 3.2x at 2; 1:4 int8 1.3x
# and 1.7x, against CSR's 1.3x and 2.5x on the same weight, so CSR takes it, cheaper). From 3 rows
# the float table applies.
BREAK_EVEN_DENSITY_INT8_FEW_ROWS = {"avx512_vnni": {"csr": 0.3, "bsr": 0.3, "nm": 0.55, "nm_generic": 0.55},
                                    "avx2": {"csr": 0.6, "bsr": 0.27, "nm": 0.75, "nm_generic": 0.25}}
INT8_FEW_ROWS = 2
# float16 / bfloat16 values run the xT kernel after widening, against torch's dense half-precision
# layer, which reads half the bytes: on the Zen 4 (bf16 dot products), CSR at density 0.1 wins
# from 16 rows (bf16 2.6x, fp16 1.5x) and loses at 1 row (bf16 0.5x), 2:4 and density 0.3 lose; on
# the Zen 2, CSR at density 0.2 loses at 1 row (bf16 1.08x, fp16 0.39x) and wins from 3 (bf16 3.0x;
# fp16 2.3x at 16). So on both, half-precision weights go sparse only very sparse, from 3 rows.
BREAK_EVEN_DENSITY_HALF = {"csr": ((2, 0.0), (math.inf, 0.12)), "bsr": ((2, 0.0), (math.inf, 0.12)),
                           "nm": ((math.inf, 0.0),), "nm_generic": ((math.inf, 0.0),)}
# The AVX2 path on an AVX-512 CPU runs half-width vectors against torch's AVX-512 dense layer
# (Zen 4: CSR at density 0.45 and 16 rows 1.13x slower than dense, 1.3x faster on AVX-512): the
# AVX-512 tables scaled by this. The scalar path loses to torch's vectorized dense layer almost
# everywhere, so sparse layouts are never picked on it.
AVX2_ON_AVX512_SCALE = 0.5
# Block sizes tried for BSR, largest (fewest index entries per value) first.
BSR_BLOCKS = ((16, 16), (8, 8), (4, 4))
# Every sparse op has this kernel: it rebuilds the dense weight on each call, so it is never faster.
SLOW_FALLBACK = "torch"

@dataclass(frozen=True)
class LayoutChoice:
    kind: str  # "dense", "csr", "bsr" or "nm"
    block: tuple[int, int] | None = None  # for "bsr"
    pattern: tuple[int, int] | None = None  # for "nm": (n, m)
    reason: str = ""

    def __str__(self) -> str:
        return f"{describe(self.kind, self.block, self.pattern)} ({self.reason})"


def describe(kind: str, block=None, pattern=None) -> str:
    """"csr", "bsr 16x16", "nm 2:4" or "dense"."""
    if kind == "bsr":
        return f"bsr {block[0]}x{block[1]}"
    if kind == "nm":
        return f"nm {pattern[0]}:{pattern[1]}"
    return kind


def break_even_density(kind: str, rows: int, int8: bool = False, device="cpu", half: bool = False) -> float:
    """kind: a key of the tables ("csr", "bsr", "nm" or "nm_generic"); half: float16 or bfloat16
    values (and not int8)."""
    isa, scale = _table_isa(device)
    if int8 and rows <= INT8_FEW_ROWS:
        density = BREAK_EVEN_DENSITY_INT8_FEW_ROWS[isa][kind]
    else:
        table = BREAK_EVEN_DENSITY_HALF if half and not int8 else BREAK_EVEN_DENSITY[isa]
        density = next(density for max_rows, density in table[kind] if rows <= max_rows)
    return density * scale


def _table_isa(device) -> tuple[str, float]:
    """(the ISA whose tables apply, a factor on them). Off the CPU the AVX-512 tables stand in
    until GPU break-evens are measured."""
    if torch.device(device).type != "cpu":
        return "avx512_vnni", 1.0
    active = _C.cpu_isa()
    if active == "avx2" and _C.detected_cpu_isa() == "avx512_vnni":
        return "avx512_vnni", AVX2_ON_AVX512_SCALE
    if active == "scalar":
        return "avx512_vnni", 0.0  # every break-even 0: never sparse
    return active, 1.0


@dataclass(frozen=True)
class _Candidate:
    kind: str
    stored_density: float
    block: tuple[int, int] | None = None
    pattern: tuple[int, int] | None = None


def choose_layout(weight: torch.Tensor, expected_rows: int = 1, device="cpu", dtype: torch.dtype = torch.float32,
                  *, mask: torch.Tensor | None = None, int8: bool = False) -> LayoutChoice:
    """The layout for weight [N, K] when it multiplies activations of dtype on device,
    expected_rows rows at a time. mask (bool [N, K], True = kept) defaults to
    weight != 0; int8=True asks about int8 values with per-row scales."""
    _check_arguments(weight, expected_rows, dtype, mask)
    mask = (weight != 0) if mask is None else mask
    if weight.numel() == 0:
        return LayoutChoice("dense", reason="the weight is empty")
    if weight.dtype not in FLOAT_DTYPES:
        return LayoutChoice("dense", reason=f"the sparse formats do not store {weight.dtype} values")
    if dtype not in FLOAT_DTYPES:
        return LayoutChoice("dense", reason=f"the sparse ops do not take {dtype} activations")
    rejected = []
    half = weight.dtype in (torch.float16, torch.bfloat16)
    def limit_of(c):
        return break_even_density(_table_kind(c, weight.shape[1]), expected_rows, int8, device, half)

    candidates = sorted(_candidates(mask), key=lambda c: c.stored_density / max(limit_of(c), 1e-12))
    for candidate in candidates:  # a stable sort: on equal cost the earlier (2:4, larger blocks) wins
        name = describe(candidate.kind, candidate.block, candidate.pattern)
        limit = limit_of(candidate)
        if candidate.stored_density > limit:
            rejected.append(f"{name} stores {candidate.stored_density:.2f} > break-even {limit:.2f}")
            continue
        kernel = _fast_kernel(candidate, weight, mask, int8, expected_rows, torch.device(device), dtype)
        if kernel is None:
            rejected.append(f"{name} stores {candidate.stored_density:.2f} but has no fast kernel for this call")
            continue
        reason = (f"stores {candidate.stored_density:.2f} of the weight, below break-even {limit:.2f} "
                  f"with expected_rows={expected_rows}; kernel {kernel.name}")
        return LayoutChoice(candidate.kind, candidate.block, candidate.pattern, reason)
    return LayoutChoice("dense", reason="; ".join(rejected))


def _check_arguments(weight, expected_rows, dtype, mask) -> None:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"choose_layout: expected a 2-D [N, K] weight tensor, got {getattr(weight, 'shape', weight)}")
    if isinstance(expected_rows, bool) or not isinstance(expected_rows, numbers.Integral) or expected_rows < 1:
        raise ValueError(f"choose_layout: expected_rows must be a positive int, got {expected_rows!r}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"choose_layout: dtype must be a torch.dtype, got {dtype!r}")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool
                             or mask.shape != weight.shape):
        raise ValueError(f"choose_layout: mask must be a bool tensor of the weight's shape {tuple(weight.shape)}")


def _table_kind(candidate: _Candidate, k: int) -> str:
    """The break-even tables' key for a candidate of a weight with k columns."""
    if candidate.kind != "nm":
        return candidate.kind
    n, m = candidate.pattern
    aligned = 16 % n == 0 and 16 // n * m == 32 and k % 32 == 0  # as nm_rows_all_aligned in sparse_xt/kernel.h
    return "nm" if aligned else "nm_generic"


def _candidates(mask: torch.Tensor) -> list[_Candidate]:
    """CSR, BSR at every block size that tiles the weight, and for each group size m
    the tightest exact n:m the weight fits; 2:4 before 4:8, larger blocks first."""
    n, k = mask.shape
    found = [_Candidate("csr", mask.float().mean().item())]
    for bn, bk in BSR_BLOCKS:
        if n % bn == 0 and k % bk == 0:
            found.append(_Candidate("bsr", _kept_blocks(mask, (bn, bk)).float().mean().item(), block=(bn, bk)))
    for m in NM_GROUPS:
        if k % m == 0:
            most_kept = max(int(mask.reshape(n, k // m, m).sum(dim=-1).max()), 1)
            if most_kept < m:
                found.append(_Candidate("nm", most_kept / m, pattern=(most_kept, m)))
    return found


def _fast_kernel(candidate, weight, mask, int8, rows, device, dtype) -> Kernel | None:
    """The registry's kernel for the candidate's op on an x of `rows` rows, unless it is
    only the slow fallback (or no kernel takes the call)."""
    # Declines read x's shape and dtype only: one zero row, expanded, costs no memory.
    x = torch.zeros((1, weight.shape[1]), dtype=dtype, device=weight.device).expand(rows, -1)
    op, args = _op_call(_build(candidate, weight, mask, int8), x)
    try:
        kernel = choose(op, device, dtype, args)
    except NotImplementedError:
        return None
    return None if kernel.name == SLOW_FALLBACK else kernel


def _build(candidate, weight, mask, int8):
    if candidate.kind == "csr":
        return CSRWeight.from_dense(weight, mask, quantize_int8=int8)
    if candidate.kind == "bsr":
        return BSRWeight.from_dense(weight, candidate.block, _kept_blocks(mask, candidate.block), quantize_int8=int8)
    return NMWeight.from_dense(weight, candidate.pattern, mask, quantize_int8=int8)


def _kept_blocks(mask: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """bool [N/bn, K/bk]: the blocks holding a kept element."""
    (n, k), (bn, bk) = mask.shape, block
    return mask.reshape(n // bn, bn, k // bk, bk).any(dim=3).any(dim=1)


def _op_call(w, x: torch.Tensor) -> tuple[str, tuple]:
    """(op name, arguments, no bias) of the torch.ops.slimops op running the format object w on x."""
    if isinstance(w, CSRWeight):
        return "csr_linear", (x, w.row_ptr, w.col_idx, w.values, w.scale, w.shape[0], None)
    if isinstance(w, BSRWeight):
        return "bsr_linear", (x, w.block_row_ptr, w.block_col_idx, w.values, w.scale, w.shape[0], None)
    return "nm_linear", (x, w.values, w.indices, w.scale, *w.pattern, None)
