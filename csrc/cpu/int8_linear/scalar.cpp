// Portable path: plain loops, compiled without ISA flags so it runs on any
// x86-64 (or other) CPU. It is also the readable statement of what the SIMD
// paths compute.
#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace slimops {
namespace int8_linear {

void quantize_row_scalar(const float* x, int64_t K, float static_scale, int8_t* q, float* scale, int32_t* qsum) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t k = 0; k < K; ++k) {
    finite = finite && std::isfinite(x[k]);
    amax = std::max(amax, std::fabs(x[k]));
  }
  const float inv = row_scale(amax, finite, static_scale, scale);
  if (inv == 0.0f) return zero_row(K, q, qsum);
  int32_t sum = 0;
  for (int64_t k = 0; k < K; ++k) {
    // nearbyint rounds half to even in the default rounding mode, like np.rint.
    const float r = std::nearbyint(x[k] * inv);
    const int32_t v = static_cast<int32_t>(std::min(127.0f, std::max(-127.0f, r)));
    q[k] = static_cast<int8_t>(v);
    sum += v;
  }
  *qsum = sum;
}

void gemm_tile_scalar(const GemmTile& t) {
  for (int64_t m = t.m_begin; m < t.m_end; ++m) {
    const int8_t* a = t.q + m * t.K;
    for (int64_t n = t.n_begin; n < t.n_end; ++n) {
      const int8_t* b = t.w + n * t.K;
      int32_t acc = 0;
      for (int64_t k = 0; k < t.K; ++k) acc += static_cast<int32_t>(a[k]) * static_cast<int32_t>(b[k]);
      t.y[m * t.N + n] = dequantize_output(acc, t.x_scale[m], t.w_scale[n], t.bias, n);
    }
  }
}

}  // namespace int8_linear
}  // namespace slimops
