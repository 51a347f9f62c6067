// N:M linear for one to four activation rows on AVX2 (compiled with -mavx2
// -mfma), float32 or int8 values (widened exactly, the row's sum times its
// scale): the weight streams once; per run of 16 kept values the matching x
// values are fetched into two ymm and two FMAs add them into the output's 16
// lanes: the float order of kernel.h, so the bits equal the xT kernel's and
// the AVX-512 one's. The aligned runs of 2:4 and 4:8 (aligned_runs.h: 32
// columns from 32 * k) take x by permutes of plain loads; other runs decode
// their columns (columns.h) and gather x, which on the Zen 2 left 2:4 at M=1
// at 0.62x the dense layer's speed.
#include <immintrin.h>

#include <cstring>

#include "../prefetch.h"
#include "columns.h"
#include "kernel.h"
#include "lanes.h"

namespace slimops {
namespace sparse_xt {
namespace {

// Eight stored values from p as floats (int8 ones widened exactly).
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// Lanes [0, count) all-ones, for the masked gathers and blends of a short run.
inline __m256i lanes_below(int count, int first_lane) {
  const __m256i lane = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(first_lane));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lane);
}

// The first `runs` runs of output row n, all aligned (see aligned_run_count),
// into acc. Lane l of run k reads column 32 * k + (l / n) * m + field l: for
// each half of the run (8 lanes, 16 columns) the first 4 lanes' columns lie
// in its first 8 columns and the last 4 lanes' in the next 8 (2:4: groups
// 0-1 and 2-3; 4:8: group 0 and 1), so a permute of each 8-column load by
// the low 3 bits of the column, blended, gives x at the lanes' columns.
// Returns false on a 4:8 field >= 8 (the permutes read only the low bits,
// so such a field stays inside the loaded columns).
template <int M, int R, typename T>
bool aligned_runs(const Rows& r, const NmWeight& w, const T* row_values, int64_t n, int64_t runs,
                  __m256 (&acc)[R][2]) {
  constexpr int kRunBytes = 16 * (M == 4 ? 2 : 4) / 8;  // 16 fields of 2 or 4 bits, as in rows()
  const uint8_t* fields = w.indices + n * w.row_bytes;
  const T* values = row_values + n * w.kept;
  // (l / n) * m for the lanes of each half; shifts of lane l's field in its 32-bit word.
  __m256i base[2];
  for (int h = 0; h < 2; ++h) {
    base[h] = _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.group_step[0] + 8 * h)),
                                 _mm256_set1_epi32(M));
  }
  const __m256i shifts[2] = {
      M == 4 ? _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14) : _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28),
      M == 4 ? _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30) : _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)};
  const __m256i field_mask = _mm256_set1_epi32(M - 1 + (M == 8 ? 8 : 0));  // 4:8 keeps bit 3 to check it
  __m256i seen = _mm256_setzero_si256();
  for (int64_t k = 0; k < runs; ++k) {
    prefetch_ahead_of(values, 16 * k);
    prefetch_ahead_of(fields, k * kRunBytes);
    uint32_t word[2] = {0, 0};
    std::memcpy(word, fields + k * kRunBytes, kRunBytes);
    for (int h = 0; h < 2; ++h) {
      const __m256i source = _mm256_set1_epi32(static_cast<int32_t>(word[M == 4 ? 0 : h]));
      const __m256i field = _mm256_and_si256(_mm256_srlv_epi32(source, shifts[h]), field_mask);
      if constexpr (M == 8) seen = _mm256_or_si256(seen, field);
      const __m256i column = _mm256_add_epi32(base[h], field);
      const __m256 v = load8(values + 16 * k + 8 * h);
      for (int i = 0; i < R; ++i) {
        const float* x = r.x + i * r.x_row_stride + 32 * k + 16 * h;
        const __m256 low = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x), column);
        const __m256 high = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + 8), column);
        acc[i][h] = _mm256_fmadd_ps(_mm256_blend_ps(low, high, 0xf0), v, acc[i][h]);
      }
    }
  }
  return M == 4 || _mm256_testz_si256(seen, _mm256_set1_epi32(8));
}

// R activation rows: a template parameter, so acc stays in registers. T:
// the stored values' type.
template <int M, int R, typename T>
bool rows(const Rows& r, const NmWeight& w, const T* row_values) {
  constexpr int kBits = M == 4 ? 2 : 4, kRunBytes = 16 * kBits / 8;
  const int64_t aligned = aligned_run_count(w, r.K);
  for (int64_t n = r.n_begin; n < r.n_end; ++n) {
    const uint8_t* fields = w.indices + n * w.row_bytes;
    const T* values = row_values + n * w.kept;
    __m256 acc[R][2];
    for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    if (!aligned_runs<M, R>(r, w, row_values, n, aligned, acc)) return false;
    int64_t q = aligned * 16 / w.n;  // the generic walk goes on after the aligned runs
    int p = 0;
    for (int64_t j = aligned * 16; j < w.kept; j += 16) {
      const int count = static_cast<int>(min64(16, w.kept - j));
      uint32_t words[kRunWords<M>];
      load_run_fields<M>(fields + j / 16 * kRunBytes, count, words);
      alignas(32) int32_t cols[16];
      if (!Avx2Columns::nm_columns<M>(words, static_cast<int32_t>(q * M), w.group_step[p], cols)) return false;
      const __m256i idx[2] = {_mm256_load_si256(reinterpret_cast<const __m256i*>(cols)),
                              _mm256_load_si256(reinterpret_cast<const __m256i*>(cols + 8))};
      if (count == 16) {
        const __m256 v[2] = {load8(values + j), load8(values + j + 8)};
        for (int i = 0; i < R; ++i) {
          const float* x = r.x + i * r.x_row_stride;
          for (int h = 0; h < 2; ++h) acc[i][h] = _mm256_fmadd_ps(_mm256_i32gather_ps(x, idx[h], 4), v[h], acc[i][h]);
        }
      } else {  // a short last run: the lanes past count neither read x nor change acc
        const __m256i keep[2] = {lanes_below(count, 0), lanes_below(count, 8)};
        alignas(32) float part[16] = {};  // the run's values, widened, zeros past count
        for (int l = 0; l < count; ++l) part[l] = static_cast<float>(values[j + l]);
        const __m256 v[2] = {_mm256_load_ps(part), _mm256_load_ps(part + 8)};
        for (int i = 0; i < R; ++i) {
          const float* x = r.x + i * r.x_row_stride;
          for (int h = 0; h < 2; ++h) {
            const __m256 mask = _mm256_castsi256_ps(keep[h]);
            const __m256 xv = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x, idx[h], mask, 4);
            acc[i][h] = _mm256_blendv_ps(acc[i][h], _mm256_fmadd_ps(xv, v[h], acc[i][h]), mask);
          }
        }
      }
      advance_run(w, &q, &p);
    }
    for (int i = 0; i < R; ++i) {
      alignas(32) float lane[16];
      _mm256_store_ps(lane, acc[i][0]);
      _mm256_store_ps(lane + 8, acc[i][1]);
      r.y[i * r.N + n] = sum_lanes(lane, w.values.scale, r.bias, n);
    }
  }
  return true;
}

template <typename T>
bool rows_of(const Rows& r, const NmWeight& w, const T* values) {
  switch (r.M) {
    case 1:
      return w.m == 4 ? rows<4, 1>(r, w, values) : rows<8, 1>(r, w, values);
    case 2:
      return w.m == 4 ? rows<4, 2>(r, w, values) : rows<8, 2>(r, w, values);
    case 3:
      return w.m == 4 ? rows<4, 3>(r, w, values) : rows<8, 3>(r, w, values);
    default:
      return w.m == 4 ? rows<4, 4>(r, w, values) : rows<8, 4>(r, w, values);
  }
}

}  // namespace

bool nm_rows_avx2(const Rows& r, const NmWeight& w) {
  return w.values.i8 != nullptr ? rows_of(r, w, w.values.i8) : rows_of(r, w, w.values.f32);
}

}  // namespace sparse_xt
}  // namespace slimops
