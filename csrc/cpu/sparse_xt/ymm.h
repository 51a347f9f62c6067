// The 8-float vector of kernel.h, for the AVX2 path and the AVX-512 path's
// small tiles (compiled with each one's flags, so internal linkage).
#pragma once

#include <immintrin.h>

#include "columns.h"

namespace slimops {
namespace sparse_xt {
namespace {

struct Ymm : Avx2Columns {
  using V = __m256;
  static constexpr int kWidth = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float f) { return _mm256_set1_ps(f); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
};

}  // namespace
}  // namespace sparse_xt
}  // namespace slimops
