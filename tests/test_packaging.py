"""The installed package: native module, Triton kernels under slimops.kernels,
and CUDA sources compiled whenever nvcc was available at build time."""

import pathlib
import shutil

import slimops


def test_kernels_install_inside_the_package():
    import slimops.kernels
    from slimops.kernels import int8_linear  # noqa: F401  (needs triton, a test dependency)

    package_dir = pathlib.Path(slimops.__file__).parent
    assert pathlib.Path(slimops.kernels.__file__).parent == package_dir / "kernels"
    assert pathlib.Path(slimops._C.__file__).parent == package_dir


def test_cuda_sources_were_compiled_when_nvcc_exists():
    # CI has nvcc but no GPU: the CUDA kernels must still build into _C.
    if shutil.which("nvcc"):
        assert slimops._C.has_cuda
