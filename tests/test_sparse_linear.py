"""torch.ops.slimops.{csr,bsr,nm}_linear against slimops.reference, and their gradients."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

import slimops  # noqa: F401  (registers the ops)
from slimops import reference as ref
from slimops.formats import BSRWeight, CSRWeight, NMWeight

from conftest import ABS_FLOOR, ROUNDOFF, assert_within_bound, to_numpy

ops = torch.ops.slimops
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
VALUE_DTYPES = FLOAT_DTYPES + [torch.int8]
SPARSITIES = [0.0, 0.5, 0.9, 1.0]
# (format, N, K, block or pattern)
CASES = [
    ("csr", 6, 33, None), ("csr", 1, 33, None), ("csr", 7, 1, None),
    ("bsr", 8, 12, (4, 4)), ("bsr", 6, 33, (2, 3)), ("bsr", 1, 8, (1, 8)), ("bsr", 4, 1, (1, 1)),
    ("nm", 5, 12, (2, 4)), ("nm", 1, 16, (1, 4)), ("nm", 3, 24, (4, 8)), ("nm", 4, 40, (7, 8)),
    ("nm", 5, 64, (2, 4)), ("nm", 3, 96, (4, 8)),  # K % 32 == 0: the aligned-run kernels on AVX-512
]


def weight(fmt, n, k, extra, sparsity, dtype, seed=0):
    """A sparse weight of the format: value dtype `dtype` (int8: quantized from float32)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    q = dtype == torch.int8
    src = w if q else w.to(dtype)
    if fmt == "csr":
        return CSRWeight.from_dense(src, torch.rand(n, k, generator=g) >= sparsity, quantize_int8=q)
    if fmt == "bsr":
        bn, bk = extra
        mask = torch.rand(n // bn, k // bk, generator=g) >= sparsity
        return BSRWeight.from_dense(src, extra, mask, quantize_int8=q)
    pn, m = extra
    keep = torch.rand(n, k // m, m, generator=g).argsort(dim=-1) < pn
    keep &= torch.rand(n, k // m, m, generator=g) >= sparsity
    return NMWeight.from_dense(src, extra, keep.reshape(n, k), quantize_int8=q)


def op_args(sw, x, bias=None):
    """(op, arguments) of the sparse weight's op."""
    if isinstance(sw, CSRWeight):
        return ops.csr_linear, (x, sw.row_ptr, sw.col_idx, sw.values, sw.scale, sw.shape[0], bias)
    if isinstance(sw, BSRWeight):
        return ops.bsr_linear, (x, sw.block_row_ptr, sw.block_col_idx, sw.values, sw.scale, sw.shape[0], bias)
    return ops.nm_linear, (x, sw.values, sw.indices, sw.scale, *sw.pattern, bias)


def reference(sw, x, bias):
    """(expected, magnitude): the float64 reference, and the same with |x|, |values|, |scale|, |bias|."""
    n, k = sw.shape

    def run(xa, va, sa, ba):
        if isinstance(sw, CSRWeight):
            return ref.csr_linear(xa, sw.row_ptr.numpy(), sw.col_idx.numpy(), va, n, k, ba, sa)
        if isinstance(sw, BSRWeight):
            return ref.bsr_linear(xa, sw.block_row_ptr.numpy(), sw.block_col_idx.numpy(), va, n, k, ba, sa)
        return ref.nm_linear(xa, va, sw.indices.numpy(), n, k, sw.pattern, ba, sa)

    arrays = [to_numpy(x), to_numpy(sw.values), None if sw.scale is None else sw.scale.numpy(),
              None if bias is None else to_numpy(bias)]
    return run(*arrays), run(*[None if a is None else np.abs(a) for a in arrays])


def check(sw, x, bias=None):
    """Float32 dense matmul of exact float32 operands (the int8 weight rounded once
    when scaled), then the output cast: (K + 3) float32 roundings per term of
    sum |x| |w| + |bias|, plus one in x's dtype."""
    op, args = op_args(sw, x, bias)
    y = op(*args)
    assert y.dtype == x.dtype and y.shape == (*x.shape[:-1], sw.shape[0])
    expected, magnitude = reference(sw, x, bias)
    k = x.shape[-1]
    bound = ((k + 3) * ROUNDOFF[torch.float32] + ROUNDOFF[x.dtype]) * magnitude + ABS_FLOOR[x.dtype]
    assert_within_bound(y, expected, bound)
    return y


def inputs(m, k, n, dtype=torch.float32, lead=(), bias=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, m, k, generator=g).to(dtype)
    return x, (torch.randn(n, generator=g).to(dtype) if bias else None)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}-{c[3]}")
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("vdtype", VALUE_DTYPES, ids=str)
def test_matches_reference(case, sparsity, vdtype):
    fmt, n, k, extra = case
    sw = weight(fmt, n, k, extra, sparsity, vdtype)
    for m, bias in ((3, True), (1, False), (0, True)):
        check(sw, *inputs(m, k, n, bias=bias))


@pytest.mark.parametrize("case", CASES[:1] + CASES[3:4] + CASES[7:8] + CASES[9:10], ids=lambda c: c[0])
@pytest.mark.parametrize("xdtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("vdtype", VALUE_DTYPES, ids=str)
def test_activation_dtypes_and_leading_dims(case, xdtype, vdtype):
    fmt, n, k, extra = case
    sw = weight(fmt, n, k, extra, 0.5, vdtype)
    check(sw, *inputs(3, k, n, xdtype, lead=(2,)))
    check(sw, *inputs(1, k, n, xdtype, lead=(2, 2), bias=False))
    x, b = inputs(1, k, n, xdtype)
    check(sw, x[0], b)  # 1-D x
    wide, _ = inputs(4, 2 * k, n, xdtype)
    check(sw, wide[:, ::2], b)  # strided x


def test_float32_bias_with_half_activations():
    sw = weight("csr", 6, 33, None, 0.5, torch.float16)
    x, _ = inputs(3, 33, 6, torch.bfloat16)
    check(sw, x, torch.randn(6))


@pytest.mark.parametrize("case", CASES[:1] + CASES[3:4] + CASES[7:8] + CASES[9:10], ids=lambda c: c[0])
@pytest.mark.parametrize("vdtype", [torch.float32, torch.int8], ids=str)
def test_gradients_match_dense_autograd(case, vdtype):
    fmt, n, k, extra = case
    sw = weight(fmt, n, k, extra, 0.5, vdtype)
    x, b = inputs(3, k, n, lead=(2,))
    x.requires_grad_(True)
    b.requires_grad_(True)
    op, args = op_args(sw, x, b)
    g = torch.randn(2, 3, n)
    (op(*args) * g).sum().backward()
    x2, b2 = x.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    (torch.nn.functional.linear(x2, sw.to_dense().float(), b2) * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(b.grad, b2.grad)
    # Only x needing a gradient, in bfloat16; and the weight arrays get none.
    xb = x.detach().to(torch.bfloat16).requires_grad_(True)
    op, args = op_args(sw, xb)
    op(*args).float().sum().backward()
    assert xb.grad.dtype == torch.bfloat16 and xb.grad.shape == xb.shape
    assert all(not t.requires_grad for t in args[1:] if isinstance(t, torch.Tensor))


GRAD_CASES = CASES[:1] + CASES[3:4] + CASES[7:8] + CASES[9:10]


def with_trainable_values(sw):
    """The sparse weight with a fresh copy of its values that requires a gradient."""
    return dataclasses.replace(sw, values=sw.values.detach().clone().requires_grad_(True))


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c[0])
def test_values_gradcheck(case):
    # The ops take float32/16/bf16 only, so this is float32 gradcheck: y is linear in each
    # of x, values and bias, so central differences have no truncation error and a step
    # of 1e-2 leaves float32 rounding (~1e-7 |y|) well inside the tolerance.
    fmt, n, k, extra = case
    sw = weight(fmt, n, k, extra, 0.5, torch.float32)
    x, b = inputs(3, k, n, lead=(2,))
    values = sw.values.clone().requires_grad_(True)

    def f(x, values, b):
        op, args = op_args(dataclasses.replace(sw, values=values), x, b)
        return op(*args)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not a double precision")
        assert torch.autograd.gradcheck(f, (x.requires_grad_(True), values, b.requires_grad_(True)), eps=1e-2,
                                        atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c[0])
@pytest.mark.parametrize("vdtype", [torch.float32, torch.float16], ids=str)
def test_values_gradient_is_the_dense_gradient_at_the_stored_positions(case, vdtype):
    fmt, n, k, extra = case
    sw = with_trainable_values(weight(fmt, n, k, extra, 0.5, vdtype))
    x, b = inputs(3, k, n, lead=(2,))
    g = torch.randn(2, 3, n)
    op, args = op_args(sw, x, b)
    (op(*args) * g).sum().backward()
    assert sw.values.grad.dtype == vdtype and sw.values.grad.shape == sw.values.shape
    w = sw.to_dense().detach().float().requires_grad_(True)
    (torch.nn.functional.linear(x, w, b) * g).sum().backward()
    stored = dataclasses.replace(sw, values=torch.ones_like(sw.values)).to_dense() != 0
    grad_at_stored = dataclasses.replace(sw, values=sw.values.grad).to_dense().float()
    torch.testing.assert_close(grad_at_stored, torch.where(stored, w.grad, 0.0),
                               **({} if vdtype == torch.float32 else dict(rtol=1e-3, atol=1e-2)))


def saved_shapes(fn):
    """The shapes of the tensors autograd saves while fn() runs."""
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return shapes


def test_x_is_saved_only_for_the_values_gradient():
    sw = weight("csr", 6, 33, None, 0.5, torch.float32)
    x = torch.randn(5, 33, requires_grad=True)
    for values_learn in (False, True):
        op, args = op_args(with_trainable_values(sw) if values_learn else sw, x)
        assert ((5, 33) in saved_shapes(lambda: op(*args))) == values_learn


@pytest.mark.parametrize("case", GRAD_CASES[:3], ids=lambda c: c[0])
def test_values_gradient_under_opcheck_and_compile(case):
    fmt, n, k, extra = case
    sw = with_trainable_values(weight(fmt, n, k, extra, 0.5, torch.float32))
    x, b = inputs(3, k, n)
    op, args = op_args(sw, x.requires_grad_(True), b)
    torch.library.opcheck(op.default, args)
    compiled = torch.compile(lambda x: op(x, *args[1:]).square().sum(), fullgraph=True)
    compiled(x).backward()
    expected = torch.autograd.grad(op(*args).square().sum(), sw.values)[0]
    torch.testing.assert_close(sw.values.grad, expected)


@pytest.mark.parametrize("case", CASES[:1] + CASES[3:4] + CASES[7:8], ids=lambda c: c[0])
@pytest.mark.parametrize("vdtype", [torch.float16, torch.int8], ids=str)
def test_opcheck(case, vdtype):
    fmt, n, k, extra = case
    sw = weight(fmt, n, k, extra, 0.5, vdtype)
    x, b = inputs(3, k, n)
    op, args = op_args(sw, x.requires_grad_(True), b.requires_grad_(True))
    torch.library.opcheck(op.default, args)
    op, args = op_args(sw, x.detach().requires_grad_(True))
    torch.library.opcheck(op.default, args[:-1])  # bias left to its default


@pytest.mark.parametrize("case", CASES[:1] + CASES[3:4] + CASES[7:8], ids=lambda c: c[0])
def test_torch_compile_fullgraph(case):
    fmt, n, k, extra = case
    sw = weight(fmt, n, k, extra, 0.5, torch.int8)
    x, b = inputs(3, k, n)
    op, args = op_args(sw, x, b)
    f = torch.compile(lambda x: op(x, *args[1:]) * 2, fullgraph=True)
    torch.testing.assert_close(f(x), op(*args) * 2)


# ---- bad input: a clear exception before any kernel runs --------------------
def corrupted(fmt, dtype=torch.float32):
    """(op, args) of a valid weight whose index array is then overwritten."""
    sw = weight(fmt, *{"csr": (6, 33, None), "bsr": (8, 12, (4, 4)), "nm": (3, 24, (4, 8))}[fmt], 0.0, dtype)
    return op_args(sw, inputs(2, sw.shape[1], sw.shape[0])[0])


# Two activation rows: the gather kernels (for int8 values too, except on AVX-512, which runs xT).
@pytest.mark.parametrize("dtype", [torch.float32, torch.int8], ids=["f32", "int8"])
@pytest.mark.parametrize(
    "fmt,index,value",
    [("csr", 2, 33), ("csr", 2, -1), ("csr", 2, 32767), ("bsr", 2, 3), ("bsr", 2, -2),
     ("nm", 2, 0x99), ("csr", 1, "short_ptr"), ("bsr", 1, "short_ptr")],
)
def test_corrupted_index_raises(cpu_isa, fmt, index, value, dtype):
    op, args = corrupted(fmt, dtype)
    args = list(args)
    t = args[index].clone()
    if value == "short_ptr":
        t[-1] -= 1  # row_ptr[N] < nnz: the last entry falls outside every row
    else:
        t.view(-1)[3] = value  # for N:M (4:8) 0x99 holds two positions 9, past the group of 8
    args[index] = t
    with pytest.raises((IndexError, RuntimeError)):
        op(*args)


def csr_args(**overrides):
    sw = weight("csr", 6, 33, None, 0.5, torch.float32)
    x, b = inputs(2, 33, 6)
    args = dict(x=x, row_ptr=sw.row_ptr, col_idx=sw.col_idx, values=sw.values, scale=None, n=6, bias=b)
    args.update(overrides)
    return list(args.values())


NNZ = weight("csr", 6, 33, None, 0.5, torch.float32).values.numel()


@pytest.mark.parametrize(
    "overrides,exc,match",
    [
        (dict(x=torch.randn(2, 33, dtype=torch.float64)), TypeError, "float32, float16 or bfloat16"),
        (dict(x=torch.tensor(1.0)), ValueError, "scalar"),
        (dict(x=torch.randn(2, 33).to_sparse()), TypeError, "x must be a dense"),
        (dict(values=torch.ones(NNZ, dtype=torch.float64)), TypeError, "values must be float32"),
        (dict(values=torch.ones(NNZ + 1)), ValueError, "values must be"),
        (dict(values=torch.ones(NNZ, 2)[:, 0]), ValueError, "contiguous"),
        (dict(values=torch.ones(NNZ, dtype=torch.int8)), ValueError, "need a float32 per-output-channel scale"),
        (dict(scale=torch.ones(6)), ValueError, "take no scale"),
        (dict(values=torch.ones(NNZ, dtype=torch.int8), scale=torch.ones(5)), ValueError, "scale must be"),
        (dict(values=torch.ones(NNZ, dtype=torch.int8), scale=torch.ones(6, dtype=torch.float16)), ValueError,
         "scale must be float32"),
        (dict(row_ptr=torch.zeros(6, dtype=torch.int32)), ValueError, r"row_ptr must be int32/int64 \(7,\)"),
        (dict(row_ptr=torch.zeros(7, dtype=torch.int16)), ValueError, "row_ptr must be"),
        (dict(col_idx=torch.zeros(NNZ, dtype=torch.int64)), ValueError, "col_idx must be int16/int32"),
        (dict(col_idx=torch.zeros(NNZ, 1, dtype=torch.int16)), ValueError, "col_idx must be a 1-D"),
        (dict(n=7, bias=None), ValueError, "row_ptr must be"),
        (dict(n=-1), ValueError, "non-negative"),
        (dict(bias=torch.ones(7)), ValueError, "bias"),
        (dict(bias=torch.ones(6, dtype=torch.int32)), ValueError, "bias"),
        (dict(x=torch.randn(2, 33, device="meta")), ValueError, "is on cpu but x is on meta"),
        (dict(values=torch.ones(NNZ, device="meta")), ValueError, "values is on meta"),
        (dict(col_idx=torch.zeros(NNZ, dtype=torch.int16, device="meta")), ValueError, "col_idx is on meta"),
        (dict(bias=torch.ones(6, device="meta")), ValueError, "bias is on meta"),
        (dict(values=torch.ones(NNZ, dtype=torch.int8), scale=torch.ones(6, device="meta")), ValueError,
         "scale is on meta"),
        (dict(row_ptr=torch.zeros(7, dtype=torch.int32).to_sparse()), TypeError, "row_ptr must be a dense"),
    ],
)
def test_csr_bad_inputs(overrides, exc, match):
    with pytest.raises(exc, match=match):
        ops.csr_linear(*csr_args(**overrides))


def test_k_mismatch_raises():
    # CSR and BSR arrays do not record K (it comes from x): an x narrower than the
    # weight's columns is caught by the indexing, since the checks do not read the
    # indices; an x wider than them multiplies zero columns, as an [N, K] weight with
    # those columns pruned would. N:M values record K, so the checks catch it.
    with pytest.raises((IndexError, RuntimeError)):
        ops.csr_linear(*csr_args(x=torch.randn(2, 20)))
    sw = weight("bsr", 8, 12, (4, 4), 0.0, torch.float32)
    _, args = op_args(sw, torch.randn(2, 8))
    with pytest.raises((IndexError, RuntimeError)):
        ops.bsr_linear(*args)
    _, args = op_args(sw, torch.randn(2, 10))
    with pytest.raises(ValueError, match="does not divide"):
        ops.bsr_linear(*args)
    sw = weight("nm", 5, 12, (2, 4), 0.0, torch.float32)
    _, args = op_args(sw, torch.randn(2, 16))
    with pytest.raises(ValueError, match="values must be"):
        ops.nm_linear(*args)
    _, args = op_args(sw, torch.randn(2, 13))
    with pytest.raises(ValueError, match="multiple of the group size"):
        ops.nm_linear(*args)


def test_bsr_and_nm_bad_inputs():
    sw = weight("bsr", 8, 12, (4, 4), 0.5, torch.float32)
    x = torch.randn(2, 12)
    base = [x, sw.block_row_ptr, sw.block_col_idx, sw.values, None, 8, None]
    for i, v, match in [
        (3, sw.values.reshape(-1, 16), "values must be \\[nblocks, bn, bk\\]"),
        (5, 6, "does not divide"),
        (1, sw.block_row_ptr[:-1].clone(), "block_row_ptr must be"),
        (2, sw.block_col_idx.to(device="meta"), "block_col_idx is on meta"),
    ]:
        args = list(base)
        args[i] = v
        with pytest.raises(ValueError, match=match):
            ops.bsr_linear(*args)
    sw = weight("nm", 3, 24, (4, 8), 0.5, torch.int8)
    x = torch.randn(2, 24)
    base = [x, sw.values, sw.indices, sw.scale, 4, 8, None]
    for i, v, exc, match in [
        (4, 8, ValueError, "not supported"),
        (5, 6, ValueError, "not supported"),
        (4, 2, ValueError, "values must be"),
        (2, sw.indices.to(torch.int8), ValueError, "indices must be uint8"),
        (2, sw.indices[:, :-1].clone(), ValueError, "indices must be uint8"),
        (3, None, ValueError, "need a float32"),
        (1, sw.values.float(), ValueError, "take no scale"),
        (2, sw.indices.to(device="meta"), ValueError, "indices is on meta"),
        (1, sw.values.reshape(-1), ValueError, "2-D"),
    ]:
        args = list(base)
        args[i] = v
        with pytest.raises(exc, match=match):
            ops.nm_linear(*args)


def test_fake_tensors_give_shapes_without_data():
    from torch._subclasses.fake_tensor import FakeTensorMode

    for fmt, shape, extra in (("csr", (6, 33), None), ("bsr", (8, 12), (4, 4)), ("nm", (3, 24), (4, 8))):
        sw = weight(fmt, *shape, extra, 0.5, torch.int8)
        op, args = op_args(sw, torch.randn(2, 5, shape[1]), torch.randn(shape[0]))
        with FakeTensorMode() as mode:
            fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            assert op(*fake).shape == (2, 5, shape[0])


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("index_dtype", [torch.int16, torch.int32])
def test_csr_row_tails_ignore_the_entries_past_them(cpu_isa, m, index_dtype):
    """Rows of 5 stored elements: the gather kernel reads each row's partial block whole, in place, over
    the next rows' entries (and from copies at the arrays' end). Those lanes must not count, even where
    the next row stores inf and x is NaN at the column the dropped lanes read instead (0)."""
    g = torch.Generator().manual_seed(0)
    n, k = 9, 40
    dense = torch.zeros(n, k)
    for i in range(n):
        dense[i, torch.randperm(k - 1, generator=g)[:5] + 1] = torch.randn(5, generator=g)  # never column 0
    dense[1::2, 7] = float("inf")
    w = CSRWeight.from_dense(dense)
    col_idx = w.col_idx.to(index_dtype)
    x = torch.randn(m, k, generator=g)
    x[:, 0] = float("nan")
    y = ops.csr_linear(x, w.row_ptr, col_idx, w.values, None, n)
    finite = dense[::2]
    want = x.nan_to_num(0.0).double() @ finite.double().T
    assert torch.isfinite(y[:, ::2]).all()
    np.testing.assert_allclose(y[:, ::2].double().numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
