// W8A16 linear on the CPU: y = x @ (w * w_scale[:, None])^T + bias, with int8
// weights (any value, -128 included) per output channel and float32
// activations (the Python layer converts fp16/bf16 to float32 first).
//
// Float order, the same on every ISA path and thread count, so the results are
// bit-identical across them:
//   1. kW8A16Lanes = 64 partial sums per output (m, n), all starting at +0.
//      Lane l takes the terms k = l, l + 64, l + 128, ... in increasing k:
//        p[l] = fma(x[m, k], float(w[n, k]), p[l])   (one rounding: fused)
//      K is padded up to a multiple of 64 with x = 0 and w = 0, so every lane
//      sees the same number of steps (the padding adds +0).
//   2. The lanes are reduced by a fixed tree (csrc/cpu/lanes64.h):
//        q[l] = (p[l] + p[l + 16]) + (p[l + 32] + p[l + 48])   for l < 16
//        then halving: r[l] = q[l] + q[l + 8], r[l] + r[l + 4], ... to one sum.
//   3. y = acc * w_scale[n], then y + bias[n] when there is a bias (two roundings).
// NaN or Inf in a row of x gives NaN (or Inf) in that row of y, as a float layer does.
#pragma once

#include <cstdint>

#include "slimops/status.h"

namespace slimops {

// Partial sums per output in the float order above.
constexpr int kW8A16Lanes = 64;

// x: [M, K] with row stride x_row_stride; w: [N, K] int8 contiguous; w_scale:
// [N]; bias: [N] or null; y: [M, N] contiguous. Floats are float32.
Status w8a16_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const int8_t* w, int64_t N,
                        const float* w_scale, const float* bias, float* y, int nthreads);

}  // namespace slimops
