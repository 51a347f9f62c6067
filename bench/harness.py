"""Interleaved timing of the candidates of one benchmark row, and the machine description for the JSON.

Every candidate of a row is timed in the same process, in rounds (each round calls every candidate once, in a
fresh seeded shuffle so none always follows the same neighbour), so drift in clocks or load hits all alike.
"""
import datetime
import os
import subprocess
import time
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Candidate:
    """One way of computing a row. `calls` holds one zero-argument callable per input copy; the harness rotates
    through them, so with several copies of the weights each call streams weights that are not in cache."""

    name: str
    calls: list

    @classmethod
    def rotating(cls, name, fn, copies):
        return cls(name, [(lambda c=c: fn(*c)) for c in copies])


@dataclass
class Timing:
    name: str
    samples_ms: list = field(repr=False)

    def stats(self):
        p10, p50, p90 = np.percentile(self.samples_ms, [10, 50, 90])
        return {"median_ms": float(p50), "p10_ms": float(p10), "p90_ms": float(p90), "n": len(self.samples_ms)}


class _CpuClock:
    def begin_round(self):
        pass

    def time_call(self, fn):
        t0 = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t0) / 1e6

    def sync(self):
        pass


class _CudaClock:
    """CUDA events around each call; elapsed times are read once the round's work has finished."""

    # ~1 ms of GPU spin at the start of each round: the host queues the whole round behind it, so the events time
    # the kernels back to back rather than the host's launch latency (small rows are otherwise launch-bound).
    SPIN_CYCLES = 2_000_000

    def __init__(self):
        self.pending = []

    def begin_round(self):
        torch.cuda._sleep(self.SPIN_CYCLES)

    def time_call(self, fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        self.pending.append((start, end))
        return None

    def sync(self):
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) for s, e in self.pending]
        self.pending = []
        return times


def time_interleaved(candidates, device="cpu", budget_s=1.5, min_rounds=5, max_rounds=20000):
    """Time the candidates round-robin until `budget_s` of wall time is spent (at least `min_rounds` rounds).

    Warm-up (page faults, lazy init, autotuning) calls every copy of every candidate at least twice and lasts at
    least a tenth of the budget. Returns {name: Timing}.
    """
    clock = _CudaClock() if device == "cuda" else _CpuClock()
    t_warm = time.perf_counter() + 0.1 * budget_s
    passes = 0
    while passes < 2 or time.perf_counter() < t_warm:
        for c in candidates:
            for call in c.calls:
                call()
        clock.sync()
        passes += 1

    samples = {c.name: [] for c in candidates}
    # Shuffled, not rotated: rotating the start keeps the cyclic order, so each candidate always ran right after
    # the same one and inherited its cache state (with 3 candidates, slimops' whole-suite dwsep row always followed
    # eager NCHW, whose large footprint evicted slimops' inputs: 2.8 ms against 2.1 ms after eager channels_last).
    rng = np.random.default_rng(0)
    t_end = time.perf_counter() + budget_s
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() < t_end):
        order = [candidates[i] for i in rng.permutation(len(candidates))]
        clock.begin_round()
        for c in order:
            ms = clock.time_call(c.calls[rounds % len(c.calls)])
            if ms is not None:
                samples[c.name].append(ms)
        if device == "cuda":
            for c, ms in zip(order, clock.sync()):
                samples[c.name].append(ms)
        rounds += 1
    return {name: Timing(name, s) for name, s in samples.items()}


def cpu_flags():
    return set(_cpuinfo_field("flags").split())


def _cpuinfo_field(key):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":")[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _slug(text):
    return "-".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


def device_kind(device):
    """A short, file-name-safe machine label, e.g. cpu-amd-epyc-2c or cuda-h100."""
    if device == "cuda":
        name = torch.cuda.get_device_name().replace("NVIDIA", "").split()
        return "cuda-" + _slug(name[0] if name else "gpu")
    return f"cpu-{_slug(_cpuinfo_field('model name') or 'unknown')}-{os.cpu_count()}c"


def machine_info(device):
    info = {
        "device_kind": device_kind(device),
        "cpu_model": _cpuinfo_field("model name"),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "triton": _version_of("triton"),
        "slimops_cpu_isa": _slimops_isa(),
        "cuda_device": torch.cuda.get_device_name() if device == "cuda" else None,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
    }
    return info


def _version_of(module):
    try:
        return __import__(module).__version__
    except Exception:
        return None


def _slimops_isa():
    try:
        import slimops._C as C
    except Exception:
        return None
    isa = getattr(C, "cpu_isa", None)
    return isa() if isa else None


def _git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
