// Column decoders of the xT kernel (kernel.h), for one full run of 16 stored
// elements; each returns false on a bad index or field (internal linkage: the
// header is compiled per ISA).
//   columns_in_range(col, limit): col[0 .. 16) all in [0, limit).
//   nm_columns<m>(words, base, step, cols): the 16 position fields packed in
//     words (low bits first; 2 bits for m = 4, 4 for m = 8) become
//     cols[l] = base + step[l] * m + field[l]; every field must be below m.
#pragma once

#include <cstdint>
#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace slimops {
namespace sparse_xt {
namespace {

struct PortableColumns {
  template <typename Idx>
  static bool columns_in_range(const Idx* col, uint32_t limit) {
    uint32_t bad = 0;
    for (int l = 0; l < 16; ++l) bad |= static_cast<uint32_t>(static_cast<int32_t>(col[l])) >= limit;
    return bad == 0;
  }

  template <int M>
  static bool nm_columns(const uint32_t* words, int32_t base, const int32_t* step, int32_t* cols) {
    constexpr int kBits = M == 4 ? 2 : 4, kPerWord = 32 / kBits;
    uint32_t bad = 0;
    for (int l = 0; l < 16; ++l) {
      const uint32_t field = (words[l / kPerWord] >> (kBits * (l % kPerWord))) & ((1u << kBits) - 1);
      bad |= field >= M;
      // uint32: lanes past a short run's count may pass INT32_MAX near K = 2^31 (never used).
      cols[l] = static_cast<int32_t>(static_cast<uint32_t>(base) + static_cast<uint32_t>(step[l]) * M + field);
    }
    return bad == 0;
  }
};

#ifdef __AVX2__
// Two ymm of 8 lanes each.
struct Avx2Columns {
  static bool columns_in_range(const int16_t* col, uint32_t limit) {
    const __m256i lo = _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(col)));
    const __m256i hi = _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(col + 8)));
    return in_range(lo, hi, limit);
  }
  static bool columns_in_range(const int32_t* col, uint32_t limit) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col));
    const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col + 8));
    return in_range(lo, hi, limit);
  }

  template <int M>
  static bool nm_columns(const uint32_t* words, int32_t base, const int32_t* step, int32_t* cols) {
    constexpr int kBits = M == 4 ? 2 : 4;
    // Lane l's field sits at bit kBits * l of the run: word l / (32 / kBits).
    const __m256i mask = _mm256_set1_epi32((1 << kBits) - 1);
    __m256i lo, hi;
    if constexpr (M == 4) {
      const __m256i w = _mm256_set1_epi32(static_cast<int32_t>(words[0]));
      lo = _mm256_and_si256(_mm256_srlv_epi32(w, _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)), mask);
      hi = _mm256_and_si256(_mm256_srlv_epi32(w, _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30)), mask);
    } else {
      const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
      lo = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int32_t>(words[0])), shifts), mask);
      hi = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int32_t>(words[1])), shifts), mask);
    }
    const __m256i too_big = _mm256_set1_epi32(M - 1);
    const int bad =
        _mm256_movemask_epi8(_mm256_or_si256(_mm256_cmpgt_epi32(lo, too_big), _mm256_cmpgt_epi32(hi, too_big)));
    constexpr int kShift = M == 4 ? 2 : 3;  // step * M
    const __m256i b = _mm256_set1_epi32(base);
    const __m256i step_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(step));
    const __m256i step_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(step + 8));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(cols),
                        _mm256_add_epi32(_mm256_add_epi32(b, _mm256_slli_epi32(step_lo, kShift)), lo));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(cols + 8),
                        _mm256_add_epi32(_mm256_add_epi32(b, _mm256_slli_epi32(step_hi, kShift)), hi));
    return bad == 0;
  }

 private:
  // v >= limit as unsigned (so negatives fail too) exactly when max(v, limit) == v.
  static bool in_range(__m256i lo, __m256i hi, uint32_t limit) {
    const __m256i l = _mm256_set1_epi32(static_cast<int32_t>(limit));
    const __m256i bad = _mm256_or_si256(_mm256_cmpeq_epi32(_mm256_max_epu32(lo, l), lo),
                                        _mm256_cmpeq_epi32(_mm256_max_epu32(hi, l), hi));
    return _mm256_movemask_epi8(bad) == 0;
  }
};
#endif

}  // namespace
}  // namespace sparse_xt
}  // namespace slimops
