// AVX-512 path (compiled with the avx512_vnni level's flags; it needs F, BW and VL).
//
// A block of 16 nonzeros is one zmm of column indices and one of values, read
// once and used for up to 16 activation rows: per row one gather of x at the
// indices (vgatherdps) and one FMA into that row's zmm of the 16 lanes. The
// last partial block uses masks: masked loads, a masked gather and a masked
// FMA that leaves the lanes past the row's end untouched.
#include <immintrin.h>

#include "kernels.h"

namespace slimops {
namespace csr_linear {
namespace {

constexpr int kMR = 16;

inline __m512i load_indices(__mmask16 mask, const int16_t* col) {
  return _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(mask, col));
}
inline __m512i load_indices(__mmask16 mask, const int32_t* col) { return _mm512_maskz_loadu_epi32(mask, col); }

struct Avx512Kernel {
  template <int mr, typename Idx>
  static bool run(const Rows& r, const Idx* col, int64_t begin, int64_t end, int64_t m, int64_t n) {
    const float* a[mr];
    __m512 acc[mr];
#pragma GCC unroll 16
    for (int i = 0; i < mr; ++i) {
      a[i] = r.x + (m + i) * r.x_row_stride;
      acc[i] = _mm512_setzero_ps();
    }
    const __m512i limit = _mm512_set1_epi32(static_cast<int32_t>(r.index_limit));
    for (int64_t j = begin; j < end; j += kCsrLanes) {
      const int64_t left = end - j;
      const __mmask16 mask = left >= kCsrLanes ? 0xffff : _bzhi_u32(0xffff, static_cast<unsigned>(left));
      const __m512i idx = load_indices(mask, col + j);
      if (_mm512_mask_cmpge_epu32_mask(mask, idx, limit) != 0) return false;
      const __m512 v = _mm512_maskz_loadu_ps(mask, r.values + j);
#pragma GCC unroll 16
      for (int i = 0; i < mr; ++i) {
        const __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, idx, a[i], 4);
        acc[i] = _mm512_mask3_fmadd_ps(xv, v, acc[i], mask);
      }
    }
    for (int i = 0; i < mr; ++i) {
      alignas(64) float p[kCsrLanes];
      _mm512_store_ps(p, acc[i]);
      r.y[(m + i) * r.N + n] = finish_output(p, r, n);
    }
    return true;
  }
};

}  // namespace

bool rows_avx512(const Rows& r) { return walk_rows_any_index<kMR, Avx512Kernel>(r); }

}  // namespace csr_linear
}  // namespace slimops
