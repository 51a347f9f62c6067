"""One benchmark row: time its candidates together, then derive ratios, floor and target verdicts."""
from dataclasses import dataclass

from .harness import time_interleaved

SUBJECT = "slimops"


@dataclass
class Target:
    """A goal for the slimops candidate: speedup >= `threshold` over `baseline`, or, with no baseline, a median of
    at most `threshold` microseconds."""

    threshold: float
    baseline: str = None
    note: str = ""

    @property
    def label(self):
        goal = f">= {self.threshold:g}x {self.baseline}" if self.baseline else f"<= {self.threshold:g} us"
        return f"{goal} ({self.note})" if self.note else goal

    def verdict(self, medians, ratios):
        if SUBJECT not in medians:
            return {"label": self.label, "value": None, "met": None}
        value = ratios.get(self.baseline) if self.baseline else medians[SUBJECT] * 1e3
        met = None if value is None else (value >= self.threshold if self.baseline else value <= self.threshold)
        return {"label": self.label, "value": value, "met": met}


def measure(op, shape, cache, candidates, baselines, floor, targets=(), device="cpu", budget_s=1.5, notes=()):
    """Time `candidates` (list of harness.Candidate) interleaved and return the row as a JSON-ready dict.

    floor: (floor_ms, bound, nbytes, ops) from ceilings.floor_ms plus the counts it was computed from.
    """
    timings = time_interleaved(candidates, device=device, budget_s=budget_s)
    stats = {name: t.stats() for name, t in timings.items()}
    medians = {name: s["median_ms"] for name, s in stats.items()}
    ratios = {}
    if SUBJECT in medians:
        ratios = {b: medians[b] / medians[SUBJECT] for b in baselines if b in medians}
    floor_ms, bound, nbytes, ops = floor
    return {
        "op": op,
        "shape": shape,
        "cache": cache,
        "copies": max(len(c.calls) for c in candidates),
        "bytes": nbytes,
        "ops": ops,
        "floor_ms": floor_ms,
        "floor_bound": bound,
        "candidates": stats,
        "vs_floor": {name: m / floor_ms for name, m in medians.items()},
        "ratios": ratios,
        "targets": [t.verdict(medians, ratios) for t in targets],
        "notes": list(notes),
    }
