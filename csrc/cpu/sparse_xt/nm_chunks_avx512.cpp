// N:M linear (float32 or int8 values) for 3 to 16 activation rows on AVX-512
// (compiled with the avx512_vnni level's flags), for 2:4 and 4:8 rows whose K
// is a multiple of 32 (every run aligned, aligned_runs.h). The xT kernel
// spends a broadcast and a tile load on each kept value; here each run of 16
// kept values is decoded and loaded once and meets every activation row with
// one permute and one FMA (16 values a row at a time). The weight is walked
// in chunks of 512 columns, all of a task's output rows per chunk, so the
// chunk of x (16 rows: 32 KiB) stays in L1; a row's 16 lanes per activation
// row wait in scratch between chunks. Runs stay in order within each row,
// so the float order (and the bits) are those of kernel.h.
#include <immintrin.h>

#include "../prefetch.h"
#include "aligned_runs.h"
#include "kernel.h"
#include "lanes.h"

namespace slimops {
namespace sparse_xt {
namespace {

constexpr int64_t kChunkRuns = 16;                // runs a chunk
constexpr int64_t kChunkColumns = 32 * kChunkRuns;  // 512

// store_row_sum for rows 0 .. min(R, r.M) - 1 of output n at once: the
// halving tree of sum_lanes (lanes.h) with each step adding the same lane
// pairs, in the same operand order, for two, four, eight and then sixteen
// rows a vector (rows past R are zeros), so the sums are bit-identical. With
// a scalar tree per row the kernel ran 1.22-1.31x longer at 16 rows (1.06x at
// 4) on the Zen 4.
template <int R>
inline void store_row_sums(const Rows& r, const NmWeight& w, int64_t n, const __m512 (&acc)[R]) {
  static_assert(R <= 16, "one vector of row sums");
  __m512 a[16];
  for (int i = 0; i < 16; ++i) a[i] = i < R ? acc[i] : _mm512_setzero_ps();
  __m512 u[8], v[4], t[2];
  for (int j = 0; j < 8; ++j) {  // lanes l + (l + 8): rows 2j, 2j + 1 in 8 lanes each
    u[j] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], 0x44),
                         _mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], 0xee));
  }
  for (int j = 0; j < 4; ++j) {  // l + (l + 4): 128-bit lane g holds row 4j + g
    v[j] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * j], u[2 * j + 1], 0x88),
                         _mm512_shuffle_f32x4(u[2 * j], u[2 * j + 1], 0xdd));
  }
  for (int j = 0; j < 2; ++j) {  // l + (l + 2): lane g holds rows 8j + g, 8j + 4 + g
    t[j] = _mm512_add_ps(_mm512_shuffle_ps(v[2 * j], v[2 * j + 1], 0x44),
                         _mm512_shuffle_ps(v[2 * j], v[2 * j + 1], 0xee));
  }
  // 0 + 1: element 4g + k is row 4k + g; the permute puts row i in element i.
  __m512 sums = _mm512_add_ps(_mm512_shuffle_ps(t[0], t[1], 0x88), _mm512_shuffle_ps(t[0], t[1], 0xdd));
  sums = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), sums);
  if (w.values.scale != nullptr) sums = _mm512_mul_ps(sums, _mm512_set1_ps(w.values.scale[n]));
  if (r.bias != nullptr) sums = _mm512_add_ps(sums, _mm512_set1_ps(r.bias[n]));
  alignas(64) float out[16];
  _mm512_store_ps(out, sums);
  for (int i = 0; i < R && i < r.M; ++i) r.y[i * r.N + n] = out[i];
}

// R >= r.M activation rows (R a template parameter, so acc stays in
// registers). Each chunk of x is first copied to scratch, R rows 512 floats
// apart (zeros past r.M), so that all rows are addressed from one pointer.
template <int M, int R, bool kInt8>
bool chunks(const Rows& r, const NmWeight& w, float* scratch) {
  constexpr int kRunBytes = AlignedRunDecoder<M>::kRunBytes;
  const AlignedRunDecoder<M> decoder(w);
  const int64_t runs = r.K / 32;
  float* chunk = scratch;                        // [R][512]
  float* partial = scratch + R * kChunkColumns;  // [n_end - n_begin][R][16]
  __m512i seen = _mm512_setzero_si512();
  for (int64_t c0 = 0; c0 < runs; c0 += kChunkRuns) {
    const int64_t c1 = min64(runs, c0 + kChunkRuns), columns = 32 * (c1 - c0);
    for (int i = 0; i < R; ++i) {
      float* row = chunk + i * kChunkColumns;
      if (i >= r.M) {
        for (int64_t j = 0; j < columns; ++j) row[j] = 0.0f;
        continue;
      }
      const float* x = r.x + i * r.x_row_stride + 32 * c0;
      for (int64_t j = 0; j < columns; ++j) row[j] = x[j];
    }
    for (int64_t n = r.n_begin; n < r.n_end; ++n) {
      float* lanes = partial + (n - r.n_begin) * R * 16;
      __m512 acc[R];
      for (int i = 0; i < R; ++i) acc[i] = c0 == 0 ? _mm512_setzero_ps() : _mm512_load_ps(lanes + i * 16);
      const uint8_t* fields = w.indices + n * w.row_bytes;
      const int64_t first_value = n * w.kept;
      // The same chunk two rows on: rows are 512 columns apart here, too far
      // for the one-stream prefetch_ahead_of.
      prefetch_at(fields, 2 * w.row_bytes + c0 * kRunBytes);
      for (int64_t k = c0; k < c1; ++k) {
        prefetch_value(w.values, kInt8, first_value + 2 * w.kept + 16 * k);
        const __m512i local = decoder.local(fields, k, &seen);
        const __m512 v = run_values<kInt8>(w.values, first_value + 16 * k, 16, 0xffff);
        const float* x = chunk + 32 * (k - c0);
        for (int i = 0; i < R; ++i) acc[i] = _mm512_fmadd_ps(aligned_x(x + i * kChunkColumns, local), v, acc[i]);
      }
      if (c1 < runs) {
        for (int i = 0; i < R; ++i) _mm512_store_ps(lanes + i * 16, acc[i]);
        continue;
      }
      store_row_sums<R>(r, w, n, acc);
    }
  }
  return AlignedRunDecoder<M>::clean(seen);
}

template <int M, bool kInt8>
bool chunks_for_rows(const Rows& r, const NmWeight& w, float* scratch) {
  if (r.M <= 4) return chunks<M, 4, kInt8>(r, w, scratch);
  if (r.M <= 8) return chunks<M, 8, kInt8>(r, w, scratch);
  if (r.M <= 12) return chunks<M, 12, kInt8>(r, w, scratch);
  return chunks<M, 16, kInt8>(r, w, scratch);
}

}  // namespace

bool nm_chunks_avx512(const Rows& r, const NmWeight& w, float* scratch) {
  if (w.values.i8 != nullptr) {  // else float32 (the driver sends no other types here)
    return w.m == 4 ? chunks_for_rows<4, true>(r, w, scratch) : chunks_for_rows<8, true>(r, w, scratch);
  }
  return w.m == 4 ? chunks_for_rows<4, false>(r, w, scratch) : chunks_for_rows<8, false>(r, w, scratch);
}

}  // namespace sparse_xt
}  // namespace slimops
