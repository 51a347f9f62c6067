// Fused depthwise-separable convolution on the CPU, float32, NHWC:
//   d[b, i, j, c] = sum over taps (kh, kw) of x[b, i*sh - pt + kh*dh, j*sw - pl + kw*dw, c] * dw_w[c, kh, kw]
//   a = act1(d + dw_b[c]);  y[b, i, j, o] = act2(sum_c a[c] * pw_w[o, c] + pw_b[o])  (+ x[b, i, j, o])
// with the intermediate a kept in a per-task tile of cache, never written to memory.
//
// Float order, the same on every ISA path and thread count (bit-identical):
//   d starts at +0 and takes every tap in (kh, kw) row-major order, one fma
//   each, x being 0 in the zero padding (as the reference computes); then + dw_b.
//   The 1x1 sum starts at +0 and takes c = 0 .. C-1 in order, one fma each;
//   then + pw_b, act2, + x (residual).
// Activations: relu max(v, 0), relu6 min(max(v, 0), 6), silu v / (1 + e(-v)),
// hardswish v * min(max(v + 3, 0), 6) / 6, NaN kept; e() is slimops' own
// float32 exponential (dwsep_conv2d/vec.h, within 2 ulp of exp on the range
// that matters), the same code on every path.
#pragma once

#include <cstdint>

#include "slimops/status.h"

namespace slimops {

enum class Activation : int { kNone = 0, kRelu = 1, kRelu6 = 2, kSilu = 3, kHardswish = 4 };

struct DwsepShape {
  int64_t B, H, W, C;   // input, NHWC
  int64_t O, Ho, Wo;    // output, NHWC
  int64_t KH, KW;       // depthwise kernel
  int64_t stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w;
  Activation act1, act2;
  bool residual;        // needs O == C, Ho == H, Wo == W
};

// The weights in the kernel's layout, packed once per layer (a model calls a
// layer with the same weights every time; repacking the 1x1 weights on each
// call was up to half of a late MobileNetV2 block's time). Channel counts
// padded to multiples of 16 with zeros (Cp, Op):
//   [taps][Cp] depthwise weights, [Cp] depthwise bias, [C][Op] 1x1 weights, [Op] 1x1 bias.
// dwsep_packed_floats: that length in floats (taps = KH * KW), or -1 when a
// size is out of range. dw_w: [C, KH, KW]; dw_b: [C] or null; pw_w: [O, C];
// pw_b: [O] or null.
int64_t dwsep_packed_floats(int64_t C, int64_t O, int64_t taps);
Status dwsep_pack_weights(const float* dw_w, const float* dw_b, const float* pw_w, const float* pw_b, int64_t C,
                          int64_t O, int64_t taps, float* packed, int nthreads);

// x: [B, H, W, C] contiguous; packed: dwsep_pack_weights' output for s.C,
// s.O and s.KH * s.KW, packed_floats long (checked against
// dwsep_packed_floats); y: [B, Ho, Wo, O] contiguous.
Status dwsep_conv2d_cpu_packed(const float* x, const float* packed, int64_t packed_floats, const DwsepShape& s,
                               float* y, int nthreads);
// The same, packing the weights first (into a buffer of the calling thread).
Status dwsep_conv2d_cpu(const float* x, const float* dw_w, const float* dw_b, const float* pw_w, const float* pw_b,
                        const DwsepShape& s, float* y, int nthreads);

}  // namespace slimops
