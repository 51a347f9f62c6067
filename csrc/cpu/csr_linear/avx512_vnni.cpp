// AVX-512 path (compiled with the avx512_vnni level's flags; it needs F, BW and VL).
//
// A block of 16 nonzeros is one zmm of column indices and one of values, read
// once and used for both activation rows: per row one zmm of x at the indices
// (x_quads.h) and one FMA into that row's zmm of the 16 lanes. The last
// partial block uses masks: masked loads, a masked gather and a masked FMA
// that leaves the lanes past the row's end untouched.
#include <immintrin.h>

#include <utility>

#include "../prefetch.h"
#include "kernels.h"
#include "x_quads.h"

namespace slimops {
namespace csr_linear {
namespace {

// Plain loads for full blocks, masked ones only for a row's last: this CPU
// (Zen 4) streams masked loads from memory several times slower.
inline __m512i load_indices(__mmask16 mask, const int16_t* col) {
  const __m256i i16 = mask == 0xffff ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col))
                                     : _mm256_maskz_loadu_epi16(mask, col);
  return _mm512_cvtepi16_epi32(i16);
}
inline __m512i load_indices(__mmask16 mask, const int32_t* col) {
  return mask == 0xffff ? _mm512_loadu_si512(col) : _mm512_maskz_loadu_epi32(mask, col);
}
inline __m512 load_values(__mmask16 mask, const float* v) {
  return mask == 0xffff ? _mm512_loadu_ps(v) : _mm512_maskz_loadu_ps(mask, v);
}

// x at 16 checked column indices.
template <typename Idx>
inline __m512 x_at(const float* x, const Idx* col) {
  // insertf64x4 (AVX-512F) rather than insertf32x8 (DQ): the same bits.
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(x_octet(x, col))),
                                             _mm256_castps_pd(x_octet(x, col + 8)), 1));
}

// The rows' accumulators and x pointers are indexed only by template
// parameters (index_sequence, no loops over rows): GCC keeps an array in
// registers only when every index is a constant before unrolling.
struct Avx512Kernel {
  template <typename Idx, size_t... I>
  [[gnu::always_inline]] static void fma_rows(const Idx* col, __m512 v, const float* const (&a)[sizeof...(I)],
                                              __m512 (&acc)[sizeof...(I)], std::index_sequence<I...>) {
    ((acc[I] = _mm512_fmadd_ps(x_at(a[I], col), v, acc[I])), ...);
  }
  template <size_t... I>
  [[gnu::always_inline]] static void fma_rows_masked(__mmask16 mask, __m512i idx, __m512 v,
                                                     const float* const (&a)[sizeof...(I)],
                                                     __m512 (&acc)[sizeof...(I)], std::index_sequence<I...>) {
    ((acc[I] = _mm512_mask3_fmadd_ps(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, idx, a[I], 4), v, acc[I],
                                     mask)),
     ...);
  }

  template <int mr, typename Idx>
  static bool run(const Rows& r, const float* values, const Idx* col, int64_t begin, int64_t end, int64_t m,
                  int64_t n) {
    const float* a[mr];
    for (int i = 0; i < mr; ++i) a[i] = r.x + (m + i) * r.x_row_stride;
    __m512 acc[mr] = {};
    const __m512i limit = _mm512_set1_epi32(static_cast<int32_t>(r.index_limit));
    int64_t j = begin;
    for (; j + kCsrLanes <= end; j += kCsrLanes) {
      prefetch_ahead_of(col, j);
      prefetch_ahead_of(values, j);
      if (_mm512_cmpge_epu32_mask(load_indices(0xffff, col + j), limit) != 0) return false;
      fma_rows(col + j, _mm512_loadu_ps(values + j), a, acc, std::make_index_sequence<mr>());
    }
    if (j < end) {
      const __mmask16 mask = _bzhi_u32(0xffff, static_cast<unsigned>(end - j));
      const __m512i idx = load_indices(mask, col + j);
      if (_mm512_mask_cmpge_epu32_mask(mask, idx, limit) != 0) return false;
      fma_rows_masked(mask, idx, load_values(mask, values + j), a, acc, std::make_index_sequence<mr>());
    }
    alignas(64) float p[mr][kCsrLanes];
    store_rows(acc, p, std::make_index_sequence<mr>());
    for (int i = 0; i < mr; ++i) r.y[(m + i) * r.N + n] = finish_output(p[i], r, n);
    return true;
  }

  template <size_t... I>
  static void store_rows(const __m512 (&acc)[sizeof...(I)], float (&p)[sizeof...(I)][kCsrLanes],
                         std::index_sequence<I...>) {
    (_mm512_store_ps(p[I], acc[I]), ...);
  }
};

}  // namespace

bool rows_avx512(const Rows& r) { return walk_rows_any_index<kCsrGatherMaxRows, Avx512Kernel>(r, r.values); }

}  // namespace csr_linear
}  // namespace slimops
