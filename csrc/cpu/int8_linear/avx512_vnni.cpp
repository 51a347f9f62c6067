// AVX-512 VNNI path (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni).
//
// vpdpbusd multiplies unsigned by signed bytes and adds groups of four into
// int32 lanes without saturation. The weights are signed, so each weight byte
// is flipped to w + 128 (xor 0x80) on load and the kernel subtracts
// 128 * sum_k q[m, k] at the end. Both terms wrap modulo 2^32 identically, so
// the result is exact whenever the true dot product fits in int32, which
// kInt8LinearMaxK guarantees. This handles every int8 weight, -128 included.
//
// A micro tile is up to 4 x 4 outputs, one zmm accumulator each (4 x 4 is the
// fastest shape measured on Zen 4, M = 1 included; wider tiles put more
// 4096-byte-strided rows into one L1 set). At the end the accumulators are
// reduced together into one vector whose lane l is output
// (l / NR, l % NR), and the epilogue runs on that vector.
#include <immintrin.h>

#include "tile_loop.h"

namespace slimops {
namespace int8_linear {
namespace {

// Lane l of the tile vector holds row l / NR, column l % NR.
template <int NR>
struct TileLanes {
  static_assert(NR > 0 && 16 % NR == 0, "NR must be a power of two up to 16");
  static constexpr int kShift = __builtin_ctz(NR);
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i row = _mm512_srli_epi32(lane, kShift);
  const __m512i col = _mm512_and_si512(lane, _mm512_set1_epi32(NR - 1));
};

// Sum of the 16 lanes modulo 2^32. The flipped products' partial sums can
// pass INT32_MAX for large K (only the final difference fits), and
// _mm512_reduce_add_epi32 ends in a signed scalar add: this stays in vector
// adds, which wrap.
inline uint32_t wrapping_sum(__m512i v) {
  const __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(s4));
}

inline __mmask16 first_lanes(int count) { return static_cast<__mmask16>(_bzhi_u32(0xffff, count)); }

// Lane l of the result is the sum of the lanes of v[l]: a transpose-and-add
// tree, 45 instructions for 16 sums instead of 16 separate reductions.
inline __m512i reduce16(const __m512i (&v)[16]) {
  __m512i pair[8];  // within each 128-bit lane: [v2p, v2p+1, v2p, v2p+1] partial sums
  for (int p = 0; p < 8; ++p) {
    pair[p] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * p], v[2 * p + 1]),
                               _mm512_unpackhi_epi32(v[2 * p], v[2 * p + 1]));
  }
  __m512i quad[4];  // element r of each 128-bit lane: a partial sum of v[4q + r]
  for (int q = 0; q < 4; ++q) {
    quad[q] = _mm512_add_epi32(_mm512_unpacklo_epi64(pair[2 * q], pair[2 * q + 1]),
                               _mm512_unpackhi_epi64(pair[2 * q], pair[2 * q + 1]));
  }
  __m512i half[2];  // 128-bit lanes: [q, q, q+1, q+1] halves of the partial sums
  for (int h = 0; h < 2; ++h) {
    half[h] = _mm512_add_epi32(_mm512_shuffle_i32x4(quad[2 * h], quad[2 * h + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_i32x4(quad[2 * h], quad[2 * h + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  return _mm512_add_epi32(_mm512_shuffle_i32x4(half[0], half[1], _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i32x4(half[0], half[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// dequantize_output on a whole tile vector: the same float32 operations in the
// same order as the scalar helper, so every ISA rounds identically.
template <int NR>
void store_tile(const GemmTile& t, int64_t m, int64_t n, int mr, int nr, __m512i acc) {
  const TileLanes<NR> lanes;
  const __mmask16 cols = first_lanes(nr);
  const __m512 x_scale = _mm512_permutexvar_ps(lanes.row, _mm512_maskz_loadu_ps(first_lanes(mr), t.x_scale + m));
  const __m512 w_scale = _mm512_permutexvar_ps(lanes.col, _mm512_maskz_loadu_ps(cols, t.w_scale + n));
  __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), x_scale), w_scale);
  if (t.bias != nullptr) {
    v = _mm512_add_ps(v, _mm512_permutexvar_ps(lanes.col, _mm512_maskz_loadu_ps(cols, t.bias + n)));
  }
  for (int i = 0; i < mr; ++i) {
    const __m512 row = _mm512_permutexvar_ps(_mm512_add_epi32(lanes.lane, _mm512_set1_epi32(i * NR)), v);
    _mm512_mask_storeu_ps(t.y + (m + i) * t.N + n, cols, row);
  }
}

template <int NR>
struct VnniKernel {
  template <int mr, int nr>
  static void run(const GemmTile& t, int64_t m, int64_t n) {
    const int64_t K = t.K;
    const int8_t* a = t.q + m * K;
    const int8_t* b = t.w + n * K;
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    // The "#pragma GCC unroll" lines matter: without them GCC 12 keeps the
    // accumulators in memory or copies every one around each vpdpbusd.
    __m512i acc[mr][nr];
#pragma GCC unroll 16
    for (int i = 0; i < mr; ++i)
#pragma GCC unroll 16
      for (int j = 0; j < nr; ++j) acc[i][j] = _mm512_setzero_si512();
    for (int64_t k = 0; k < K; k += 64) {
      // Past the end of K the loads read zeros; a zero activation byte cancels
      // its flipped weight byte (0 ^ 0x80 = 128).
      const __mmask64 bytes = K - k >= 64 ? ~0ULL : _bzhi_u64(~0ULL, static_cast<unsigned>(K - k));
      __m512i av[mr];
#pragma GCC unroll 16
      for (int i = 0; i < mr; ++i) av[i] = _mm512_maskz_loadu_epi8(bytes, a + i * K + k);
#pragma GCC unroll 16
      for (int j = 0; j < nr; ++j) {
        const __m512i wv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(bytes, b + j * K + k), flip);
#pragma GCC unroll 16
        for (int i = 0; i < mr; ++i) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], wv, av[i]);
      }
    }

    __m512i lanes[16];
#pragma GCC unroll 16
    for (int l = 0; l < 16; ++l) lanes[l] = _mm512_setzero_si512();
#pragma GCC unroll 16
    for (int i = 0; i < mr; ++i)
#pragma GCC unroll 16
      for (int j = 0; j < nr; ++j) lanes[i * NR + j] = acc[i][j];
    const __m512i qsum = _mm512_maskz_loadu_epi32(first_lanes(mr), t.qsum + m);
    const __m512i shift = _mm512_slli_epi32(_mm512_permutexvar_epi32(TileLanes<NR>().row, qsum), 7);
    store_tile<NR>(t, m, n, mr, nr, _mm512_sub_epi32(reduce16(lanes), shift));
  }
};

}  // namespace

void quantize_row_avx512(const float* x, int64_t K, float static_scale, int8_t* q, float* scale, int32_t* qsum) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 vmax = zero;
  __m512 nonfinite = zero;  // x * 0 is NaN exactly for NaN and Inf
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 mask = K - k >= 16 ? 0xffff : _bzhi_u32(0xffff, static_cast<unsigned>(K - k));
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + k);
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(v));
    nonfinite = _mm512_add_ps(nonfinite, _mm512_mul_ps(v, zero));
  }
  const float amax = _mm512_reduce_max_ps(vmax);
  const float inv = row_scale(amax, _mm512_reduce_add_ps(nonfinite) == 0.0f, static_scale, scale);
  if (inv == 0.0f) return zero_row(K, q, qsum);
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512 lo = _mm512_set1_ps(-127.0f);
  const __m512 hi = _mm512_set1_ps(127.0f);
  __m512i sum = _mm512_setzero_si512();
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 mask = K - k >= 16 ? 0xffff : _bzhi_u32(0xffff, static_cast<unsigned>(K - k));
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + k), vinv);
    const __m512 r = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512i qi = _mm512_cvtps_epi32(_mm512_min_ps(hi, _mm512_max_ps(lo, r)));
    sum = _mm512_add_epi32(sum, qi);  // masked lanes loaded 0, so they add 0
    _mm512_mask_cvtsepi32_storeu_epi8(q + k, mask, qi);
  }
  *qsum = _mm512_reduce_add_epi32(sum);
}

// One activation row (decode): each weight row is read front to back on its
// own, a single sequential stream per thread, with four accumulators in
// flight to hide the vpdpbusd latency.
static void gemv_tile(const GemmTile& t) {
  const int64_t K = t.K;
  const int64_t m = t.m_begin;
  const int8_t* a = t.q + m * K;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const uint32_t shift = static_cast<uint32_t>(t.qsum[m]) << 7;
  for (int64_t n = t.n_begin; n < t.n_end; ++n) {
    const int8_t* b = t.w + n * K;
    __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                      _mm512_setzero_si512()};
    int64_t k = 0;
    for (; k + 256 <= K; k += 256) {
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) {
        const __m512i wv = _mm512_xor_si512(_mm512_loadu_si512(b + k + 64 * u), flip);
        acc[u] = _mm512_dpbusd_epi32(acc[u], wv, _mm512_loadu_si512(a + k + 64 * u));
      }
    }
    for (; k < K; k += 64) {
      const __mmask64 bytes = K - k >= 64 ? ~0ULL : _bzhi_u64(~0ULL, static_cast<unsigned>(K - k));
      const __m512i wv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(bytes, b + k), flip);
      acc[0] = _mm512_dpbusd_epi32(acc[0], wv, _mm512_maskz_loadu_epi8(bytes, a + k));
    }
    const __m512i sum = _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[2], acc[3]));
    const int32_t dot = static_cast<int32_t>(wrapping_sum(sum) - shift);
    t.y[m * t.N + n] = dequantize_output(dot, t.x_scale[m], t.w_scale[n], t.bias, n);
  }
}

void gemm_tile_avx512_vnni(const GemmTile& t) {
  if (t.m_end - t.m_begin == 1) return gemv_tile(t);
  walk_tile<4, 4, VnniKernel<4>>(t);
}

}  // namespace int8_linear
}  // namespace slimops
