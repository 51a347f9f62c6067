// AVX2 path (compiled with -mavx2 -mfma).
//
// The 16 lanes of the float order are two ymm per activation row. A block of
// 16 nonzeros (two ymm of indices, two of values) is read once and used for
// both rows: per row two ymm of x at the indices (x_quads.h) and two FMAs. A
// row's last partial block reads a whole block in place (or, at the arrays'
// end, from zero-padded copies), with the indices past the row's end zeroed
// (index 0 is in range whenever the row's real indices are); x at them comes
// the same way, and the FMAs are blended so the lanes past the row's end stay
// as they were. (On the Zen 2 the copy loop and two vgatherdps a row took
// about 8% of CSR 90% at M=1.)
#include <immintrin.h>

#include "../prefetch.h"
#include "kernels.h"
#include "x_quads.h"

namespace slimops {
namespace csr_linear {
namespace {

inline __m256i load_indices8(const int16_t* col) {
  return _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(col)));
}
inline __m256i load_indices8(const int32_t* col) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col)); }

// Eight stored values as floats (int8 ones widened exactly).
inline __m256 load_values8(const float* v) { return _mm256_loadu_ps(v); }
inline __m256 load_values8(const int8_t* v) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(v))));
}

// Whether some index is negative or >= the limit (limit - 1 fits in int32).
inline bool any_out_of_range(__m256i idx, __m256i limit_minus_one) {
  const __m256i bad = _mm256_or_si256(_mm256_cmpgt_epi32(idx, limit_minus_one),
                                      _mm256_cmpgt_epi32(_mm256_setzero_si256(), idx));
  return _mm256_movemask_epi8(bad) != 0;
}

// The index limit in the forms the checks compare with.
struct Limits {
  __m256i minus_one32;  // K - 1 in each int32 lane
  __m256i minus_one16;  // min(K - 1, 32767) in each uint16 lane: int16 indices are valid iff <= it, unsigned
  explicit Limits(uint32_t k)  // k >= 1: the entry point rejects stored entries when K == 0
      : minus_one32(_mm256_set1_epi32(static_cast<int32_t>(k - 1))),
        minus_one16(_mm256_set1_epi16(static_cast<int16_t>(k - 1 > 32767 ? 32767 : k - 1))) {}
};

// Whether some of 16 indices is out of range. int16 ones in their own
// lanes: as unsigned words negative ones exceed 32767, so one max and one
// compare check all 16 (widening them to int32 first took about 8% of the
// CSR 90% M=1 row's time on the Zen 2).
inline bool block_out_of_range(const int16_t* col, const Limits& lim) {
  const __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col));
  return _mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_max_epu16(idx, lim.minus_one16), lim.minus_one16)) != -1;
}
inline bool block_out_of_range(const int32_t* col, const Limits& lim) {
  return any_out_of_range(load_indices8(col), lim.minus_one32) || any_out_of_range(load_indices8(col + 8), lim.minus_one32);
}

struct Avx2Kernel {
  // One full block of 16 checked nonzeros.
  template <int mr, typename Idx>
  static inline void full_block(const float* const (&a)[mr], const Idx* col, const __m256 (&v)[2],
                                __m256 (&acc)[mr][2]) {
#pragma GCC unroll 4
    for (int i = 0; i < mr; ++i) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) acc[i][h] = _mm256_fmadd_ps(x_octet(a[i], col + 8 * h), v[h], acc[i][h]);
    }
  }

  // The last partial block; lanes where keep is all-ones are updated.
  template <int mr>
  static inline void tail_block(const float* const (&a)[mr], const __m256i (&idx)[2], const __m256 (&v)[2],
                           const __m256 (&keep)[2], __m256 (&acc)[mr][2]) {
    alignas(32) int32_t cols[kCsrLanes];
    _mm256_store_si256(reinterpret_cast<__m256i*>(cols), idx[0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(cols + 8), idx[1]);
#pragma GCC unroll 4
    for (int i = 0; i < mr; ++i) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m256 sum = _mm256_fmadd_ps(x_octet(a[i], cols + 8 * h), v[h], acc[i][h]);
        acc[i][h] = _mm256_blendv_ps(acc[i][h], sum, keep[h]);
      }
    }
  }

  template <int mr, typename T, typename Idx>
  static bool run(const Rows& r, const T* values, const Idx* col, int64_t begin, int64_t end, int64_t m,
                  int64_t n) {
    const float* a[mr];
    __m256 acc[mr][2];
    for (int i = 0; i < mr; ++i) {
      a[i] = r.x + (m + i) * r.x_row_stride;
      acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    }
    const Limits limits(r.index_limit);
    const __m256i limit_minus_one = limits.minus_one32;
    int64_t j = begin;
    for (; j + kCsrLanes <= end; j += kCsrLanes) {
      prefetch_ahead_of(col, j);
      prefetch_ahead_of(values, j);
      if (block_out_of_range(col + j, limits)) return false;
      const __m256 v[2] = {load_values8(values + j), load_values8(values + j + 8)};
      full_block<mr>(a, col + j, v, acc);
    }
    if (j < end) {
      const int count = static_cast<int>(end - j);
      __m256i idx[2];
      __m256 v[2], keep[2];
      for (int h = 0; h < 2; ++h) {
        keep[h] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(count - 8 * h),
                                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
      }
      if (j + kCsrLanes <= r.nnz) {
        // A whole block's reach lies inside the arrays (the next row's
        // elements past count): read in place, indices past count zeroed
        // before the check (they are checked with their own row).
        for (int h = 0; h < 2; ++h) {
          idx[h] = _mm256_and_si256(load_indices8(col + j + 8 * h), _mm256_castps_si256(keep[h]));
          v[h] = load_values8(values + j + 8 * h);
        }
      } else {  // the arrays' last block: copied into zero-padded buffers
        alignas(32) int32_t idx_tail[kCsrLanes] = {};
        alignas(32) float v_tail[kCsrLanes] = {};
        for (int l = 0; l < count; ++l) {
          idx_tail[l] = col[j + l];
          v_tail[l] = static_cast<float>(values[j + l]);
        }
        for (int h = 0; h < 2; ++h) {
          idx[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(idx_tail + 8 * h));
          v[h] = _mm256_load_ps(v_tail + 8 * h);
        }
      }
      if (any_out_of_range(idx[0], limit_minus_one) || any_out_of_range(idx[1], limit_minus_one)) return false;
      tail_block<mr>(a, idx, v, keep, acc);
    }
    for (int i = 0; i < mr; ++i) {
      alignas(32) float p[kCsrLanes];
      _mm256_store_ps(p, acc[i][0]);
      _mm256_store_ps(p + 8, acc[i][1]);
      r.y[(m + i) * r.N + n] = finish_output(p, r, n);
    }
    return true;
  }
};

}  // namespace

bool rows_avx2(const Rows& r) { return walk_rows_any_values<kCsrGatherMaxRows, Avx2Kernel>(r); }

}  // namespace csr_linear
}  // namespace slimops
