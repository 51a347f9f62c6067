// W8A8 linear on the CPU: y = (q @ w^T) * x_scale[m] * w_scale[n] + bias[n],
// with (q, x_scale) the per-token symmetric int8 quantization of x.
//
// Quantization (the NumPy reference does the same float32 operations):
//   amax = max_k |x[m,k]|; scale = amax / 127; inv = 127 / amax;
//   q = clamp(rint(x * inv), -127, 127), rint rounding half to even.
//   amax == 0 gives scale 0 and q 0; a row holding NaN or Inf gives q 0 and
//   scale NaN, so that row of y is NaN.
// q never holds -128: the AVX2 kernel relies on it (see avx2.cpp).
#pragma once

#include <cstdint>

#include "slimops/status.h"

namespace slimops {

// Largest K whose exact int32 dot products cannot overflow (127 * 128 * K < 2^31).
constexpr int64_t kInt8LinearMaxK = int64_t{1} << 17;

Status quantize_per_token_cpu(const float* x, int64_t rows, int64_t cols, int64_t x_row_stride, int8_t* q,
                              float* scale, int nthreads);

// x: [M, K] with row stride x_row_stride; w: [N, K] contiguous; w_scale: [N];
// bias: [N] or null; y: [M, N] contiguous. All float32. static_x_scale 0 uses
// the per-token scales above; a positive finite value s is a static
// activation scale instead: q = clamp(rint(x * (1 / s)), -127, 127), rows with
// NaN/Inf still quantize to 0 with scale NaN. Anything else is kBadScale.
Status int8_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, float static_x_scale,
                       const int8_t* w, int64_t N, const float* w_scale, const float* bias, float* y, int nthreads);

}  // namespace slimops
