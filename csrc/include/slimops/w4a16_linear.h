// W4A16 linear on the CPU: 4-bit group-wise weights (the layout of w4a8_linear.h:
// packed nibbles u, w_scale [N, G], w_zero [N, G] in 0..15 or null for the
// symmetric offset 8) and 16-bit activations.
//
// The CPU works in bfloat16 products with float32 sums: activations are
// rounded to bf16 (float32 and fp16 inputs alike), and every weight is
//   w[n, k] = bf16(float(u - z) * w_scale[n, g])   (u - z exact, one float32
//             rounding, then one to bf16),
// so each product x * w is exact in float32 and the only roundings are the
// two to bf16 and the float32 sums. Small M runs w4a16_linear_cpu, whose float
// order (the same on every ISA path and thread count) is:
//   1. 64 partial sums per output, all starting at +0. A 128-K block of the
//      activation layout (int4_activation_layout.h: position p < 64 holds the
//      even k = 2p, p >= 64 the odd k = 2(p - 64) + 1) gives position p to
//      lane 32 * (p >= 64) + 16 * ((p / 16) % 2) + p % 16, in increasing p;
//      blocks in increasing k: p[l] = fma(x, w, p[l]) (exact product, one
//      rounding). Positions past K have x = 0 and the weight of nibble 0 (or of
//      the padding nibble of an odd K).
//   2. The fixed reduction tree of csrc/cpu/lanes64.h, then + bias[n].
// Large M instead dequantizes the weight once to bf16 (w4a16_dequantize_bf16_cpu)
// for a bf16 GEMM with float32 accumulation (oneDNN, through torch).
// NaN or Inf in a row of x gives NaN (or Inf) in that row of y.
// A zero point outside 0..15 makes the call fail with kBadZeroPoint.
#pragma once

#include <cstdint>

#include "slimops/status.h"

namespace slimops {

// x: [M, K] float32, row stride x_row_stride; w: [N, ceil(K/2)] contiguous;
// w_scale: [N, G]; w_zero: [N, G] or null; bias: [N] or null; y: [M, N] contiguous.
Status w4a16_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const uint8_t* w, int64_t N,
                        const float* w_scale, const int32_t* w_zero, int64_t group_size, const float* bias, float* y,
                        int nthreads);

// out: [N, K] bf16 bit patterns, contiguous: out[n, k] = w[n, k] as defined above.
Status w4a16_dequantize_bf16_cpu(const uint8_t* w, int64_t N, int64_t K, const float* w_scale, const int32_t* w_zero,
                                 int64_t group_size, uint16_t* out, int nthreads);

}  // namespace slimops
