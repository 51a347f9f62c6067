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
      for (int i = 0; i < R && i < r.M; ++i) store_row_sum(r, w, i, n, acc[i]);
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
