#!/usr/bin/env bash
# The main job: set up, then run the CPU benchmark suite and print its table.
# Extra arguments go to `python -m bench` (e.g. --quick, --ops int8_linear).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
.venv/bin/python -m bench "$@"
