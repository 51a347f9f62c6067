"""Fused depthwise-separable convolution:

    y = act2(pw(act1(dw(x) + dw_bias)) + pw_bias)  (+ x when residual)

dw is a KH x KW depthwise convolution (dw_weight [C, 1, KH, KW], zero padding
top/bottom/left/right, stride and dilation per axis), pw a 1x1 convolution
(pw_weight [O, C, 1, 1]). x is [B, C, H, W] in any strides: NHWC
(channels_last) is the fast layout, since a tile of channels of one pixel is
contiguous there; the output is written in x's memory format.

One program takes one image's tile of BLOCK_P output pixels and BLOCK_O output
channels. For each chunk of BLOCK_C input channels it computes the depthwise
outputs in registers, rounds them to x's dtype and feeds them straight into
``tl.dot`` against the [BLOCK_C, BLOCK_O] slice of the 1x1 weights, so the
intermediate never goes to memory.

Float order and precision. Depthwise: the KH * KW products x * w are formed in
float32 (exact for fp16/bf16 operands) and summed in float32 in tap order (row
by row, left to right; the compiler may contract a product and its sum into one
fma), then + dw_bias and act1 in float32. Rounding 1: the activated depthwise
tile is rounded to x's dtype (a no-op for fp32). Pointwise: ``tl.dot`` over
the C channels accumulates in float32 (fp32 operands as a true fp32 dot, not
TF32; the summation order is the hardware's). Epilogue in float32: + pw_bias,
act2, + x (the residual, exact in float32). Rounding 2: the cast to x's dtype
on the store. Activations: relu6 = min(max(v, 0), 6), silu = v / (1 + exp(-v)),
hardswish = v * min(max(v + 3, 0), 6) / 6; NaN propagates through all of them.
"""
import contextlib

import torch
import triton
import triton.language as tl

from .._checks import check_dwsep_conv2d, is_channels_last
from . import _interpreter_compat

_interpreter_compat.apply()

_NAN = tl.constexpr(tl.PropagateNan.ALL)


@triton.jit
def _activation(v, ACT: tl.constexpr):
    """The op's activations on a float32 tile (max/min propagate NaN, like torch)."""
    if ACT == "relu":
        v = tl.maximum(v, 0.0, propagate_nan=_NAN)
    elif ACT == "relu6":
        v = tl.minimum(tl.maximum(v, 0.0, propagate_nan=_NAN), 6.0, propagate_nan=_NAN)
    elif ACT == "silu":
        v = v / (1.0 + tl.exp(-v))
    elif ACT == "hardswish":
        v = v * tl.minimum(tl.maximum(v + 3.0, 0.0, propagate_nan=_NAN), 6.0, propagate_nan=_NAN) / 6.0
    return v


@triton.jit
def _widen(stride, INDEX_64: tl.constexpr):
    """A stride as int64 when some tensor spans 2**31 elements or more (the
    launcher decides): every offset is an int32 index times a stride, so a wide
    stride makes the offset int64 and it cannot wrap. (tl.cast, not .to: a
    stride of 1 arrives as a constexpr on the GPU.)"""
    if INDEX_64:
        stride = tl.cast(stride, tl.int64)
    return stride


@triton.jit
def _depthwise_tile(x_img, dw_w_ptr, dw_b_ptr, offs_c, c_mask, ih0, iw0, p_mask, H, W,
                    stride_xc, stride_xh, stride_xw, stride_dwc, stride_dwh, stride_dww, DH, DW,
                    KH: tl.constexpr, KW: tl.constexpr, HAS_DW_BIAS: tl.constexpr, ACT1: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """act1(depthwise + dw_bias) in float32 for BLOCK_P pixels (top-left input
    corner ih0, iw0) and the channels offs_c. Taps in the zero padding, pixels
    past the image and channels past C load 0 (so those channels come out 0)."""
    corner_offs = (ih0 * stride_xh + iw0 * stride_xw)[:, None] + (offs_c * stride_xc)[None, :]
    w_chan = dw_w_ptr + offs_c * stride_dwc
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    # A runtime loop over the taps, not an unrolled one: unrolled, the compiler
    # hoists the loads of all KH * KW taps (registers and, when pipelined,
    # shared memory grow with the kernel size: spills at 7x7 on sm_90); rolled,
    # the program uses the same ~80-130 registers for every kernel size.
    for t in range(KH * KW):
        i = t // KW
        j = t % KW
        ok = p_mask & (ih0 >= -i * DH) & (ih0 < H - i * DH) & (iw0 >= -j * DW) & (iw0 < W - j * DW)
        tap = (i * DH) * stride_xh + (j * DW) * stride_xw
        xv = tl.load(x_img + (corner_offs + tap), mask=ok[:, None] & c_mask[None, :], other=0.0)
        wv = tl.load(w_chan + i * stride_dwh + j * stride_dww, mask=c_mask, other=0.0)
        acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    if HAS_DW_BIAS:
        acc += tl.load(dw_b_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    return _activation(acc, ACT1)


@triton.jit
def _dwsep_conv2d_kernel(
    x_ptr, dw_w_ptr, dw_b_ptr, pw_w_ptr, pw_b_ptr, y_ptr,
    B, C, H, W, O, Ho, Wo,
    stride_xb, stride_xc, stride_xh, stride_xw,
    stride_dwc, stride_dwh, stride_dww, stride_pwo, stride_pwc,
    stride_yb, stride_yo, stride_yp,
    SH, SW, PAD_TOP, PAD_LEFT, DH, DW,
    KH: tl.constexpr, KW: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr,
    HAS_DW_BIAS: tl.constexpr, HAS_PW_BIAS: tl.constexpr, RESIDUAL: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
):
    # All output channels of a pixel tile in one program would need a
    # [BLOCK_P, O] float32 accumulator: fine up to O = 128..256 (TILES), beyond
    # that it spills. Keeping instead the activated depthwise tile of every channel
    # ([BLOCK_P, C] in x's dtype) and looping over O blocks needs the same room
    # for C (C = 960 in MobileNetV3), and Triton has no explicit shared memory to
    # park it in; global scratch would be the unfused round trip. So O is split
    # into groups of BLOCK_O (the autotuner's BLOCK_O covers O when the tile
    # allows it) and each group recomputes the depthwise: KH * KW / BLOCK_O
    # extra multiply-adds per pointwise one (3.5 % for 3x3 at BLOCK_O = 256), and
    # x is read once per group. The O group is the fastest-varying program id,
    # so the groups of one pixel tile run together and find x in L2.
    pid = tl.program_id(0)
    num_o = tl.cdiv(O, BLOCK_O)
    num_p = tl.cdiv(Ho * Wo, BLOCK_P)
    pid_o = pid % num_o
    b = (pid // num_o) // num_p
    pid_p = (pid // num_o) % num_p
    stride_xb, stride_xc, stride_xh, stride_xw = (_widen(stride_xb, INDEX_64), _widen(stride_xc, INDEX_64),
                                                  _widen(stride_xh, INDEX_64), _widen(stride_xw, INDEX_64))
    stride_dwc, stride_dwh, stride_dww = (_widen(stride_dwc, INDEX_64), _widen(stride_dwh, INDEX_64),
                                          _widen(stride_dww, INDEX_64))
    stride_pwo, stride_pwc = _widen(stride_pwo, INDEX_64), _widen(stride_pwc, INDEX_64)
    stride_yb, stride_yo, stride_yp = (_widen(stride_yb, INDEX_64), _widen(stride_yo, INDEX_64),
                                       _widen(stride_yp, INDEX_64))

    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = offs_p < Ho * Wo
    oh = offs_p // Wo
    ow = offs_p % Wo
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    o_mask = offs_o < O
    x_img = x_ptr + b * stride_xb
    dtype = x_ptr.dtype.element_ty

    acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
    for c_start in range(0, C, BLOCK_C):
        offs_c = c_start + tl.arange(0, BLOCK_C)
        c_mask = offs_c < C
        d = _depthwise_tile(x_img, dw_w_ptr, dw_b_ptr, offs_c, c_mask, oh * SH - PAD_TOP, ow * SW - PAD_LEFT,
                            p_mask, H, W, stride_xc, stride_xh, stride_xw, stride_dwc, stride_dwh, stride_dww,
                            DH, DW, KH, KW, HAS_DW_BIAS, ACT1, BLOCK_P, BLOCK_C)
        # Channels past C are 0 in d and in w, so they add nothing.
        w = tl.load(pw_w_ptr + (offs_c[:, None] * stride_pwc + offs_o[None, :] * stride_pwo),
                    mask=c_mask[:, None] & o_mask[None, :], other=0.0)
        # ieee: fp32 activations get a true fp32 dot, not TF32 (fp16/bf16 ignore it).
        acc = tl.dot(d.to(dtype), w, acc, input_precision="ieee")

    if HAS_PW_BIAS:
        acc += tl.load(pw_b_ptr + offs_o, mask=o_mask, other=0.0).to(tl.float32)[None, :]
    acc = _activation(acc, ACT2)
    mask = p_mask[:, None] & o_mask[None, :]
    if RESIDUAL:  # O == C and Ho, Wo == H, W: output channel o adds input channel o
        res = x_img + (oh * stride_xh + ow * stride_xw)[:, None] + (offs_o * stride_xc)[None, :]
        acc += tl.load(res, mask=mask, other=0.0).to(tl.float32)
    # y is allocated by the launcher with stride(H) == Wo * stride(W), so a
    # flattened pixel index walks it with the W stride.
    y_ptrs = y_ptr + b * stride_yb + (offs_p * stride_yp)[:, None] + (offs_o * stride_yo)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)


def _config(block_p, block_c, block_o, num_warps):
    # num_stages 1: the pipeliner finds nothing to stage here (the x loads sit in
    # the inner tap loop), so more stages would only multiply identical compiles.
    return triton.Config({"BLOCK_P": block_p, "BLOCK_C": block_c, "BLOCK_O": block_o},
                         num_warps=num_warps, num_stages=1)


# (BLOCK_P, BLOCK_C, widest BLOCK_O, num_warps). Small pixel tiles keep a wide O
# in one group; wide ones reuse each weight slice over more pixels. The widest
# BLOCK_O of a tile is the largest at which ptxas (Triton 3.6, sm_90, compiled
# without a GPU) reports no spills for fp32, the dtype with the largest operand
# tiles: 60-250 registers per thread, at most 64 KB of shared memory. Not yet
# timed on a GPU.
TILES = ((32, 32, 256, 4), (64, 32, 128, 4), (64, 64, 128, 8), (128, 32, 128, 8))
_BLOCK_O_CHOICES = (16, 32, 64, 128, 256)  # tl.dot needs tiles of at least 16
_WIDEST_BLOCK_O = {(p, c, warps): widest for p, c, widest, warps in TILES}


def block_o_for(o, widest):
    """The BLOCK_O that covers O, or the widest the tile allows."""
    return min(max(16, triton.next_power_of_2(o)), widest)


# Every tile with every BLOCK_O up to its widest; per call the autotuner tries,
# for each tile, only the BLOCK_O that block_o_for picks.
CONFIGS = tuple(_config(p, c, block_o, warps) for p, c, widest, warps in TILES
                for block_o in _BLOCK_O_CHOICES if block_o <= widest)
# The interpreter (TRITON_INTERPRET=1) runs this one config: no autotuning, small tiles.
INTERPRETER_CONFIG = _config(16, 16, 32, 1)
_MIN_BLOCK = {d: min(c.kwargs[f"BLOCK_{d}"] for c in CONFIGS + (INTERPRETER_CONFIG,)) for d in "PCO"}
_MAX_BLOCK = {d: max(c.kwargs[f"BLOCK_{d}"] for c in CONFIGS + (INTERPRETER_CONFIG,)) for d in "PCO"}


def tile_of(config):
    return config.kwargs["BLOCK_P"], config.kwargs["BLOCK_C"], config.num_warps


def _configs_for_o(configs, named_args, **kwargs):
    o = named_args["O"]
    return [c for c in configs if c.kwargs["BLOCK_O"] == block_o_for(o, _WIDEST_BLOCK_O[tile_of(c)])]


_dwsep_conv2d_tuned = triton.autotune(
    configs=list(CONFIGS),
    key=["B", "C", "O", "Ho", "Wo", "SH", "SW", "KH", "KW", "stride_xc"],  # stride_xc == 1: NHWC
    prune_configs_by={"early_config_prune": _configs_for_o},
)(_dwsep_conv2d_kernel)

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INT32_MAX = 2**31 - 1


def dwsep_conv2d(x, dw_weight, dw_bias, pw_weight, pw_bias, stride=(1, 1), padding=(0, 0, 0, 0),
                 dilation=(1, 1), act1="none", act2="none", residual=False, *, config=None):
    """The fused op (see the module docstring) on x [B, C, H, W] of float32,
    float16 or bfloat16 in any strides; the weights and biases have x's dtype.
    stride (sh, sw), padding (top, bottom, left, right), dilation (dh, dw).
    config: one of CONFIGS or INTERPRETER_CONFIG to run instead of the default
    (autotuning on a GPU, INTERPRETER_CONFIG in the interpreter). Returns a new
    [B, O, Ho, Wo] tensor of x's dtype, channels_last when x is."""
    stride, padding, dilation = list(stride), list(padding), list(dilation)
    ho, wo = check_dwsep_conv2d(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation,
                                act1, act2, residual)
    if x.dtype not in _DTYPES:
        raise TypeError(f"the Triton dwsep_conv2d kernel takes x of {_DTYPES}, got {x.dtype}")
    if config is not None and not any(config is c for c in CONFIGS + (INTERPRETER_CONFIG,)):
        raise ValueError("config must be one of dwsep_conv2d.CONFIGS or INTERPRETER_CONFIG")
    reason = unsupported_reason(x, pw_weight, padding, ho, wo)
    if reason is not None:
        raise ValueError(reason)

    b, c, h, w = x.shape
    o = pw_weight.shape[0]
    memory_format = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    y = torch.empty((b, o, ho, wo), dtype=x.dtype, device=x.device, memory_format=memory_format)
    if y.numel() == 0:
        return y
    kh, kw = dw_weight.shape[2:]
    flags = dict(KH=kh, KW=kw, ACT1=act1, ACT2=act2, HAS_DW_BIAS=dw_bias is not None,
                 HAS_PW_BIAS=pw_bias is not None, RESIDUAL=bool(residual),
                 INDEX_64=needs_int64(x, dw_weight, pw_weight, y))
    # The kernel reads the biases with unit stride; an absent one is never read.
    dw_bias, pw_bias = (dw_weight if t is None else t.contiguous() for t in (dw_bias, pw_bias))
    args = (x, dw_weight, dw_bias, pw_weight, pw_bias, y,
            b, c, h, w, o, ho, wo,
            *x.stride(), dw_weight.stride(0), dw_weight.stride(2), dw_weight.stride(3),
            pw_weight.stride(0), pw_weight.stride(1),
            y.stride(0), y.stride(1), y.stride(3),
            stride[0], stride[1], padding[0], padding[2], dilation[0], dilation[1])
    if config is None and triton.knobs.runtime.interpret:
        config = INTERPRETER_CONFIG

    def grid(meta):
        return (b * triton.cdiv(ho * wo, meta["BLOCK_P"]) * triton.cdiv(o, meta["BLOCK_O"]),)

    # Triton launches on the current CUDA device; make that x's device.
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        if config is None:
            _dwsep_conv2d_tuned[grid](*args, **flags)
        else:
            _dwsep_conv2d_kernel[grid](*args, **flags, **config.kwargs,
                                       num_warps=config.num_warps, num_stages=config.num_stages)
    return y


def unsupported_reason(x, pw_weight, padding, ho, wo):
    """Why the kernel cannot take the call, or None. It indexes pixels, channels,
    rows and programs in int32 (tile ends included): refuse sizes where that wraps."""
    b, c, h, w = x.shape
    o = pw_weight.shape[0]
    programs = b * triton.cdiv(ho * wo, _MIN_BLOCK["P"]) * triton.cdiv(o, _MIN_BLOCK["O"])
    limits = (("output pixels Ho * Wo", ho * wo + _MAX_BLOCK["P"] - 1), ("C", c + _MAX_BLOCK["C"] - 1),
              ("O", o + _MAX_BLOCK["O"] - 1), ("padded H", h + padding[0] + padding[1]),
              ("padded W", w + padding[2] + padding[3]), ("program count", programs))
    for name, size in limits:
        if size > _INT32_MAX:
            return (f"the Triton dwsep_conv2d kernel indexes in int32: {name} is too large "
                    f"(x {tuple(x.shape)}, O={o}, output {ho}x{wo})")
    return None


def needs_int64(*tensors):
    """Whether some nonempty tensor's strides reach an element offset past int32."""
    return any(t.numel() > 0 and sum((size - 1) * stride for size, stride in zip(t.shape, t.stride())) > _INT32_MAX
               for t in tensors)
