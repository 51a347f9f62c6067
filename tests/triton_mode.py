"""How the Triton test modules run, imported by each before slimops.kernels.

Triton's CPU interpreter by default (CPU tensors, small shapes): TRITON_INTERPRET
must be set before triton is first imported. With TRITON_INTERPRET=0 and a GPU
the modules run the compiled kernels on CUDA tensors (scripts/gpu_check.sh).
Importing this skips the importing module when triton is not installed.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton")

INTERPRET = triton.knobs.runtime.interpret
DEVICE = "cpu" if INTERPRET else "cuda"
# Each module's pytestmark.
NEEDS_CUDA_UNLESS_INTERPRETED = pytest.mark.skipif(
    not INTERPRET and not torch.cuda.is_available(),
    reason="compiled Triton needs CUDA; set TRITON_INTERPRET=1 to use the interpreter",
)
