#!/usr/bin/env bash
# The test command: set up, run the whole test suite, then the CPU op tests
# again against an AddressSanitizer + UBSan build of the native module.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
.venv/bin/python -m pytest -q -p no:cacheprovider tests
bash scripts/sanitize_tests.sh
