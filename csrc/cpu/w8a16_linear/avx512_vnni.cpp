// AVX-512 path (compiled with the avx512_vnni level's flags; it needs F, BW and VL).
//
// One weight block of 64 bytes becomes four zmm of floats (vpmovsxbd +
// vcvtdq2ps), and each is FMA'd into the four zmm of partial sums of up to
// four activation rows: zmm g of row i holds lanes [16 g, 16 g + 16) of the
// float order, 16 accumulators in all. The last partial block is read with
// masked loads, whose zeros are the padding of the float order.
#include <immintrin.h>

#include "kernels.h"

namespace slimops {
namespace w8a16_linear {
namespace {

constexpr int kMR = 4;

inline __m512 weights16(__mmask16 mask, const int8_t* b) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, b)));
}

struct Avx512Kernel {
  template <int mr>
  static void run(const Tile& t, int64_t m, int64_t n) {
    const int64_t K = t.K;
    const int8_t* b = t.w + n * K;
    const float* a[mr];
    __m512 acc[mr][4];
#pragma GCC unroll 4
    for (int i = 0; i < mr; ++i) {
      a[i] = t.x + (m + i) * t.x_row_stride;
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) acc[i][g] = _mm512_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        const __m512 wv = _mm512_cvtepi32_ps(
            _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + k + 16 * g))));
#pragma GCC unroll 4
        for (int i = 0; i < mr; ++i) acc[i][g] = _mm512_fmadd_ps(_mm512_loadu_ps(a[i] + k + 16 * g), wv, acc[i][g]);
      }
    }
    if (k < K) {
      for (int g = 0; g < 4; ++g) {
        const int64_t left = K - k - 16 * g;
        const __mmask16 mask = left >= 16 ? 0xffff : left <= 0 ? 0 : _bzhi_u32(0xffff, static_cast<unsigned>(left));
        const __m512 wv = weights16(mask, b + k + 16 * g);
#pragma GCC unroll 4
        for (int i = 0; i < mr; ++i) {
          acc[i][g] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a[i] + k + 16 * g), wv, acc[i][g]);
        }
      }
    }
    for (int i = 0; i < mr; ++i) {
      alignas(64) float p[kW8A16Lanes];
      for (int g = 0; g < 4; ++g) _mm512_store_ps(p + 16 * g, acc[i][g]);
      t.y[(m + i) * t.N + n] = finish_output(p, t, n);
    }
  }
};

}  // namespace

void tile_avx512(const Tile& t) { walk_tile<kMR, Avx512Kernel>(t); }

}  // namespace w8a16_linear
}  // namespace slimops
