"""Reference for the fused depthwise-separable convolution, computed as the
unfused chain in float64:

    d = depthwise(x) + dw_bias        (KH x KW taps per channel, zero padding)
    y = act2(pointwise(act1(d)) + pw_bias)  (+ x when residual)

Arrays are in the logical NCHW order (memory format is a torch matter).
"""

import numpy as np

ACTIVATIONS = ("none", "relu", "relu6", "silu", "hardswish")


def activation(name, v):
    """The activations of the op, in float64: relu6 = min(max(v, 0), 6),
    silu = v / (1 + exp(-v)), hardswish = v * min(max(v + 3, 0), 6) / 6."""
    if name == "none":
        return v
    if name == "relu":
        return np.maximum(v, 0.0)
    if name == "relu6":
        return np.minimum(np.maximum(v, 0.0), 6.0)
    if name == "silu":
        with np.errstate(over="ignore", invalid="ignore"):  # -inf gives NaN, as torch
            return v / (1.0 + np.exp(-v))
    if name == "hardswish":
        return v * np.minimum(np.maximum(v + 3.0, 0.0), 6.0) / 6.0
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def output_size(size, kernel, stride, pad_before, pad_after, dilation):
    """Output length of one spatial dimension (as torch's conv2d)."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def dwsep_conv2d(x, dw_weight, dw_bias, pw_weight, pw_bias, stride=(1, 1), padding=(0, 0, 0, 0),
                 dilation=(1, 1), act1="none", act2="none", residual=False):
    """x: [B, C, H, W]; dw_weight: [C, 1, KH, KW]; dw_bias: [C] or None;
    pw_weight: [O, C, 1, 1]; pw_bias: [O] or None; stride (sh, sw);
    padding (top, bottom, left, right), zeros; dilation (dh, dw);
    act1/act2 in ACTIVATIONS; residual adds x (needs O == C and an output of
    x's spatial size). Returns float64 [B, O, Ho, Wo]."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {x.shape}")
    b, c, h, w = x.shape
    dw = np.asarray(dw_weight, dtype=np.float64)
    if dw.ndim != 4 or dw.shape[:2] != (c, 1):
        raise ValueError(f"dw_weight must be [C={c}, 1, KH, KW], got {dw.shape}")
    kh, kw = dw.shape[2:]
    pw = np.asarray(pw_weight, dtype=np.float64)
    if pw.ndim != 4 or pw.shape[1:] != (c, 1, 1):
        raise ValueError(f"pw_weight must be [O, C={c}, 1, 1], got {pw.shape}")
    o = pw.shape[0]
    (sh, sw), (pt, pb, pl, pr), (dh, dwl) = stride, padding, dilation
    ho, wo = output_size(h, kh, sh, pt, pb, dh), output_size(w, kw, sw, pl, pr, dwl)
    if ho < 1 or wo < 1:
        raise ValueError(f"the padded input ({h + pt + pb}x{w + pl + pr}) is smaller than the dilated kernel")

    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    d = np.zeros((b, c, ho, wo))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            cols = slice(j * dwl, j * dwl + sw * (wo - 1) + 1, sw)
            d += xp[:, :, rows, cols] * dw[:, 0, i, j][None, :, None, None]
    if dw_bias is not None:
        d += np.asarray(dw_bias, dtype=np.float64)[None, :, None, None]
    a = activation(act1, d)
    y = np.einsum("bchw,oc->bohw", a, pw[:, :, 0, 0])
    if pw_bias is not None:
        y += np.asarray(pw_bias, dtype=np.float64)[None, :, None, None]
    y = activation(act2, y)
    if residual:
        if o != c or (ho, wo) != (h, w):
            raise ValueError(f"residual needs O == C and an output of x's size, got O={o}, C={c}, "
                             f"{ho}x{wo} from {h}x{w}")
        y = y + x
    return y
