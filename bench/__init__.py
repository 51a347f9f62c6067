"""slimops benchmarks: one interleaved-timing harness and one file per op family. Run `python -m bench`."""
