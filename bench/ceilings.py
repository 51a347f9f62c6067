"""Physical ceilings per machine kind, and the floor (the fastest a row could possibly run) derived from them.

The floor of a row is max(bytes / bandwidth, ops / peak): the larger of the time to stream its bytes once and the
time to do its arithmetic at peak. Measured / floor says how far a kernel is from the physical limit.
"""
from dataclasses import dataclass, asdict

MiB = 2**20


@dataclass(frozen=True)
class Ceilings:
    name: str
    bandwidth: float  # bytes/s a weight-streaming kernel can read from memory
    peaks: dict  # ops/s by compute dtype; a missing dtype means "treat as bytes-bound"
    last_level_cache: int  # bytes a cold-cache row must rotate past
    source: str

    def as_dict(self):
        return asdict(self)


# ANCHORS.md, "CPU": the 2-core AVX2 AMD EPYC machine. Copy is ~21 GB/s (read + write) and "a weight-streaming op
# at M=1 cannot beat (weight bytes) / (~25 GB/s)", so reads stream at ~25e9; fp32 sgemm 2048^3 ~127 GFLOP/s.
# ANCHORS gives no int8 peak there, so int8 rows are bytes-bound (true at small M; only a loose floor at M=128).
CPU_AVX2 = Ceilings(
    name="cpu-avx2 (ANCHORS.md)",
    bandwidth=25e9,
    peaks={"fp32": 127e9},
    last_level_cache=32 * MiB,
    source="ANCHORS.md CPU ceilings",
)

# The 2-core AVX-512 VNNI AMD EPYC machine (32 MiB L3) that bench was written on is faster than the ANCHORS.md
# machine, so its ANCHORS constants would give floors that baselines already beat. Measured here (torch 2.13.0, 2
# threads): streaming read (torch.sum of 512 MiB) 33.5 GB/s (fbgemm int8 M=1 from DRAM reaches 31.5), fp32 sgemm
# 2048^3 185 GFLOP/s, fbgemm int8 M=128..1024 at K=N=4096 ~795 GOP/s (taken as the int8 peak: the best seen).
CPU_AVX512_VNNI = Ceilings(
    name="cpu-avx512-vnni (measured by bench)",
    bandwidth=34e9,
    peaks={"fp32": 185e9, "int8": 800e9},
    last_level_cache=32 * MiB,
    source="measured on the AVX-512 VNNI dev machine; see bench/ceilings.py",
)

# The 2-core Intel Xeon (AVX-512 VNNI + AMX, KVM guest, lscpu: 2 MiB L2 a core, 480 MiB L3 shared with the
# host's other guests) that the project moved to on 2026-12-02. Measured there (torch 2.13.0, 2 threads): torch.sum
# reads 50-55 GB/s up to 64 MiB and 22-30 GB/s from 128 MiB on, so about 64 MiB of the L3 is ours; 128 MiB is taken
# as the cache a cold row rotates past (twice over, as on every machine); DRAM streaming ~26 GB/s; fp32 sgemm 2048^3 305 GFLOP/s; torch._int_mm (oneDNN on AMX) at M=128..1024,
# K=N=4096 2270-2380 GOP/s, taken as the int8 peak.
CPU_XEON_AMX = Ceilings(
    name="cpu-xeon-amx (measured by bench)",
    bandwidth=26e9,
    peaks={"fp32": 305e9, "int8": 2380e9},
    last_level_cache=128 * MiB,
    source="measured on the AMX Xeon dev machine; see bench/ceilings.py",
)

# ANCHORS.md, "GPU": H100 80GB HBM3. Device copy 2.92-3.00 TB/s; bf16 764 and fp16 710 TFLOP/s measured; int8 uses
# the datasheet dense peak (~1979 TOPS) because slimops' target (>= 1150 TOPS) is above torch._int_mm's 870.
CUDA_H100 = Ceilings(
    name="cuda-h100 (ANCHORS.md)",
    bandwidth=3.0e12,
    peaks={"fp16": 710e12, "bf16": 764e12, "int8": 1979e12},
    last_level_cache=50 * MiB,
    source="ANCHORS.md GPU ceilings",
)


def for_machine(device, cpu_flags):
    if device == "cuda":
        return CUDA_H100
    if "amx_int8" in cpu_flags:
        return CPU_XEON_AMX
    return CPU_AVX512_VNNI if "avx512_vnni" in cpu_flags else CPU_AVX2


def floor_ms(ceilings, nbytes, ops, compute_dtype):
    """Return (floor in ms, which bound sets it: 'bytes' or 'compute')."""
    t_bytes = nbytes / ceilings.bandwidth
    peak = ceilings.peaks.get(compute_dtype)
    t_ops = ops / peak if peak else 0.0
    return max(t_bytes, t_ops) * 1e3, ("bytes" if t_bytes >= t_ops else "compute")
