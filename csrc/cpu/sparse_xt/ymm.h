// The 8-float vector of kernel.h, for the AVX2 path and the AVX-512 path's
// small tiles, and a pair of them for the AVX2 path's large tiles (compiled
// with each one's flags, so internal linkage).
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

// Two ymm as one 16-float vector: AVX2 tiles of 16 activation rows, so one
// broadcast weight value and one walk of the weight serve 16 rows (two FMAs)
// instead of one walk per 8-row tile: 1.2-1.4x faster from 9 rows on the
// Zen 2 (CSR, BSR and 2:4 at 4096^2). Four ymm (32-row tiles) were 10% slower
// than two, and 1.5x slower for 2:4. (Named members: as an array, GCC kept
// the vectors in memory and the pair ran about 2.6x slower.)
struct YmmPair : Avx2Columns {
  struct V {
    __m256 lo, hi;
  };
  static constexpr int kWidth = 16;
  static V zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static V set1(float f) {
    const __m256 v = _mm256_set1_ps(f);
    return {v, v};
  }
  static V load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static void store(float* p, V v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
  }
  static V add(V a, V b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  static V mul(V a, V b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
  static V fma(V a, V b, V c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
};

}  // namespace
}  // namespace sparse_xt
}  // namespace slimops
