// The runs of 16 kept values of 2:4 and 4:8 rows on AVX-512 (include only
// from files compiled with the avx512_vnni level's flags). n divides 16 there,
// so every run starts a group and spans exactly 32 columns, from 32 * k for
// run k: lane l's column is 32 * k + (l / n) * m + its field. A row whose K is
// a multiple of 32 has only such runs, all full.
#pragma once

#include <immintrin.h>

#include <cstring>

#include "kernel.h"
#include "lanes.h"

namespace slimops {
namespace sparse_xt {
namespace {

template <int M>
class AlignedRunDecoder {
 public:
  static constexpr int kBits = M == 4 ? 2 : 4, kRunBytes = 16 * kBits / 8;

  explicit AlignedRunDecoder(const NmWeight& w)
      : base_(_mm512_mullo_epi32(_mm512_loadu_si512(w.group_step[0]), _mm512_set1_epi32(M))) {}

  // Lanes' columns within run k of a row (0..31; the fields are OR-ed into
  // *seen for clean()). A corrupt 4:8 field may give a column past 31:
  // permutex2var reads only the low 5 index bits, so it stays inside the run.
  __m512i local(const uint8_t* row_fields, int64_t k, __m512i* seen) const {
    __m512i words;
    if constexpr (M == 4) {
      uint32_t word;
      std::memcpy(&word, row_fields + k * kRunBytes, sizeof(word));
      words = _mm512_set1_epi32(static_cast<int32_t>(word));
    } else {  // lanes 0-7 in the first 32-bit word, 8-15 in the second
      const __m128i pair = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row_fields + k * kRunBytes));
      words = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                       _mm512_castsi128_si512(pair));
    }
    const __m512i shifts = M == 4 ? _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
                                  : _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    const __m512i field = _mm512_and_si512(_mm512_srlv_epi32(words, shifts), _mm512_set1_epi32((1 << kBits) - 1));
    if constexpr (M == 8) *seen = _mm512_or_si512(*seen, field);
    return _mm512_add_epi32(base_, field);
  }

  // No field >= M among those seen (2-bit fields of 2:4 cannot be).
  static bool clean(__m512i seen) { return _mm512_test_epi32_mask(seen, _mm512_set1_epi32(M)) == 0; }

 private:
  __m512i base_;  // (l / n) * M
};

// x[first + local[l]] for a run whose 32 columns from `first` lie inside the row.
inline __m512 aligned_x(const float* x_first, __m512i local) {
  return _mm512_permutex2var_ps(_mm512_loadu_ps(x_first), local, _mm512_loadu_ps(x_first + 16));
}

// A run's 16 values (count of them), as floats: int8 ones widened exactly.
// Plain loads where they stay in bounds: masked loads stream far slower.
template <bool kInt8>
inline __m512 run_values(const Values& v, int64_t offset, int count, __mmask16 lanes) {
  if constexpr (kInt8) {
    const __m128i bytes = count == 16 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(v.i8 + offset))
                                      : _mm_maskz_loadu_epi8(lanes, v.i8 + offset);
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
  } else {
    return count == 16 ? _mm512_loadu_ps(v.f32 + offset) : _mm512_maskz_loadu_ps(lanes, v.f32 + offset);
  }
}

// y[i][n] from the 16 lanes of output row n, activation row i (kernel.h's
// tree, then the int8 scale and the bias).
inline void store_row_sum(const Rows& r, const NmWeight& w, int64_t i, int64_t n, __m512 acc) {
  alignas(64) float lane[16];
  _mm512_store_ps(lane, acc);
  r.y[i * r.N + n] = sum_lanes(lane, w.values.scale, r.bias, n);
}

// Prefetch value `index` (an element index, int8 or float32).
inline void prefetch_value(const Values& v, bool int8, int64_t index) {
  prefetch_at(int8 ? static_cast<const void*>(v.i8) : static_cast<const void*>(v.f32), index * (int8 ? 1 : 4));
}

}  // namespace
}  // namespace sparse_xt
}  // namespace slimops
