// AVX2 path (compiled with -mavx2 -mfma).
//
// The 64 lanes of the float order are eight ymm per activation row, too many
// for 16 registers with several rows, so the kernel makes two passes over K,
// each computing 32 lanes (four ymm) for up to three rows: a weight block of 8
// bytes is converted once (vpmovsxbd + vcvtdq2ps) and FMA'd into every row.
// The second pass re-reads the weight row from L1. The last partial block is
// copied into zero-padded buffers, the padding of the float order.
#include <immintrin.h>

#include <cstring>

#include "kernels.h"

namespace slimops {
namespace w8a16_linear {
namespace {

constexpr int kMR = 3;

struct Avx2Kernel {
  // Lanes [32 h, 32 h + 32) of one block of 64 k for mr rows.
  template <int mr>
  static inline void block(const float* const (&a)[mr], const int8_t* b, int h, __m256 (&acc)[mr][4]) {
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      const int off = 32 * h + 8 * g;
      const __m256 wv =
          _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + off))));
#pragma GCC unroll 4
      for (int i = 0; i < mr; ++i) acc[i][g] = _mm256_fmadd_ps(_mm256_loadu_ps(a[i] + off), wv, acc[i][g]);
    }
  }

  template <int mr>
  static void run(const Tile& t, int64_t m, int64_t n) {
    const int64_t K = t.K;
    const int8_t* b = t.w + n * K;
    const int64_t k_full = K / kW8A16Lanes * kW8A16Lanes;
    // Zero-padded copies of the last partial block.
    float x_tail[mr][kW8A16Lanes] = {};
    int8_t w_tail[kW8A16Lanes] = {};
    const float* tail_rows[mr];
    if (k_full < K) std::memcpy(w_tail, b + k_full, static_cast<size_t>(K - k_full));
    const float* rows[mr];
    for (int i = 0; i < mr; ++i) {
      rows[i] = t.x + (m + i) * t.x_row_stride;
      if (k_full < K) std::memcpy(x_tail[i], rows[i] + k_full, static_cast<size_t>(K - k_full) * sizeof(float));
      tail_rows[i] = x_tail[i];
    }
    alignas(32) float p[mr][kW8A16Lanes];
    for (int h = 0; h < 2; ++h) {
      __m256 acc[mr][4];
#pragma GCC unroll 4
      for (int i = 0; i < mr; ++i)
#pragma GCC unroll 4
        for (int g = 0; g < 4; ++g) acc[i][g] = _mm256_setzero_ps();
      for (int64_t k = 0; k < k_full; k += kW8A16Lanes) {
        const float* a[mr];
#pragma GCC unroll 4
        for (int i = 0; i < mr; ++i) a[i] = rows[i] + k;
        block<mr>(a, b + k, h, acc);
      }
      if (k_full < K) block<mr>(tail_rows, w_tail, h, acc);
      for (int i = 0; i < mr; ++i)
        for (int g = 0; g < 4; ++g) _mm256_store_ps(p[i] + 32 * h + 8 * g, acc[i][g]);
    }
    for (int i = 0; i < mr; ++i) t.y[(m + i) * t.N + n] = finish_output(p[i], t, n);
  }
};

}  // namespace

void tile_avx2(const Tile& t) { walk_tile<kMR, Avx2Kernel>(t); }

}  // namespace w8a16_linear
}  // namespace slimops
