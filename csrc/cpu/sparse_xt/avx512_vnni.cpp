// AVX-512 path (compiled with the avx512_vnni level's flags; it uses F and VL):
// tiles of 16 activation rows (zmm), and of 8 (ymm) when there are at most 8
// rows, where a 16-row tile would spend half its work on zero rows (the same
// code as the AVX2 path, but with 32 registers its 16 accumulators never spill).
#include <immintrin.h>

#include "columns.h"
#include "kernel.h"
#include "ymm.h"

namespace slimops {
namespace sparse_xt {
namespace {

struct Avx512 : Avx2Columns {
  using V = __m512;
  static constexpr int kWidth = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float f) { return _mm512_set1_ps(f); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
};

}  // namespace

bool csr_avx512(const Tiles& t, const CsrWeight& w) { return run_tiles<Avx512>(t, w); }
bool bsr_avx512(const Tiles& t, const BsrWeight& w) { return run_tiles<Avx512>(t, w); }
bool nm_avx512(const Tiles& t, const NmWeight& w) { return run_tiles<Avx512>(t, w); }
bool csr_avx512_half(const Tiles& t, const CsrWeight& w) { return run_tiles<Ymm>(t, w); }
bool bsr_avx512_half(const Tiles& t, const BsrWeight& w) { return run_tiles<Ymm>(t, w); }
bool nm_avx512_half(const Tiles& t, const NmWeight& w) { return run_tiles<Ymm>(t, w); }

}  // namespace sparse_xt
}  // namespace slimops
