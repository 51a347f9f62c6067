"""Print rows as a table, write them as JSON, and (when matplotlib is installed) plot slimops' speedups."""
import importlib.util
import json
import os

from .row import SUBJECT


def _time(ms):
    return f"{ms * 1e3:.1f} us" if ms < 0.1 else f"{ms:.3f} ms"


def _shape(shape):
    return " ".join(f"{k}={v}" for k, v in shape.items())


def print_table(rows, out=print):
    out("speedup = baseline median / slimops median (> 1: slimops faster); /floor = median / physical floor")
    for r in rows:
        out("")
        cache = f"{r['cache']} x{r['copies']}" if r["copies"] > 1 else r["cache"]
        out(f"{r['op']}  {_shape(r['shape'])}  {cache}  floor {_time(r['floor_ms'])} ({r['floor_bound']})")
        out(f"  {'candidate':<12}{'median':>11}  {'p10 .. p90':<21}{'/floor':>8}{'speedup':>9}")
        for name, s in r["candidates"].items():
            spread = f"{_time(s['p10_ms'])} .. {_time(s['p90_ms'])}"
            ratio = r["ratios"].get(name)
            ratio = f"{ratio:.2f}x" if ratio is not None else ""
            out(f"  {name:<12}{_time(s['median_ms']):>11}  {spread:<21}{r['vs_floor'][name]:>8.3g}{ratio:>9}")
        for t in r["targets"]:
            verdict = {True: "met", False: "MISS", None: "n/a"}[t["met"]]
            value = "-" if t["value"] is None else f"{t['value']:.2f}"
            out(f"  target {t['label']}: {value}  {verdict}")
        for note in r["notes"]:
            out(f"  note: {note}")


def write_json(path, machine, ceilings, args, rows):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"machine": machine, "ceilings": ceilings, "args": args, "rows": rows}, f, indent=1)
        f.write("\n")


def plot(path, rows):
    """A bar per (row, baseline) of slimops' speedup; skipped silently without matplotlib. Returns the PNG path."""
    if importlib.util.find_spec("matplotlib") is None or not any(r["ratios"] for r in rows):
        return None
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = [], []
    for r in rows:
        for baseline, ratio in r["ratios"].items():
            labels.append(f"{r['op']} {_shape(r['shape'])} {r['cache']} vs {baseline}")
            values.append(ratio)
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(labels) + 1))
    ax.barh(labels, values)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
    ax.set_xlabel(f"{SUBJECT} speedup (baseline median / {SUBJECT} median)")
    ax.invert_yaxis()
    fig.tight_layout()
    png = os.path.splitext(path)[0] + ".png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
