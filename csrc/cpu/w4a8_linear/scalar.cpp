// Portable path: the readable statement of the math in slimops/w4a8_linear.h.
// It reads the plain activation layout and handles every group size; the SIMD
// dispatch also uses it for group sizes that are not a multiple of 32.
#include "kernels.h"

namespace slimops {
namespace w4a8_linear {

bool tile_scalar(const Tile& t) {
  for (int64_t n = t.n_begin; n < t.n_end; ++n) {
    const uint8_t* packed = t.w + n * t.Kh;
    for (int64_t j = 0; j < t.G; ++j) {
      const int32_t z = t.w_zero != nullptr ? t.w_zero[n * t.G + j] : 8;
      if (z < 0 || z > 15) return false;
    }
    for (int64_t m = t.m_begin; m < t.m_end; ++m) {
      const int8_t* a = t.q + m * t.K;
      float acc = 0.0f;
      for (int64_t j = 0; j < t.G; ++j) {
        const int32_t z = t.w_zero != nullptr ? t.w_zero[n * t.G + j] : 8;
        int32_t d = 0;
        for (int64_t k = j * t.group; k < (j + 1) * t.group; ++k) {
          const int32_t u = k % 2 == 0 ? packed[k / 2] & 0xF : packed[k / 2] >> 4;
          d += int32_t{a[k]} * (u - z);
        }
        acc = acc + static_cast<float>(d) * t.w_scale[n * t.G + j];
      }
      t.y[m * t.N + n] = finish_output(acc, t.x_scale[m], t.bias, n);
    }
  }
  return true;
}

}  // namespace w4a8_linear
}  // namespace slimops
