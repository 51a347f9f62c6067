// Portable path: plain loops compiled without ISA flags, and the readable
// statement of the float order every SIMD path follows.
#include <cmath>

#include "kernels.h"

namespace slimops {
namespace w4a16_linear {
namespace {

struct ScalarKernel {
  template <int mr>
  static bool run(const Tile& t, int64_t m, int64_t n) {
    const Weight& wt = t.wt;
    for (int i = 0; i < mr; ++i) {
      float p[kLanes64] = {};
      for (int64_t k0 = 0; k0 < wt.K; k0 += kChunk) {
        const int64_t b = k0 / kBlock, c = k0 % kBlock / kChunk;
        const float* xrow = t.xb + (b * t.M + m + i) * kBlock;
        for (int pos16 = 0; pos16 < 32; ++pos16) {
          const int h = pos16 / 16, j = pos16 % 16;  // h = 1: the odd k, high nibbles
          const int p_in_block = 64 * h + 16 * static_cast<int>(c) + j;
          const int64_t k = k0 + 2 * j + h;
          const int64_t g = min64(k, wt.K - 1) / wt.group;  // past K: the last group
          int32_t z;
          if (!zero_point(wt, n, g, &z)) return false;
          const float w = weight_value(nibble(wt, n, k), z, wt.w_scale[n * wt.G + g]);
          const int lane = lane_of(p_in_block);
          p[lane] = std::fma(xrow[p_in_block], w, p[lane]);
        }
      }
      t.y[(m + i) * t.N + n] = finish_output(p, t.bias, n);
    }
    return true;
  }
};

}  // namespace

bool tile_scalar(const Tile& t) { return walk_tile<4, ScalarKernel>(t); }

bool dequant_scalar(const Rows& r) {
  for (int64_t n = r.n_begin; n < r.n_end; ++n) {
    if (!dequant_range(r.wt, n, 0, r.wt.K, r.out + n * r.wt.K)) return false;
  }
  return true;
}

}  // namespace w4a16_linear
}  // namespace slimops
