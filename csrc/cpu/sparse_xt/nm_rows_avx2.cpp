// N:M linear for one or two activation rows on AVX2 (compiled with -mavx2
// -mfma): the weight streams once; per run of 16 kept values the columns are
// decoded (columns.h), x gathered at them in two ymm, and two FMAs add them
// into the output's 16 lanes: the float order of kernel.h, so the bits equal
// the xT kernel's and the AVX-512 one's.
#include <immintrin.h>

#include "columns.h"
#include "kernel.h"
#include "lanes.h"

namespace slimops {
namespace sparse_xt {
namespace {

// Lanes [0, count) all-ones, for the masked gathers and blends of a short run.
inline __m256i lanes_below(int count, int first_lane) {
  const __m256i lane = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(first_lane));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lane);
}

// R activation rows: a template parameter, so acc stays in registers.
template <int M, int R>
bool rows(const Rows& r, const NmWeight& w) {
  constexpr int kBits = M == 4 ? 2 : 4, kRunBytes = 16 * kBits / 8;
  for (int64_t n = r.n_begin; n < r.n_end; ++n) {
    const uint8_t* fields = w.indices + n * w.row_bytes;
    const float* values = w.values.f32 + n * w.kept;
    __m256 acc[R][2];
    for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    int64_t q = 0;
    int p = 0;
    for (int64_t j = 0; j < w.kept; j += 16) {
      const int count = static_cast<int>(min64(16, w.kept - j));
      uint32_t words[kRunWords<M>];
      load_run_fields<M>(fields + j / 16 * kRunBytes, count, words);
      alignas(32) int32_t cols[16];
      if (!Avx2Columns::nm_columns<M>(words, static_cast<int32_t>(q * M), w.group_step[p], cols)) return false;
      const __m256i idx[2] = {_mm256_load_si256(reinterpret_cast<const __m256i*>(cols)),
                              _mm256_load_si256(reinterpret_cast<const __m256i*>(cols + 8))};
      if (count == 16) {
        const __m256 v[2] = {_mm256_loadu_ps(values + j), _mm256_loadu_ps(values + j + 8)};
        for (int i = 0; i < R; ++i) {
          const float* x = r.x + i * r.x_row_stride;
          for (int h = 0; h < 2; ++h) acc[i][h] = _mm256_fmadd_ps(_mm256_i32gather_ps(x, idx[h], 4), v[h], acc[i][h]);
        }
      } else {  // a short last run: the lanes past count neither read x nor change acc
        const __m256i keep[2] = {lanes_below(count, 0), lanes_below(count, 8)};
        const __m256 v[2] = {_mm256_maskload_ps(values + j, keep[0]), _mm256_maskload_ps(values + j + 8, keep[1])};
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
      r.y[i * r.N + n] = sum_lanes(lane, nullptr, r.bias, n);
    }
  }
  return true;
}

}  // namespace

bool nm_rows_avx2(const Rows& r, const NmWeight& w) {
  if (r.M == 1) return w.m == 4 ? rows<4, 1>(r, w) : rows<8, 1>(r, w);
  return w.m == 4 ? rows<4, 2>(r, w) : rows<8, 2>(r, w);
}

}  // namespace sparse_xt
}  // namespace slimops
