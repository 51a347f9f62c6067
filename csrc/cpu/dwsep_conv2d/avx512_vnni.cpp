// AVX-512 path (compiled with the avx512_vnni level's flags; it uses F and VL):
// the tile of kernel.h on 16 floats, and on 8 (ymm with AVX-512 masks) for the
// last output channels when no more than 8 are left (O = 24, 40, ...).
#include <immintrin.h>

#include "kernel.h"

namespace slimops {
namespace dwsep_conv2d {
namespace {

struct Avx512 {
  using V = __m512;
  using M = __mmask16;
  static constexpr int kWidth = 16;
  static constexpr int kDepthwisePixels = 8;
  static M mask(int64_t n) { return n <= 0 ? 0 : n >= 16 ? 0xffff : static_cast<M>((1u << n) - 1); }
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float f) { return _mm512_set1_ps(f); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store(float* p, V v, M m) { _mm512_mask_storeu_ps(p, m, v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V where_greater(V a, V b, V t, V f) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), f, t); }
  static V round_even(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V times_pow2(V p, V n) {
    const __m512i e = _mm512_slli_epi32(_mm512_cvtps_epi32(n), 23);
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), e));
  }
};

// The same operations on 8 floats.
struct Avx512Half {
  using V = __m256;
  using M = __mmask8;
  static constexpr int kWidth = 8;
  static M mask(int64_t n) { return n <= 0 ? 0 : n >= 8 ? 0xff : static_cast<M>((1u << n) - 1); }
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float f) { return _mm256_set1_ps(f); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load(const float* p, M m) { return _mm256_maskz_loadu_ps(m, p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store(float* p, V v, M m) { _mm256_mask_storeu_ps(p, m, v); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V where_greater(V a, V b, V t, V f) { return _mm256_mask_blend_ps(_mm256_cmp_ps_mask(a, b, _CMP_GT_OQ), f, t); }
  static V low(__m512 v) { return _mm512_castps512_ps256(v); }  // the first 8 lanes of a broadcast
  static V round_even(V a) { return _mm256_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V times_pow2(V p, V n) {
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
  }
};

}  // namespace

void task_avx512(const DwsepShape& s, const Packed& pk, const Task& t) { run_task<Avx512, 6, 4, Avx512Half>(s, pk, t); }

}  // namespace dwsep_conv2d
}  // namespace slimops
