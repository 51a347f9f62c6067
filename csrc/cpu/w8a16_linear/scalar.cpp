// Portable path: plain loops compiled without ISA flags, and the readable
// statement of the float order every SIMD path follows.
#include <cmath>

#include "kernels.h"

namespace slimops {
namespace w8a16_linear {
namespace {

struct ScalarKernel {
  template <int mr>
  static void run(const Tile& t, int64_t m, int64_t n) {
    const int8_t* b = t.w + n * t.K;
    for (int i = 0; i < mr; ++i) {
      const float* a = t.x + (m + i) * t.x_row_stride;
      float p[kW8A16Lanes] = {};
      for (int64_t k0 = 0; k0 < t.K; k0 += kW8A16Lanes) {
        for (int l = 0; l < kW8A16Lanes; ++l) {
          const int64_t k = k0 + l;
          const float xv = k < t.K ? a[k] : 0.0f;  // the zero padding of step 1
          const float wv = k < t.K ? static_cast<float>(b[k]) : 0.0f;
          p[l] = std::fma(xv, wv, p[l]);
        }
      }
      t.y[(m + i) * t.N + n] = finish_output(p, t, n);
    }
  }
};

}  // namespace

void tile_scalar(const Tile& t) { walk_tile<4, ScalarKernel>(t); }

}  // namespace w8a16_linear
}  // namespace slimops
