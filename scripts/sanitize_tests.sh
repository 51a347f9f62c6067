#!/usr/bin/env bash
# Builds slimops._C with AddressSanitizer and UndefinedBehaviorSanitizer into
# build/asan-site and runs the CPU op tests against it. Python itself is not
# instrumented, so the ASan runtime is preloaded; leak checks are off because
# the interpreter keeps its allocations alive at exit by design.
set -euo pipefail
cd "$(dirname "$0")/.."

python=.venv/bin/python
site=build/asan-site
rm -rf "$site"
SLIMOPS_CUDA=OFF SLIMOPS_SANITIZE=ON "$python" -m pip install -q --disable-pip-version-check \
  --no-build-isolation --no-deps --target "$site" -C build-dir=build/asan .

# libstdc++ is preloaded beside the ASan runtime so that ASan's __cxa_throw
# interceptor finds the real one; otherwise the first C++ exception inside
# torch's dispatcher aborts the process.
preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
# torch.compile tests are left out: they test tracing, not the native code.
LD_PRELOAD="$preload" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  PYTHONPATH="$site" \
  "$python" -m pytest -q -p no:cacheprovider -k "not compile and not opcheck" \
  tests/test_int8_linear.py tests/test_w8a16_linear.py tests/test_w4a8_linear.py tests/test_w4a16_linear.py tests/test_dwsep_conv2d.py tests/test_quant_linear.py tests/test_csr_linear_cpu.py tests/test_bsr_nm_linear_cpu.py tests/test_sanitizer_build.py
