"""CPU kernels in slimops._C (AVX-512 VNNI, AVX2 or scalar, chosen at run time)."""

import math
import threading

import torch

from .. import _C
from .._checks import as_rows, dwsep_output_size, is_channels_last
from .dwsep_weights import entry_for, entry_of


def _rows_f32(x: torch.Tensor) -> torch.Tensor:
    """x as float32 [rows, K] rows the kernel can walk (a copy only when needed)."""
    x2 = as_rows(x)
    return x2 if x2.dtype == torch.float32 else x2.float()


def static_scale_value(x_scale: torch.Tensor) -> float:
    value = float(x_scale.reshape(()))
    if not (value > 0 and math.isfinite(value) and math.isfinite(1 / value)):
        raise ValueError(f"slimops.int8_linear: the static activation scale must be positive and finite, got {value}")
    return value


def _bias_f32(bias):
    if bias is None or (bias.dtype == torch.float32 and bias.is_contiguous()):
        return bias
    return bias.to(torch.float32).contiguous()


def _as_output(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The float32 [rows, N] kernel output in x's leading shape and dtype."""
    if x.dim() != 2:
        y = y.reshape(*x.shape[:-1], y.shape[-1])
    return y if x.dtype == torch.float32 else y.to(x.dtype)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x2 = _rows_f32(x)
    rows, cols = x2.shape
    q = torch.empty((rows, cols), dtype=torch.int8)
    scale = torch.empty(rows, dtype=torch.float32)
    _C.quantize_per_token_cpu(
        x2.data_ptr(), rows, cols, x2.stride(0), q.data_ptr(), scale.data_ptr(), torch.get_num_threads()
    )
    return q.reshape(x.shape), scale.reshape(x.shape[:-1])


def _run_int8_weight(entry, x, w_int8, w_scale, bias, *x_args):
    """Calls a native op on an int8 [N, K] weight: entry(x, rows, K, row stride,
    *x_args, w, N, w_scale, bias or 0, y, threads), y float32 [rows, N]."""
    x2 = _rows_f32(x)
    rows, k = x2.shape
    n = w_int8.shape[0]
    y = torch.empty((rows, n), dtype=torch.float32)
    # Per-call overhead matters at M=1: convert only what needs it.
    if w_scale.dim() != 1 or not w_scale.is_contiguous():
        w_scale = w_scale.reshape(-1).contiguous()
    bias = _bias_f32(bias)
    entry(
        x2.data_ptr(),
        rows,
        k,
        x2.stride(0),
        *x_args,
        w_int8.data_ptr(),
        n,
        w_scale.data_ptr(),
        0 if bias is None else bias.data_ptr(),
        y.data_ptr(),
        torch.get_num_threads(),
    )
    return _as_output(y, x)


def int8_linear(x, w_int8, w_scale, bias, x_scale=None):
    static_scale = 0.0 if x_scale is None else static_scale_value(x_scale)
    return _run_int8_weight(_C.int8_linear_cpu, x, w_int8, w_scale, bias, static_scale)


def w8a16_linear(x, w_int8, w_scale, bias):
    return _run_int8_weight(_C.w8a16_linear_cpu, x, w_int8, w_scale, bias)


def w4a8_linear(x, w_packed, w_scale, w_zero_point, group_size, bias):
    x2 = _rows_f32(x)
    rows, k = x2.shape
    n = w_packed.shape[0]
    y = torch.empty((rows, n), dtype=torch.float32)
    w_scale = w_scale.contiguous()
    if w_zero_point is not None:
        w_zero_point = w_zero_point.contiguous()
    bias = _bias_f32(bias)
    _C.w4a8_linear_cpu(
        x2.data_ptr(),
        rows,
        k,
        x2.stride(0),
        w_packed.data_ptr(),
        n,
        w_scale.data_ptr(),
        0 if w_zero_point is None else w_zero_point.data_ptr(),
        group_size,
        0 if bias is None else bias.data_ptr(),
        y.data_ptr(),
        torch.get_num_threads(),
    )
    return _as_output(y, x)


# The value type codes of the native sparse entry points.
_VALUE_TYPES = {torch.float32: 0, torch.int8: 1, torch.float16: 2, torch.bfloat16: 3}


def _takes_values(values):
    """Every value dtype of the formats: float32, float16, bfloat16, and int8 with its scale."""
    return None if values.dtype in _VALUE_TYPES else f"does not take {values.dtype} values"


def csr_linear_declines(x, row_ptr, col_idx, values, scale, n, bias):
    return _takes_values(values)


def bsr_linear_declines(x, block_row_ptr, block_col_idx, values, scale, n, bias):
    return _takes_values(values)


def nm_linear_declines(x, values, indices, scale, pattern_n, pattern_m, bias):
    return _takes_values(values)


def _values_args(values, scale):
    """(values pointer, value type code, scale pointer) for the native sparse entry points."""
    return values.data_ptr(), _VALUE_TYPES[values.dtype], _ptr(scale)


def csr_linear(x, row_ptr, col_idx, values, scale, n, bias):
    x2, bias = _rows_f32(x), _bias_f32(bias)  # named: a temporary would be freed before the call
    rows, k = x2.shape
    y = torch.empty((rows, n), dtype=torch.float32)
    _C.csr_linear_cpu(x2.data_ptr(), rows, k, x2.stride(0), row_ptr.data_ptr(), row_ptr.element_size(),
                      col_idx.data_ptr(), col_idx.element_size(), col_idx.numel(), *_values_args(values, scale), n,
                      _ptr(bias), y.data_ptr(), torch.get_num_threads())
    return _as_output(y, x)


def bsr_linear(x, block_row_ptr, block_col_idx, values, scale, n, bias):
    x2, bias = _rows_f32(x), _bias_f32(bias)  # named: a temporary would be freed before the call
    rows, k = x2.shape
    y = torch.empty((rows, n), dtype=torch.float32)
    bn, bk = values.shape[1:]
    _C.bsr_linear_cpu(x2.data_ptr(), rows, k, x2.stride(0), block_row_ptr.data_ptr(), block_row_ptr.element_size(),
                      block_col_idx.data_ptr(), block_col_idx.element_size(), block_col_idx.numel(),
                      *_values_args(values, scale), n, bn, bk, _ptr(bias), y.data_ptr(), torch.get_num_threads())
    return _as_output(y, x)


def nm_linear(x, values, indices, scale, pattern_n, pattern_m, bias):
    x2, bias = _rows_f32(x), _bias_f32(bias)  # named: a temporary would be freed before the call
    rows, k = x2.shape
    n = values.shape[0]
    y = torch.empty((rows, n), dtype=torch.float32)
    _C.nm_linear_cpu(x2.data_ptr(), rows, k, x2.stride(0), *_values_args(values, scale), indices.data_ptr(), n,
                     pattern_n, pattern_m, _ptr(bias), y.data_ptr(), torch.get_num_threads())
    return _as_output(y, x)


def _bf16_gemm_is_fast() -> bool:
    """Whether torch's CPU bf16 GEMM has native bf16 dot products here (AVX-512 BF16 or AMX): on the
    AVX2-only Zen 2 it ran 2.3x slower than float32 at 16 rows and 6x at 128."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        probe = getattr(torch.cpu, name, None)
        if probe is not None and probe():
            return True
    return False


BF16_GEMM_IS_FAST = _bf16_gemm_is_fast()
# From this many activation rows on, w4a16_linear dequantizes the weight once to
# bf16 and runs a GEMM: torch's (oneDNN's) bf16 one where it is fast, else
# float32 on the bf16 operands widened (exact), in slices of W4A16_F32_SLICE
# output rows. Below, its own kernel streams the packed weight once and decodes
# it in registers (measured crossovers: 6 rows on the Zen 4 with bf16 dot
# products; on the Zen 2 the kernel took 11.8 ms at 6 rows and 30.9 at 16, the
# float32 GEMM 17.9 and 20.5, at K = N = 4096).
W4A16_GEMM_MIN_ROWS = 6 if BF16_GEMM_IS_FAST else 10
W4A16_F32_SLICE = 1024


def _ptr(t):
    """A tensor's data pointer for the native entry points, 0 for None."""
    return 0 if t is None else t.data_ptr()


_scratch = threading.local()


def _bf16_scratch(n, k):
    """This thread's reusable bf16 buffer, viewed as [n, k]. A fresh tensor of
    tens of MiB per call costs more in page faults (torch's CPU allocator hands
    large blocks back to the OS) than the GEMM that reads it; the buffer keeps
    the size of the largest weight dequantized so far."""
    return _scratch_view("w4a16", torch.bfloat16, n, k)


def _scratch_view(name, dtype, n, k):
    buf = getattr(_scratch, name, None)
    if buf is None or buf.numel() < n * k:
        # Never an inference tensor: torch ops write some of these buffers in place, in and out of
        # inference mode alike.
        with torch.inference_mode(False):
            buf = torch.empty(n * k, dtype=dtype)
        setattr(_scratch, name, buf)
    return buf[: n * k].view(n, k)


def w4a16_dequantize_bf16(w_packed, w_scale, w_zero_point, group_size, k, out=None):
    """The bf16 [N, K] weight of the CPU W4A16 path, bf16((u - z) * s), into
    out (a new tensor when None)."""
    n = w_packed.shape[0]
    w_scale = w_scale.contiguous()
    zero = None if w_zero_point is None else w_zero_point.contiguous()
    if out is None:
        out = torch.empty((n, k), dtype=torch.bfloat16)
    _C.w4a16_dequantize_bf16_cpu(w_packed.data_ptr(), n, k, w_scale.data_ptr(), _ptr(zero), group_size, out.data_ptr(),
                                 torch.get_num_threads())
    return out


def w4a16_linear(x, w_packed, w_scale, w_zero_point, group_size, bias):
    k = x.shape[-1]
    n = w_packed.shape[0]
    x2 = as_rows(x)
    bias = _bias_f32(bias)
    if x2.shape[0] >= W4A16_GEMM_MIN_ROWS:
        w = w4a16_dequantize_bf16(w_packed, w_scale, w_zero_point, group_size, k, _bf16_scratch(n, k))
        xb = x2.to(torch.bfloat16)
        y = torch.nn.functional.linear(xb, w).float() if BF16_GEMM_IS_FAST else _bf16_operands_f32_gemm(xb, w)
        if bias is not None:
            y += bias
        return _as_output(y, x)
    x2 = x2 if x2.dtype == torch.float32 else x2.float()
    y = torch.empty((x2.shape[0], n), dtype=torch.float32)
    w_scale = w_scale.contiguous()
    zero = None if w_zero_point is None else w_zero_point.contiguous()
    _C.w4a16_linear_cpu(x2.data_ptr(), x2.shape[0], k, x2.stride(0), w_packed.data_ptr(), n, w_scale.data_ptr(),
                        _ptr(zero), group_size, _ptr(bias), y.data_ptr(), torch.get_num_threads())
    return _as_output(y, x)


def _bf16_operands_f32_gemm(xb, w):
    """xb @ w^T for bf16 xb [M, K] and w [N, K], in float32 (products exact, sums in float32), w widened
    a slice of output rows at a time so that no float32 copy of the whole weight is kept."""
    n, k = w.shape
    xf = xb.float()
    y = torch.empty((xb.shape[0], n), dtype=torch.float32)
    for n0 in range(0, n, W4A16_F32_SLICE):
        n1 = min(n, n0 + W4A16_F32_SLICE)
        wf = _scratch_view("w4a16_f32", torch.float32, n1 - n0, k)
        wf.copy_(w[n0:n1])
        y[:, n0:n1] = torch.nn.functional.linear(xf, wf)
    return y


_ACTIVATION_CODES = {"none": 0, "relu": 1, "relu6": 2, "silu": 3, "hardswish": 4}


class _DwsepCall:
    """A checked call of one layer, as dwsep_conv2d ran it: what identifies a repeat of it (a dense x
    of the same shape, strides, dtype and device, and the same options) and what the kernel then takes."""

    __slots__ = ("signature", "sizes", "out_shape", "channels_last")

    def __init__(self, signature, sizes, out_shape, channels_last):
        self.signature, self.sizes, self.out_shape, self.channels_last = signature, sizes, out_shape, channels_last


def _dwsep_signature(x, stride, padding, dilation, act1, act2, residual):
    # The options as the op passes them: stride, padding and dilation as lists of ints (the
    # dispatcher makes ints of int[] arguments, so equal values are equal options).
    return (x.shape, x.stride(), x.dtype, x.device, stride, padding, dilation, act1, act2, residual)


def _packed_args(entry):
    """The kernel's weight arguments for weights packed in a dwsep_weights entry."""
    return (0, 0, 0, 0, entry.packed.data_ptr(), entry.packed.numel())


def _dwsep_run(x, weights, sizes, out_shape, channels_last):
    xl = x.contiguous(memory_format=torch.channels_last)
    y = torch.empty(out_shape, dtype=torch.float32, memory_format=torch.channels_last)
    _C.dwsep_conv2d_cpu(xl.data_ptr(), *weights, y.data_ptr(), *sizes, torch.get_num_threads())
    return y if channels_last else y.contiguous()


def dwsep_conv2d(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2, residual):
    """The fused kernel works on NHWC float32: an NCHW x is laid out NHWC first,
    and the output comes back in x's format. The weights are packed once per
    layer (dwsep_weights.py), whose entry then records this call for
    dwsep_conv2d_repeat."""
    b, c, h, w = x.shape
    o, kh, kw = pw_weight.shape[0], dw_weight.shape[2], dw_weight.shape[3]
    ho, wo = dwsep_output_size(h, w, kh, kw, stride, padding, dilation)
    sizes = (b, h, w, c, o, ho, wo, kh, kw, stride[0], stride[1], padding[0], padding[2], dilation[0], dilation[1],
             _ACTIVATION_CODES[act1], _ACTIVATION_CODES[act2], residual)
    channels_last = is_channels_last(x)
    entry = entry_for(dw_weight, dw_bias, pw_weight, pw_bias)
    if entry is None:  # weights that count no versions: the kernel packs them
        dw_weight, pw_weight = dw_weight.contiguous(), pw_weight.contiguous()
        dw_bias = None if dw_bias is None else dw_bias.contiguous()
        pw_bias = None if pw_bias is None else pw_bias.contiguous()
        weights = (dw_weight.data_ptr(), _ptr(dw_bias), pw_weight.data_ptr(), _ptr(pw_bias), 0, 0)
    else:
        weights = _packed_args(entry)
    y = _dwsep_run(x, weights, sizes, (b, o, ho, wo), channels_last)
    if entry is not None:
        # Copies of the option lists: the record must not change with the caller's lists.
        signature = _dwsep_signature(x, list(stride), list(padding), list(dilation), act1, act2, residual)
        entry.call = _DwsepCall(signature, sizes, (b, o, ho, wo), channels_last)
    return y


def dwsep_conv2d_repeat(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2, residual):
    """dwsep_conv2d for a repeat of the last call it ran with these weights, unchanged (a layer of a
    model called again on an input of the same kind), or None for any other call. What the op
    checks depends only on what the repeat compares, so it skips the checks and the kernel choice:
    about 18 us a call on the Xeon between other layers' calls (cold caches)."""
    entry = entry_of(pw_weight)
    call = None if entry is None else entry.call
    if (call is None or x.layout != torch.strided  # (first: a sparse x reports zero strides)
            or call.signature != _dwsep_signature(x, stride, padding, dilation, act1, act2, residual)
            or not entry.unchanged((dw_weight, dw_bias, pw_weight, pw_bias))):
        return None
    return _dwsep_run(x, _packed_args(entry), call.sizes, call.out_shape, call.channels_last)
