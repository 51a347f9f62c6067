#!/usr/bin/env bash
# One-shot check on a GPU machine: build slimops with CUDA, run the CUDA and Triton
# tests on the GPU, run the CUDA benchmarks, print a summary table last.
# Usage, from the repository root: OUT=/some/dir bash scripts/gpu_check.sh
# Nothing is downloaded. Every step runs even when an earlier one fails, under a
# shared deadline (DEADLINE_S, default 290 s), so one run reports everything.
# Files written under $OUT: env.txt build.log tests.log bench.log gpu_bench.json gpu_bench_sparse.json
# (+ the bench plot, if matplotlib is there) summary.txt.
set -uo pipefail
export PYTHONUNBUFFERED=1

OUT=${OUT:?set OUT to the output folder}
PY=${PYTHON:-python3}
DEADLINE=$((SECONDS + ${DEADLINE_S:-290}))
mkdir -p "$OUT"
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
export CUDACXX=${CUDACXX:-$(command -v nvcc || true)}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
# The test modules default TRITON_INTERPRET to 1 (CPU interpreter); 0 runs Triton on the GPU.
export TRITON_INTERPRET=0

SUMMARY=()
# step NAME CAP_S LOG COMMAND...: run under min(CAP_S, time left), append to LOG, record status.
step() {
  local name=$1 cap=$2 log=$3; shift 3
  local left=$((DEADLINE - SECONDS)) start=$SECONDS rc
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -le 5 ]; then
    SUMMARY+=("$(printf '%-8s %-9s %5s  %s' "$name" "SKIPPED" "0" "deadline reached")")
    return
  fi
  echo "=== $name: $* (limit ${limit}s)" | tee -a "$log"
  # timeout needs a program, so the step's shell function runs in a child bash (export -f below).
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >>"$log" 2>&1
  rc=$?
  local status=ok
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=TIMEOUT; elif [ $rc -ne 0 ]; then status="FAIL($rc)"; fi
  local note
  note=$(grep -E "$STEP_NOTE" "$log" 2>/dev/null | tail -1 | cut -c1-100)
  SUMMARY+=("$(printf '%-8s %-9s %5s  %s' "$name" "$status" "$((SECONDS - start))" "$note")")
}

env_report() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  nvcc --version | tail -2 || true
  "$PY" - <<'EOF'
import importlib
import torch
print("python torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
for mod in ("triton", "numpy", "pytest", "hypothesis", "matplotlib"):
    try:
        print(mod, importlib.import_module(mod).__version__)
    except ImportError:
        print(mod, "MISSING")
EOF
}

build() {
  "$PY" -m pip install --no-build-isolation --no-deps --no-index -v \
    -C cmake.define.SLIMOPS_CUDA=ON -C build-dir=build/gpu-check . || return
  (cd /tmp && "$PY" -c "import slimops, slimops._C as c; print('installed', slimops.__file__, 'has_cuda', c.has_cuda)") || return
  if command -v cuobjdump >/dev/null; then
    local so
    so=$(cd /tmp && "$PY" -c "import slimops._C as c; print(c.__file__)")
    echo "--- cuobjdump --dump-resource-usage $so"
    cuobjdump --dump-resource-usage "$so" | grep -E "arch|REG|STACK" | sed -E 's/_ZN[0-9A-Za-z_]*quantize_rows/quantize_rows/'
  fi
}

# pytest and hypothesis are on the GPU image (device KINDS.md).
# pytest-xdist is there too: -n 8 compiles the Triton configs in parallel.
run_tests() {
  SLIMOPS_ALLOW_UNVERIFIED=1 "$PY" -m pytest -q -rfs -p no:cacheprovider -n 8 "$@"
}

# bench SECONDS_LEFT JSON_NAME [bench options...]
bench() {
  local left=$1 json=$2 quick=()
  shift 2
  # With under a minute left, a short pass says more than a killed full one.
  if [ "$left" -lt 60 ]; then quick=(--quick); fi
  SLIMOPS_ALLOW_UNVERIFIED=1 "$PY" -m bench --device cuda --json "$OUT/$json" "${quick[@]}" "$@"
}

export OUT PY
export -f env_report build run_tests bench

STEP_NOTE='^(device|python torch) ' step env 20 "$OUT/env.txt" env_report
STEP_NOTE='^installed |error|Error' step build 180 "$OUT/build.log" build
STEP_NOTE='passed|failed|skipped|error' step tests 130 "$OUT/tests.log" run_tests tests/test_cuda_*.py tests/test_triton_*.py
# The sparse rows (new, and their Triton kernels compile on first use) run last and write their own
# JSON, so a timeout there cannot cost the other rows.
STEP_NOTE='^targets:|[Ee]rror' step bench 200 "$OUT/bench.log" bench $((DEADLINE - SECONDS)) gpu_bench.json \
  --ops dwsep_conv2d,int8_linear,minilm,w4a16_linear
STEP_NOTE='^targets:|[Ee]rror' step sparse 120 "$OUT/bench.log" bench $((DEADLINE - SECONDS)) gpu_bench_sparse.json \
  --ops sparse_linear

{
  echo
  echo "gpu_check summary ($(date -u +%FT%TZ), ${SECONDS}s total)"
  printf '%-8s %-9s %5s  %s\n' step status sec note
  printf '%s\n' "${SUMMARY[@]}"
} | tee "$OUT/summary.txt"
