"""python -m bench [--device cpu|cuda] [--ops int8_linear,...] [--quick] [--json PATH]"""
import argparse
import datetime
import os
import sys

import torch

from . import (ceilings, dwsep_conv2d, harness, int8_linear, minilm, report, sparse_linear, w4a8_linear, w4a16_linear,
               w8a16_linear)

# One entry per op family: name -> run(device, quick, budget_s, log) returning row dicts.
FAMILIES = {"dwsep_conv2d": dwsep_conv2d.run, "int8_linear": int8_linear.run, "minilm": minilm.run,
            "sparse_linear": sparse_linear.run, "w4a8_linear": w4a8_linear.run,
            "w4a16_linear": w4a16_linear.run, "w8a16_linear": w8a16_linear.run}

# Wall time per row; --quick is what the test suite uses.
BUDGET_S = {("cpu", False): 2.5, ("cpu", True): 0.3, ("cuda", False): 1.0, ("cuda", True): 0.3}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--ops", default=",".join(FAMILIES), help=f"comma list of {', '.join(FAMILIES)}")
    p.add_argument("--quick", action="store_true", help="fewer shapes and a shorter time per row")
    p.add_argument("--json", help="output path (default bench/results/<device-kind>-<date>.json)")
    args = p.parse_args(argv)
    unknown = [op for op in args.ops.split(",") if op not in FAMILIES]
    if unknown:
        p.error(f"unknown op families {unknown}; known: {list(FAMILIES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    return args


def main(argv=None):
    args = parse_args(argv)
    machine = harness.machine_info(args.device)
    ceil = ceilings.for_machine(args.device, harness.cpu_flags())
    budget = BUDGET_S[(args.device, args.quick)]
    print(f"{machine['device_kind']}  torch {machine['torch']}  threads {machine['torch_threads']}  "
          f"slimops isa {machine['slimops_cpu_isa']}  ceilings: {ceil.name}")
    rows = []
    for op in args.ops.split(","):
        rows += FAMILIES[op](device=args.device, quick=args.quick, budget_s=budget, log=print)
    report.print_table(rows)

    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    path = args.json or os.path.join(os.path.dirname(__file__), "results", f"{machine['device_kind']}-{date}.json")
    report.write_json(path, machine, ceil.as_dict(), vars(args), rows)
    png = report.plot(path, rows)
    print(f"\nwrote {path}" + (f" and {png}" if png else ""))
    verdicts = [t["met"] for r in rows for t in r["targets"]]
    print(f"targets: {verdicts.count(True)} met, {verdicts.count(False)} missed, {verdicts.count(None)} not measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
