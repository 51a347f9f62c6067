// AVX2 path (compiled with -mavx2 -mfma): the tile of kernel.h on 8 floats.
#include <immintrin.h>

#include "kernel.h"

namespace slimops {
namespace dwsep_conv2d {
namespace {

struct Avx2 {
  using V = __m256;
  using M = __m256i;
  static constexpr int kWidth = 8;
  static constexpr int kDepthwisePixels = 4;
  static M mask(int64_t n) {
    const int64_t k = n < 0 ? 0 : (n > 8 ? 8 : n);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(k)), _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0));
  }
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float f) { return _mm256_set1_ps(f); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load(const float* p, M m) { return _mm256_maskload_ps(p, m); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store(float* p, V v, M m) { _mm256_maskstore_ps(p, m, v); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V where_greater(V a, V b, V t, V f) { return _mm256_blendv_ps(f, t, _mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
  static V round_even(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V times_pow2(V p, V n) {
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
  }
};

}  // namespace

// The 1x1 in blocks of 6 pixels by 16 outputs (12 accumulators, 2 weight
// vectors and a broadcast: 15 of the 16 registers): 2-10% faster than 4 by 16
// on the Zen 2 at batch 1, 4-11% at batch 32.
void task_avx2(const DwsepShape& s, const Packed& pk, const Task& t) { run_task<Avx2, 6, 2>(s, pk, t); }

}  // namespace dwsep_conv2d
}  // namespace slimops
