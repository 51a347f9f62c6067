// AVX2 path (compiled with -mavx2 -mfma).
//
// vpmaddubsw multiplies unsigned by signed bytes and adds adjacent pairs into
// int16 with saturation: u8 x s8 pairs reach 2 * 255 * 128 and saturate. To stay
// exact, the kernel feeds it |w| (as u8, at most 128, -128 included) and
// sign(q, w) (q negated where w < 0). The activations never hold -128 (see
// quantize_per_token), so |sign(q, w)| <= 127 and a pair sums to at most
// 2 * 128 * 127 = 32512 < 32767: no saturation, every product exact.
// vpmaddwd with ones then widens the int16 pairs to int32.
#include <immintrin.h>

#include "tile_loop.h"

namespace slimops {
namespace int8_linear {
namespace {

constexpr int kMR = 2;
constexpr int kNR = 4;

inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_hadd_epi32(s, s);
  s = _mm_hadd_epi32(s, s);
  return _mm_cvtsi128_si32(s);
}

struct Avx2Kernel {
  template <int mr, int nr>
  static void run(const GemmTile& t, int64_t m, int64_t n) {
    const int64_t K = t.K;
    const int8_t* a = t.q + m * K;
    const int8_t* b = t.w + n * K;
    const __m256i ones = _mm256_set1_epi16(1);
    // "#pragma GCC unroll" keeps GCC 12 from copying or spilling accumulators.
    __m256i acc[mr][nr];
#pragma GCC unroll 8
    for (int i = 0; i < mr; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < nr; ++j) acc[i][j] = _mm256_setzero_si256();
    const int64_t k_simd = K / 32 * 32;
    for (int64_t k = 0; k < k_simd; k += 32) {
      __m256i av[mr];
#pragma GCC unroll 8
      for (int i = 0; i < mr; ++i) av[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i * K + k));
#pragma GCC unroll 8
      for (int j = 0; j < nr; ++j) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + j * K + k));
        const __m256i wabs = _mm256_abs_epi8(wv);
#pragma GCC unroll 8
        for (int i = 0; i < mr; ++i) {
          const __m256i pairs = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(av[i], wv));
          acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(pairs, ones));
        }
      }
    }
    for (int i = 0; i < mr; ++i) {
      float* y = t.y + (m + i) * t.N;
      for (int j = 0; j < nr; ++j) {
        int32_t sum = hsum(acc[i][j]);
        for (int64_t k = k_simd; k < K; ++k) sum += int32_t{a[i * K + k]} * int32_t{b[j * K + k]};
        y[n + j] = dequantize_output(sum, t.x_scale[m + i], t.w_scale[n + j], t.bias, n + j);
      }
    }
  }
};

}  // namespace

void quantize_row_avx2(const float* x, int64_t K, float static_scale, int8_t* q, float* scale, int32_t* qsum) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 zero = _mm256_setzero_ps();
  const int64_t k_simd = K / 8 * 8;
  __m256 vmax = zero;
  __m256 nonfinite = zero;  // x * 0 is NaN exactly for NaN and Inf
  for (int64_t k = 0; k < k_simd; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    vmax = _mm256_max_ps(vmax, _mm256_and_ps(v, abs_mask));
    nonfinite = _mm256_add_ps(nonfinite, _mm256_mul_ps(v, zero));
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, vmax);
  float amax = 0.0f;
  for (float l : lanes) amax = l > amax ? l : amax;
  _mm256_storeu_ps(lanes, nonfinite);
  float bad = 0.0f;
  for (float l : lanes) bad += l;
  for (int64_t k = k_simd; k < K; ++k) {
    const float a = x[k] < 0.0f ? -x[k] : x[k];
    amax = a > amax ? a : amax;
    bad += x[k] * 0.0f;
  }
  const float inv = row_scale(amax, bad == 0.0f, static_scale, scale);
  if (inv == 0.0f) return zero_row(K, q, qsum);

  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256 lo = _mm256_set1_ps(-127.0f);
  const __m256 hi = _mm256_set1_ps(127.0f);
  __m256i sum = _mm256_setzero_si256();
  for (int64_t k = 0; k < k_simd; k += 8) {
    const __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + k), vinv),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i qi = _mm256_cvtps_epi32(_mm256_min_ps(hi, _mm256_max_ps(lo, r)));
    sum = _mm256_add_epi32(sum, qi);
    const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k), _mm_packs_epi16(q16, q16));
  }
  int32_t total = hsum(sum);
  for (int64_t k = k_simd; k < K; ++k) {
    // Same float32 operations as the vector loop, one lane at a time.
    const __m128 r = _mm_round_ss(_mm_setzero_ps(), _mm_set_ss(x[k] * inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const float c = _mm_cvtss_f32(r);
    const int32_t v = static_cast<int32_t>(c > 127.0f ? 127.0f : (c < -127.0f ? -127.0f : c));
    q[k] = static_cast<int8_t>(v);
    total += v;
  }
  *qsum = total;
}

// One activation row (decode): each weight row is read front to back on its
// own, a single sequential stream per thread, with four accumulators in flight.
static void gemv_tile(const GemmTile& t) {
  const int64_t K = t.K;
  const int64_t m = t.m_begin;
  const int8_t* a = t.q + m * K;
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t k_simd = K / 32 * 32;
  for (int64_t n = t.n_begin; n < t.n_end; ++n) {
    const int8_t* b = t.w + n * K;
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                      _mm256_setzero_si256()};
    // acc[u] += the products of bytes [k, k + 32) of a and b.
    auto accumulate = [&](int u, int64_t k) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + k));
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k));
      const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(av, wv));
      acc[u] = _mm256_add_epi32(acc[u], _mm256_madd_epi16(pairs, ones));
    };
    int64_t k = 0;
    for (; k + 128 <= k_simd; k += 128) {
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) accumulate(u, k + 32 * u);
    }
    for (; k < k_simd; k += 32) accumulate(0, k);
    int32_t dot = hsum(_mm256_add_epi32(_mm256_add_epi32(acc[0], acc[1]), _mm256_add_epi32(acc[2], acc[3])));
    for (int64_t k = k_simd; k < K; ++k) dot += int32_t{a[k]} * int32_t{b[k]};
    t.y[m * t.N + n] = dequantize_output(dot, t.x_scale[m], t.w_scale[n], t.bias, n);
  }
}

void gemm_tile_avx2(const GemmTile& t) {
  if (t.m_end - t.m_begin == 1) return gemv_tile(t);
  walk_tile<kMR, kNR, Avx2Kernel>(t);
}

}  // namespace int8_linear
}  // namespace slimops
