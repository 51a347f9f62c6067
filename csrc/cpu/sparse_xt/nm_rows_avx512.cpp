// N:M linear (float32 or int8 values) for one or two activation rows on AVX-512 (compiled with the
// avx512_vnni level's flags), where the xT kernel's tiles would be mostly zero
// rows. The weight streams once: per run of 16 kept values, the 16 columns
// are decoded in a zmm, the matching x values fetched (a two-register permute
// when the run spans at most 32 columns, as in 2:4 and 4:8; a gather
// otherwise), and one FMA adds them into the output's 16 lanes. That is the
// float order of kernel.h (kept value j to lane j % 16, then the tree), so the
// bits equal the xT kernel's.
#include <immintrin.h>

#include "../prefetch.h"
#include "aligned_runs.h"
#include "kernel.h"
#include "lanes.h"

namespace slimops {
namespace sparse_xt {
namespace {

// The 16 columns of a run starting at group q, place p (see NmWalk); false
// on a field >= M.
template <int M>
inline bool run_columns(const NmWeight& w, const uint8_t* src, int count, int64_t q, int p, __m512i* cols) {
  constexpr int kBits = M == 4 ? 2 : 4;
  uint32_t words[kRunWords<M>];
  load_run_fields<M>(src, count, words);
  // Lane l's field sits at bit kBits * l of the run: in word 0 for m = 4; in
  // word l / 8 for m = 8.
  alignas(64) static constexpr int32_t kShifts[2][16] = {
      {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30},
      {0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28}};
  __m512i source = _mm512_set1_epi32(static_cast<int32_t>(words[0]));
  if constexpr (M == 8) source = _mm512_mask_blend_epi32(0xff00, source, _mm512_set1_epi32(static_cast<int32_t>(words[1])));
  // maskz: the plain intrinsic trips GCC 12's -Wmaybe-uninitialized.
  __m512i fields = _mm512_maskz_srlv_epi32(0xffff, source, _mm512_load_si512(kShifts[M == 4 ? 0 : 1]));
  fields = _mm512_and_si512(fields, _mm512_set1_epi32((1 << kBits) - 1));
  if (_mm512_cmpge_epi32_mask(fields, _mm512_set1_epi32(M)) != 0) return false;
  const __m512i step = _mm512_loadu_si512(w.group_step[p]);
  *cols = _mm512_add_epi32(_mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(q * M)),
                                            _mm512_mullo_epi32(step, _mm512_set1_epi32(M))),
                           fields);
  return true;
}

// The aligned runs (aligned_runs.h) of P output rows n[] against R
// activation rows: no group walk, no masks, and the 4-bit fields of 4:8
// checked once per row. The generic loop below was compute bound at ~19
// cycles a run on the AMX Xeon, where the stream allows ~8. P = 2 at one
// activation row: two weight streams a core instead of one read the weight
// ~5% faster from memory there (2:4, M=1). Returns false on a field >= M.
template <int M, int P, int R, bool kInt8>
bool aligned_runs(const Rows& r, const NmWeight& w, const int64_t (&n)[P], int64_t runs, __m512 (&acc)[P][R]) {
  const AlignedRunDecoder<M> decoder(w);
  const uint8_t* fields[P];
  for (int p = 0; p < P; ++p) fields[p] = w.indices + n[p] * w.row_bytes;
  __m512i seen = _mm512_setzero_si512();
  for (int64_t k = 0; k < runs; ++k) {
    for (int p = 0; p < P; ++p) {
      const int64_t first_value = n[p] * w.kept + 16 * k;
      prefetch_value(w.values, kInt8, first_value + kStreamPrefetchElements);
      prefetch_ahead_of(fields[p], k * AlignedRunDecoder<M>::kRunBytes);
      const __m512i local = decoder.local(fields[p], k, &seen);
      const __m512 v = run_values<kInt8>(w.values, first_value, 16, 0xffff);
      for (int i = 0; i < R; ++i) {
        acc[p][i] = _mm512_fmadd_ps(aligned_x(r.x + i * r.x_row_stride + 32 * k, local), v, acc[p][i]);
      }
    }
  }
  return AlignedRunDecoder<M>::clean(seen);
}

// R activation rows (a template parameter, so acc stays in registers: in
// memory, the masked FMA's store would not forward to the next run's load).
template <int M, int R, bool kInt8>
bool rows(const Rows& r, const NmWeight& w) {
  constexpr int kBits = M == 4 ? 2 : 4, kRunBytes = 16 * kBits / 8;
  // The groups a run of 16 kept values touches: 16 / n when n divides 16
  // (every run starts a group), else up to ceil((n - 1 + 16) / n).
  const int64_t groups = 16 % w.n == 0 ? 16 / w.n : (w.n - 1 + 16 + w.n - 1) / w.n;
  const int64_t span = groups * M;
  const bool permute = span <= 32;
  const int64_t aligned = aligned_run_count(w, r.K);
  int64_t n_first = r.n_begin;
  if constexpr (R == 1) {
    if (aligned * 16 == w.kept) {  // whole rows of aligned runs: two at a time, from the task's two halves
      const int64_t half = (r.n_end - r.n_begin) / 2;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t pair[2] = {r.n_begin + i, r.n_begin + half + i};
        __m512 acc[2][1] = {{_mm512_setzero_ps()}, {_mm512_setzero_ps()}};
        if (!aligned_runs<M, 2, 1, kInt8>(r, w, pair, aligned, acc)) return false;
        for (int p = 0; p < 2; ++p) store_row_sum(r, w, 0, pair[p], acc[p][0]);
      }
      n_first = r.n_begin + 2 * half;  // an odd last row below
    }
  }
  for (int64_t n = n_first; n < r.n_end; ++n) {
    const uint8_t* fields = w.indices + n * w.row_bytes;
    __m512 runs_acc[1][R];
    __m512 (&acc)[R] = runs_acc[0];
    for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
    if (!aligned_runs<M, 1, R, kInt8>(r, w, {n}, aligned, runs_acc)) return false;
    int64_t q = aligned * 16 / w.n;  // the generic walk goes on after the aligned runs
    int p = 0;
    for (int64_t j = aligned * 16; j < w.kept; j += 16) {
      const int count = static_cast<int>(min64(16, w.kept - j));
      const __mmask16 lanes = count == 16 ? 0xffff : static_cast<__mmask16>((1u << count) - 1);
      __m512i cols;
      if (!run_columns<M>(w, fields + j / 16 * kRunBytes, count, q, p, &cols)) return false;
      const __m512 v = run_values<kInt8>(w.values, n * w.kept + j, count, lanes);
      const int64_t first = q * M;  // the run's columns lie in [first, first + span)
      for (int i = 0; i < R; ++i) {
        const float* x = r.x + i * r.x_row_stride;
        __m512 xv;
        if (permute) {
          // Columns past K (only in a short last run) are not loaded.
          const int64_t left = r.K - first;
          const __mmask16 lo = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1);
          const __mmask16 hi = left >= 32 ? 0xffff : left <= 16 ? 0 : static_cast<__mmask16>((1u << (left - 16)) - 1);
          const __m512i local = _mm512_sub_epi32(cols, _mm512_set1_epi32(static_cast<int32_t>(first)));
          xv = left >= 32 ? _mm512_permutex2var_ps(_mm512_loadu_ps(x + first), local, _mm512_loadu_ps(x + first + 16))
                          : _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(lo, x + first), local,
                                                   _mm512_maskz_loadu_ps(hi, x + first + 16));
        } else {
          xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes, cols, x, 4);
        }
        acc[i] = _mm512_mask3_fmadd_ps(xv, v, acc[i], lanes);
      }
      advance_run(w, &q, &p);
    }
    for (int i = 0; i < R; ++i) store_row_sum(r, w, i, n, acc[i]);
  }
  return true;
}

}  // namespace

bool nm_rows_avx512(const Rows& r, const NmWeight& w) {
  if (w.values.i8 != nullptr) {  // else float32 (the driver sends no other types here)
    if (r.M == 1) return w.m == 4 ? rows<4, 1, true>(r, w) : rows<8, 1, true>(r, w);
    return w.m == 4 ? rows<4, 2, true>(r, w) : rows<8, 2, true>(r, w);
  }
  if (r.M == 1) return w.m == 4 ? rows<4, 1, false>(r, w) : rows<8, 1, false>(r, w);
  return w.m == 4 ? rows<4, 2, false>(r, w) : rows<8, 2, false>(r, w);
}

}  // namespace sparse_xt
}  // namespace slimops
