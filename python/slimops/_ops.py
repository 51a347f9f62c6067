"""The registry of slimops ops: each op's schema, checks, fake implementation,
autograd and per-device kernels, in one place.

Every op is registered once under CompositeExplicitAutograd with a function
that checks the arguments and asks backends.registry for the first kernel that
can take the call (CPU -> _C, CUDA -> _C/Triton once verified, any device ->
plain torch), so no device is refused.
"""

import torch

from . import _checks
from .backends import cpu, cuda, fallback
from .backends.registry import Kernel, choose, register, repeat

_lib = torch.library.Library("slimops", "DEF")

_lib.define("quantize_per_token(Tensor x) -> (Tensor, Tensor)")
_lib.define("int8_linear(Tensor x, Tensor w_int8, Tensor w_scale, Tensor? bias=None, Tensor? x_scale=None) -> Tensor")
_lib.define("w8a16_linear(Tensor x, Tensor w_int8, Tensor w_scale, Tensor? bias=None) -> Tensor")
_INT4_LINEAR_ARGS = "Tensor x, Tensor w_packed, Tensor w_scale, Tensor? w_zero_point, int group_size, Tensor? bias=None"
_lib.define(f"w4a8_linear({_INT4_LINEAR_ARGS}) -> Tensor")
_lib.define(f"w4a16_linear({_INT4_LINEAR_ARGS}) -> Tensor")

_lib.define(
    "dwsep_conv2d(Tensor x, Tensor dw_weight, Tensor? dw_bias, Tensor pw_weight, Tensor? pw_bias, "
    "int[2] stride=[1, 1], int[4] padding=[0, 0, 0, 0], int[2] dilation=[1, 1], str act1='none', "
    "str act2='none', bool residual=False) -> Tensor"
)

# Sparse weights: the arrays of slimops.formats.sparse (layout version 1). n is the
# output features N; nm_linear's pattern_n:pattern_m is its N:M pattern (N = values.shape[0]).
_lib.define("csr_linear(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor values, Tensor? scale, int n, "
            "Tensor? bias=None) -> Tensor")
_lib.define("bsr_linear(Tensor x, Tensor block_row_ptr, Tensor block_col_idx, Tensor values, Tensor? scale, "
            "int n, Tensor? bias=None) -> Tensor")
_lib.define("nm_linear(Tensor x, Tensor values, Tensor indices, Tensor? scale, int pattern_n, int pattern_m, "
            "Tensor? bias=None) -> Tensor")

_F = _checks.FLOAT_DTYPES

# ---- kernels, best first -------------------------------------------------
register("quantize_per_token", Kernel("cpu_c", cpu.quantize_per_token, ("cpu",), _F))
register(
    "quantize_per_token",
    Kernel(
        "cuda_c",
        cuda.quantize_per_token,
        ("cuda",),
        _F,
        why_not=lambda *a: None if cuda.HAS_CUDA_EXTENSION else "slimops._C was built without CUDA",
    ),
)
register("quantize_per_token", Kernel("torch", fallback.quantize_per_token, None, _F))

register("int8_linear", Kernel("cpu_c", cpu.int8_linear, ("cpu",), _F))
register(
    "int8_linear",
    Kernel(
        "cuda_triton",
        cuda.int8_linear,
        ("cuda",),
        _F,
        why_not=lambda *a: cuda.int8_linear_declines(*a),
    ),
)
# The static-scale path (torch quantization + the Triton GEMM) has not run on a GPU yet.
register(
    "int8_linear",
    Kernel("cuda_triton_static", cuda.int8_linear, ("cuda",), _F, verified=False,
           why_not=lambda *a: None if cuda.HAS_TRITON else "triton is not installed"),
)
register("int8_linear", Kernel("torch", fallback.int8_linear, None, _F))

register("w8a16_linear", Kernel("cpu_c", cpu.w8a16_linear, ("cpu",), _F))
register("w8a16_linear", Kernel("torch", fallback.w8a16_linear, None, _F))

register("w4a8_linear", Kernel("cpu_c", cpu.w4a8_linear, ("cpu",), _F))
register("w4a8_linear", Kernel("torch", fallback.w4a8_linear, None, _F))

# Passed its tests compiled on an H100. It is still slower than cuBLAS on a
# dense fp16 weight (0.2-0.7x, README), but far faster than the fallback,
# which dequantizes the whole weight on every call.
register(
    "w4a16_linear",
    Kernel(
        "cuda_triton",
        cuda.w4a16_linear,
        ("cuda",),
        _F,
        why_not=lambda *a: "triton is not installed" if not cuda.HAS_TRITON else cuda.w4a16_group_supported(*a),
    ),
)
register("w4a16_linear", Kernel("cpu_c", cpu.w4a16_linear, ("cpu",), _F))
register("w4a16_linear", Kernel("torch", fallback.w4a16_linear, None, _F))

register("dwsep_conv2d", Kernel("cpu_c", cpu.dwsep_conv2d, ("cpu",), (torch.float32,),
                                repeat=cpu.dwsep_conv2d_repeat))
# Tested in the Triton interpreter and compiled for sm_90 offline; not yet run on a GPU.
register("dwsep_conv2d", Kernel("cuda_triton", cuda.dwsep_conv2d, ("cuda",), _F, verified=False,
                                why_not=lambda *a: cuda.dwsep_declines(*a)))
register("dwsep_conv2d", Kernel("torch", fallback.dwsep_conv2d, None, _checks.DWSEP_DTYPES))

register("csr_linear", Kernel("cpu_c", cpu.csr_linear, ("cpu",), _F, why_not=cpu.csr_linear_declines))
register("bsr_linear", Kernel("cpu_c", cpu.bsr_linear, ("cpu",), _F, why_not=cpu.bsr_linear_declines))
register("nm_linear", Kernel("cpu_c", cpu.nm_linear, ("cpu",), _F, why_not=cpu.nm_linear_declines))
# Tested in the Triton interpreter only; not yet run on a GPU.
register("bsr_linear", Kernel("cuda_triton", cuda.bsr_linear, ("cuda",), _F, verified=False,
                              why_not=cuda.bsr_linear_declines))
register("nm_linear", Kernel("cuda_triton", cuda.nm_linear, ("cuda",), _F, verified=False,
                             why_not=cuda.nm_linear_declines))
# Other value dtypes (and devices without a kernel): the plain-torch dense-weight path.
register("csr_linear", Kernel("torch", fallback.csr_linear, None, _F))
register("bsr_linear", Kernel("torch", fallback.bsr_linear, None, _F))
register("nm_linear", Kernel("torch", fallback.nm_linear, None, _F))


# ---- quantize_per_token ----------------------------------------------------
@torch.library.impl(_lib, "quantize_per_token", "CompositeExplicitAutograd")
def _quantize_per_token(x):
    _checks.check_activation("quantize_per_token", x)
    return choose("quantize_per_token", x.device, x.dtype, (x,)).run(x)


@torch.library.register_fake("slimops::quantize_per_token", lib=_lib)
def _quantize_per_token_fake(x):
    _checks.check_activation("quantize_per_token", x)
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[:-1], dtype=torch.float32)


# ---- int8_linear -------------------------------------------------------------
@torch.library.impl(_lib, "int8_linear", "CompositeExplicitAutograd")
def _int8_linear(x, w_int8, w_scale, bias=None, x_scale=None):
    _checks.check_int8_linear(x, w_int8, w_scale, bias, x_scale)
    args = (x, w_int8, w_scale, bias, x_scale)
    return choose("int8_linear", x.device, x.dtype, args).run(*args)


@torch.library.register_fake("slimops::int8_linear", lib=_lib)
def _int8_linear_fake(x, w_int8, w_scale, bias=None, x_scale=None):
    _checks.check_int8_linear(x, w_int8, w_scale, bias, x_scale)
    return x.new_empty((*x.shape[:-1], w_int8.shape[0]))


def _int8_weight_setup(ctx, inputs, output):
    # x, w_int8, w_scale, bias lead the arguments of every op on an int8 weight.
    x, w_int8, w_scale, bias = inputs[:4]
    ctx.save_for_backward(w_int8, w_scale)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _int8_weight_grads(ctx, grad):
    """Gradients of x and bias through the dequantized weight (straight-through
    for any activation rounding); the int8 weight and its scale get none."""
    w_int8, w_scale = ctx.saved_tensors
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = grad @ (w_int8.to(grad.dtype) * w_scale.reshape(-1, 1).to(grad.dtype))
    if ctx.bias_dtype is not None and ctx.needs_input_grad[3]:
        grad_bias = grad.sum(dim=tuple(range(grad.dim() - 1))).to(ctx.bias_dtype)
    return grad_x, grad_bias


def _int8_linear_backward(ctx, grad):
    grad_x, grad_bias = _int8_weight_grads(ctx, grad)
    return grad_x, None, None, grad_bias, None


torch.library.register_autograd(
    "slimops::int8_linear", _int8_linear_backward, setup_context=_int8_weight_setup, lib=_lib
)


# ---- w8a16_linear ------------------------------------------------------------
@torch.library.impl(_lib, "w8a16_linear", "CompositeExplicitAutograd")
def _w8a16_linear(x, w_int8, w_scale, bias=None):
    _checks.check_w8a16_linear(x, w_int8, w_scale, bias)
    args = (x, w_int8, w_scale, bias)
    return choose("w8a16_linear", x.device, x.dtype, args).run(*args)


@torch.library.register_fake("slimops::w8a16_linear", lib=_lib)
def _w8a16_linear_fake(x, w_int8, w_scale, bias=None):
    _checks.check_w8a16_linear(x, w_int8, w_scale, bias)
    return x.new_empty((*x.shape[:-1], w_int8.shape[0]))


def _w8a16_linear_backward(ctx, grad):
    grad_x, grad_bias = _int8_weight_grads(ctx, grad)
    return grad_x, None, None, grad_bias


torch.library.register_autograd(
    "slimops::w8a16_linear", _w8a16_linear_backward, setup_context=_int8_weight_setup, lib=_lib
)


# ---- w4a8_linear -------------------------------------------------------------
@torch.library.impl(_lib, "w4a8_linear", "CompositeExplicitAutograd")
def _w4a8_linear(x, w_packed, w_scale, w_zero_point, group_size, bias=None):
    _checks.check_w4a8_linear(x, w_packed, w_scale, w_zero_point, group_size, bias)
    args = (x, w_packed, w_scale, w_zero_point, group_size, bias)
    return choose("w4a8_linear", x.device, x.dtype, args).run(*args)


@torch.library.register_fake("slimops::w4a8_linear", lib=_lib)
def _w4a8_linear_fake(x, w_packed, w_scale, w_zero_point, group_size, bias=None):
    _checks.check_w4a8_linear(x, w_packed, w_scale, w_zero_point, group_size, bias)
    return x.new_empty((*x.shape[:-1], w_packed.shape[0]))


# ---- w4a16_linear ------------------------------------------------------------
@torch.library.impl(_lib, "w4a16_linear", "CompositeExplicitAutograd")
def _w4a16_linear(x, w_packed, w_scale, w_zero_point, group_size, bias=None):
    _checks.check_int4_linear("w4a16_linear", x, w_packed, w_scale, w_zero_point, group_size, bias)
    args = (x, w_packed, w_scale, w_zero_point, group_size, bias)
    return choose("w4a16_linear", x.device, x.dtype, args).run(*args)


@torch.library.register_fake("slimops::w4a16_linear", lib=_lib)
def _w4a16_linear_fake(x, w_packed, w_scale, w_zero_point, group_size, bias=None):
    _checks.check_int4_linear("w4a16_linear", x, w_packed, w_scale, w_zero_point, group_size, bias)
    return x.new_empty((*x.shape[:-1], w_packed.shape[0]))


# ---- autograd of the 4-bit ops -----------------------------------------------
def _int4_weight_setup(ctx, inputs, output):
    x, w_packed, w_scale, w_zero_point, group_size, bias = inputs
    ctx.save_for_backward(w_packed, w_scale, w_zero_point)
    ctx.k = x.shape[-1]
    ctx.bias_dtype = None if bias is None else bias.dtype


def _int4_weight_backward(ctx, grad):
    """Gradients of x and bias through the dequantized weight (straight-through
    for the activation rounding of W4A8); the packed weight gets none."""
    w_packed, w_scale, w_zero_point = ctx.saved_tensors
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        w = fallback.int4_weight(w_packed, w_zero_point, w_scale.shape[1], ctx.k).to(grad.dtype)
        grad_x = grad @ (w * w_scale[..., None].to(grad.dtype)).reshape(w_packed.shape[0], ctx.k)
    if ctx.bias_dtype is not None and ctx.needs_input_grad[5]:
        grad_bias = grad.sum(dim=tuple(range(grad.dim() - 1))).to(ctx.bias_dtype)
    return grad_x, None, None, None, None, grad_bias


for _name in ("w4a8_linear", "w4a16_linear"):
    torch.library.register_autograd(
        f"slimops::{_name}", _int4_weight_backward, setup_context=_int4_weight_setup, lib=_lib
    )


# ---- dwsep_conv2d --------------------------------------------------------------
def _dwsep_memory_format(x):
    return torch.channels_last if _checks.is_channels_last(x) else torch.contiguous_format


@torch.library.impl(_lib, "dwsep_conv2d", "CompositeExplicitAutograd")
def _dwsep_conv2d(x, dw_weight, dw_bias, pw_weight, pw_bias, stride=(1, 1), padding=(0, 0, 0, 0),
                  dilation=(1, 1), act1="none", act2="none", residual=False):
    args = (x, dw_weight, dw_bias, pw_weight, pw_bias, list(stride), list(padding), list(dilation), act1, act2,
            residual)
    y = repeat("dwsep_conv2d", args)  # a layer's repeated call: already checked
    if y is not None:
        return y
    _checks.check_dwsep_conv2d(*args)
    y = choose("dwsep_conv2d", x.device, x.dtype, args).run(*args)
    return y.contiguous(memory_format=_dwsep_memory_format(x))


@torch.library.register_fake("slimops::dwsep_conv2d", lib=_lib)
def _dwsep_conv2d_fake(x, dw_weight, dw_bias, pw_weight, pw_bias, stride=(1, 1), padding=(0, 0, 0, 0),
                       dilation=(1, 1), act1="none", act2="none", residual=False):
    ho, wo = _checks.check_dwsep_conv2d(x, dw_weight, dw_bias, pw_weight, pw_bias, list(stride), list(padding),
                                        list(dilation), act1, act2, residual)
    shape = (x.shape[0], pw_weight.shape[0], ho, wo)
    return x.new_empty(shape).contiguous(memory_format=_dwsep_memory_format(x))


def _dwsep_setup(ctx, inputs, output):
    x, dw_weight, dw_bias, pw_weight, pw_bias = inputs[:5]
    ctx.save_for_backward(x, dw_weight, dw_bias, pw_weight, pw_bias)
    ctx.options = inputs[5:]


def _dwsep_backward(ctx, grad):
    """Recomputes the unfused chain (the intermediate is never stored) and
    differentiates it with torch's autograd."""
    saved = ctx.saved_tensors
    wanted = [i for i, t in enumerate(saved) if t is not None and ctx.needs_input_grad[i]]
    with torch.enable_grad():
        inputs = [t.detach().requires_grad_(i in wanted) if t is not None else None for i, t in enumerate(saved)]
        y = fallback.dwsep_conv2d(*inputs, *ctx.options)
        grads = torch.autograd.grad(y, [inputs[i] for i in wanted], grad) if wanted else ()
    out = [None] * 11
    for i, g in zip(wanted, grads):
        out[i] = g
    return tuple(out)


torch.library.register_autograd("slimops::dwsep_conv2d", _dwsep_backward, setup_context=_dwsep_setup, lib=_lib)


# ---- sparse linear ops: csr_linear, bsr_linear, nm_linear ---------------------
# All three take (x, weight arrays..., scale, ints..., bias=None), 7 arguments,
# so they share one implementation, fake and autograd built from this table:
# op: (checks, the dense float32 weight from (arrays..., scale, ints..., K) for the
# backward, how many weight arrays follow x, the position of values among the arguments).
_SPARSE_OPS = {
    "csr_linear": (_checks.check_csr_linear, fallback.csr_dense_weight, 3, 3),
    "bsr_linear": (_checks.check_bsr_linear, fallback.bsr_dense_weight, 3, 3),
    "nm_linear": (_checks.check_nm_linear, fallback.nm_dense_weight, 2, 1),
}
_SPARSE_ARGS = 7


def _make_sparse_op(op):
    check, dense_weight, arrays, values_at = _SPARSE_OPS[op]

    def all_args(args):
        # The dispatcher drops a trailing default bias.
        return (*args, *[None] * (_SPARSE_ARGS - len(args)))

    def impl(*args):
        args = all_args(args)
        check(*args)
        return choose(op, args[0].device, args[0].dtype, args).run(*args)

    def fake(*args):
        args = all_args(args)
        check(*args)
        # csr/bsr take N as an int; nm_linear's N is values.shape[0].
        n = args[1].shape[0] if op == "nm_linear" else args[5]
        return args[0].new_empty((*args[0].shape[:-1], n))

    def setup_context(ctx, inputs, output):
        inputs = all_args(inputs)
        x, bias = inputs[0], inputs[-1]
        ctx.values_need_grad = ctx.needs_input_grad[values_at]  # never for int8 values
        # The weight arrays and the scale; x only for the values' gradient.
        ctx.save_for_backward(*inputs[1:arrays + 2], x if ctx.values_need_grad else None)
        ctx.ints = inputs[arrays + 2:-1]
        ctx.k = x.shape[-1]
        ctx.x_dtype = x.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype

    def backward(ctx, grad):
        """Gradients of x, of float values and of bias; the sparsity pattern (the
        index arrays) and an int8 weight's scale get none."""
        *weight, x = ctx.saved_tensors
        grad_x = grad_values = grad_bias = None
        if ctx.needs_input_grad[0] or ctx.values_need_grad:
            if ctx.values_need_grad:
                weight[values_at - 1] = weight[values_at - 1].detach().requires_grad_()
            with torch.enable_grad():
                w = dense_weight(*weight, *ctx.ints, ctx.k)
        if ctx.needs_input_grad[0]:
            grad_x = (grad.float() @ w.detach()).to(ctx.x_dtype)
        if ctx.values_need_grad:
            # dL/dW = grad^T x read at the stored positions. One GEMM costs what a dense
            # layer's weight gradient costs, where products per stored value would need
            # rows x nnz memory; reading the positions is the transpose of dense_weight's
            # scatter, a gather autograd derives, so the layouts are decoded in one place.
            grad_w = grad.reshape(-1, grad.shape[-1]).float().T @ x.reshape(-1, ctx.k).float()
            (grad_values,) = torch.autograd.grad(w, weight[values_at - 1], grad_w)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[_SPARSE_ARGS - 1]:
            grad_bias = grad.sum(dim=tuple(range(grad.dim() - 1))).to(ctx.bias_dtype)
        grads = [grad_x, *[None] * (_SPARSE_ARGS - 2), grad_bias]
        grads[values_at] = grad_values
        return tuple(grads)

    torch.library.impl(_lib, op, "CompositeExplicitAutograd")(impl)
    torch.library.register_fake(f"slimops::{op}", fake, lib=_lib)
    torch.library.register_autograd(f"slimops::{op}", backward, setup_context=setup_context, lib=_lib)


for _name in _SPARSE_OPS:
    _make_sparse_op(_name)
