"""Runs only inside scripts/sanitize_tests.sh: proves the module under test
really is the sanitizer build (so a clean run means something)."""

import os

import pytest

import slimops


@pytest.mark.skipif("asan-site" not in os.environ.get("PYTHONPATH", ""), reason="only in the sanitizer run")
def test_native_module_is_the_sanitizer_build():
    assert "asan-site" in slimops._C.__file__
    with open(slimops._C.__file__, "rb") as f:
        assert b"__asan_init" in f.read()
