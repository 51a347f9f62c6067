// W4A8 linear on the CPU: 4-bit group-wise weights, activations quantized per
// token to int8, exact integer dot products per group.
//
//   x: [M, K] float32 (row stride x_row_stride), quantized per token exactly
//      as quantize_per_token (see int8_linear.h): q[m, k] in [-127, 127],
//      scale s_x[m]; a NaN/Inf row gives q 0 and s_x NaN, so its y row is NaN.
//   w: uint8 [N, ceil(K/2)], the layout of slimops.quantize(w, bits=4, ...).qdata:
//      element 2i in the low nibble of byte i, 2i+1 in the high nibble; a
//      nibble u holds q + 8 (symmetric) or q (asymmetric), 0..15. With odd K
//      the last high nibble is padding and never read.
//   group_size g > 0 dividing K, or -1 (one group of K): G = K / g groups.
//   w_scale float32 [N, G]; w_zero int32 [N, G] in 0..15, or null for the
//   symmetric layout, whose zero point is 8 (the nibble offset).
//
//   d[m, n, j] = sum_{k in group j} q[m, k] * (u[n, k] - z[n, j])   exact int32
//   acc = 0.0f; for j = 0 .. G-1 in order: acc = acc + float(d) * w_scale[n, j]
//   y[m, n] = s_x[m] * acc (+ bias[n])                               float32
//
// Every step after the integers is one float32 operation in this order on
// every ISA path (no FMA contraction), so all paths give the same bits.
// A zero point outside 0..15 makes the call fail with kBadZeroPoint.
#pragma once

#include <cstdint>

#include "slimops/status.h"

namespace slimops {

// Largest K whose exact int32 group sums cannot overflow: both
// sum q * u and z * sum q are at most 127 * 15 * K < 2^31.
constexpr int64_t kW4A8LinearMaxK = int64_t{1} << 19;

// x: [M, K] with row stride x_row_stride; w: [N, ceil(K/2)] contiguous;
// w_scale: [N, G]; w_zero: [N, G] or null; bias: [N] or null; y: [M, N] contiguous.
Status w4a8_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const uint8_t* w, int64_t N,
                       const float* w_scale, const int32_t* w_zero, int64_t group_size, const float* bias, float* y,
                       int nthreads);

}  // namespace slimops
