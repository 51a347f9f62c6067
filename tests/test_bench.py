"""The benchmark entry point runs and writes its JSON (a smoke test: speed
targets live in the benchmark output, not in tests)."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_rows(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--ops", "int8_linear", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["machine"]["torch"] and result["machine"]["cpu_model"]
    rows = result["rows"]
    assert rows and all("slimops" in r["candidates"] for r in rows)
    assert all(r["ratios"] for r in rows)


def test_cuda_only_bench_modules_import_without_a_gpu():
    run = subprocess.run([sys.executable, "-c", "import bench.sparse_linear_cuda"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
