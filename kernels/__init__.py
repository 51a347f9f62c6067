"""Triton kernels for slimops, installed as ``slimops.kernels``.

Kept import-light on purpose: importing this package never imports triton, so
``import slimops`` works on machines without it. Each submodule (for example
``slimops.kernels.int8_linear``) imports triton itself and needs it installed.
"""
