"""examples/breast_cancer_pruning.py: gradual pruning on real data, then SparseLinear inference."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast_cancer_pruning.py"


def load_example():
    spec = importlib.util.spec_from_file_location("breast_cancer_pruning", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pruned_model_keeps_its_accuracy_and_runs_sparse():
    results = load_example().main(verbose=False)
    assert results.accuracy_dense >= 0.93
    assert results.accuracy_finetuned >= 0.90
    assert results.accuracy_pruned < results.accuracy_finetuned  # fine-tuning is what recovers it
    assert results.sparsity == pytest.approx(0.9, abs=0.01)
    assert results.predictions_match and results.max_probability_difference < 1e-5
    assert results.auto_layouts.keys() == {"0", "2"}
