// The xT driver: picks the ISA path and its tile width, lays x out as tiles,
// and splits the output rows into tasks for the thread pool.
#include "driver.h"

#include <algorithm>
#include <atomic>

#include "../scratch.h"
#include "kernel.h"
#include "slimops/cpu_isa.h"
#include "slimops/thread_pool.h"

namespace slimops {
namespace sparse_xt {
namespace {

template <class Weight>
using TilesFn = bool (*)(const Tiles&, const Weight&);

struct Path {
  int64_t width;  // activation rows a tile
  TilesFn<CsrWeight> csr;
  TilesFn<BsrWeight> bsr;
  TilesFn<NmWeight> nm;
};

Path path_for(CpuIsa isa, int64_t M) {
  switch (isa) {
#ifdef SLIMOPS_X86
    case CpuIsa::kAvx512Vnni:
      if (M <= 8) return {8, csr_avx512_half, bsr_avx512_half, nm_avx512_half};
      return {16, csr_avx512, bsr_avx512, nm_avx512};
    case CpuIsa::kAvx2:
      if (M <= 8) return {8, csr_avx2, bsr_avx2, nm_avx2};
      return {16, csr_avx2_pair, bsr_avx2_pair, nm_avx2_pair};  // see YmmPair
#endif
    default:
      break;
  }
  return {1, csr_scalar, bsr_scalar, nm_scalar};
}

TilesFn<CsrWeight> fn(const Path& p, const CsrWeight&) { return p.csr; }
TilesFn<BsrWeight> fn(const Path& p, const BsrWeight&) { return p.bsr; }
TilesFn<NmWeight> fn(const Path& p, const NmWeight&) { return p.nm; }

// xt[tile][k][i] = x[tile * T + i][k] for k in [k0, k1), zero for rows past M.
// In column blocks whose part of xt (kBlock * T floats, 8 KiB at T = 16)
// stays in L1 while all T rows write into it: row by row over the whole
// part, every store missed L1, and this took a tenth of a 90%-sparse M=16 call.
void transpose_part(const Call& c, int64_t T, int64_t tile, int64_t k0, int64_t k1, float* xt) {
  constexpr int64_t kBlock = 128;
  const int64_t m0 = tile * T;
  float* out = xt + tile * c.K * T;
  for (int64_t kb = k0; kb < k1; kb += kBlock) {
    const int64_t kb_end = std::min(k1, kb + kBlock);
    for (int64_t i = 0; i < T; ++i) {
      const float* row = m0 + i < c.M ? c.x + (m0 + i) * c.x_row_stride : nullptr;
      for (int64_t k = kb; k < kb_end; ++k) out[k * T + i] = row != nullptr ? row[k] : 0.0f;
    }
  }
}

// All tiles of x, laid out by the pool: parts of 1024 columns, so that even
// a single tile is split among the threads.
void transpose_into_tiles(const Call& c, int64_t T, int nthreads, float* xt) {
  constexpr int64_t kPart = 1024;
  const int64_t tiles = (c.M + T - 1) / T, parts = (c.K + kPart - 1) / kPart;
  parallel_for(tiles * parts, nthreads, [&](int64_t i) {
    const int64_t k0 = i % parts * kPart;
    transpose_part(c, T, i / parts, k0, std::min(c.K, k0 + kPart), xt);
  });
}

template <class Weight>
Status run_weight(const Call& c, const Weight& w) {
  const Path path = path_for(active_cpu_isa(), c.M);
  const int64_t T = path.width;
  const int64_t tiles = (c.M + T - 1) / T;
  float* xt = thread_buffer<float, kScratchSparseTiles>(tiles * T * std::max<int64_t>(c.K, 1));
  if (xt == nullptr) return Status::kOutOfMemory;
  const int nthreads = threads_for(c.M, c.N, std::max<int64_t>(1, c.row_elements), c.nthreads);
  transpose_into_tiles(c, T, nthreads, xt);

  const RowSplit split = split_rows(c.N, nthreads, 256);
  const int64_t n_block = split.block, tasks = split.tasks;
  const TilesFn<Weight> tiles_fn = fn(path, w);
  std::atomic<int> failure{0};  // a failing task's status (any one: all are errors)
  parallel_for(tasks, nthreads, [&](int64_t task) {
    if (failure.load(std::memory_order_relaxed) != 0) return;
    float* yt = thread_buffer<float, kScratchSparseOutput>(n_block * T);
    if (yt == nullptr) {
      failure.store(static_cast<int>(Status::kOutOfMemory), std::memory_order_relaxed);
      return;
    }
    const int64_t n_begin = task * n_block;
    const Tiles t{xt, c.bias, c.y, yt, c.M, c.K, c.N, n_begin, std::min(c.N, n_begin + n_block)};
    if (!tiles_fn(t, w)) failure.store(static_cast<int>(bad_data_status(w)), std::memory_order_relaxed);
  });
  return static_cast<Status>(failure.load());
}

#ifdef SLIMOPS_X86
// N:M at a few rows: the ISA's streaming kernel, on tasks of output rows.
Status run_rows(const Call& c, const NmWeight& w, bool (*rows)(const Rows&, const NmWeight&)) {
  const int nthreads = threads_for(c.M, c.N, std::max<int64_t>(1, c.row_elements), c.nthreads);
  const RowSplit split = split_rows(c.N, nthreads, 1024);
  const int64_t n_block = split.block, tasks = split.tasks;
  std::atomic<bool> bad{false};
  parallel_for(tasks, nthreads, [&](int64_t task) {
    if (bad.load(std::memory_order_relaxed)) return;
    const int64_t n_begin = task * n_block;
    const Rows r{c.x, c.bias, c.y, c.M, c.K, c.x_row_stride, c.N, n_begin, std::min(c.N, n_begin + n_block)};
    if (!rows(r, w)) bad.store(true, std::memory_order_relaxed);
  });
  return bad.load() ? Status::kBadPosition : Status::kOk;
}

// N:M at 3 rows and more on AVX-512 when every run is aligned (2:4 and 4:8,
// K % 32 == 0): nm_chunks_avx512 on tasks of output rows, in passes of up to
// 16 activation rows, each streaming the weight once.
bool chunks_fit(const Call& c, const NmWeight& w) {
  return c.M >= 3 && c.K > 0 && c.K % 32 == 0 && active_cpu_isa() == CpuIsa::kAvx512Vnni &&
         (w.values.f32 != nullptr || w.values.i8 != nullptr) && nm_runs_aligned(w.n, w.m);
}

Status run_chunks(const Call& c, const NmWeight& w) {
  constexpr int64_t kPassRows = 16;
  const int nthreads = threads_for(c.M, c.N, std::max<int64_t>(1, c.row_elements), c.nthreads);
  const RowSplit split = split_rows(c.N, nthreads, 256);
  std::atomic<bool> bad{false}, oom{false};
  parallel_for(split.tasks, nthreads, [&](int64_t task) {
    if (bad.load(std::memory_order_relaxed) || oom.load(std::memory_order_relaxed)) return;
    float* scratch = thread_buffer<float, kScratchSparseOutput>(nm_chunks_scratch(split.block));
    if (scratch == nullptr) return oom.store(true, std::memory_order_relaxed);
    const int64_t n_begin = task * split.block, n_end = std::min(c.N, n_begin + split.block);
    for (int64_t m0 = 0; m0 < c.M; m0 += kPassRows) {
      const Rows r{c.x + m0 * c.x_row_stride, c.bias, c.y + m0 * c.N, std::min(kPassRows, c.M - m0), c.K,
                   c.x_row_stride, c.N, n_begin, n_end};
      if (!nm_chunks_avx512(r, w, scratch)) return bad.store(true, std::memory_order_relaxed);
    }
  });
  if (oom.load()) return Status::kOutOfMemory;
  return bad.load() ? Status::kBadPosition : Status::kOk;
}

// BSR at 32 rows and more with float32 values, bn % 8 == 0 and bk % 16 == 0
// on AVX-512: bsr_panels_avx512 on tasks of whole block rows, over 32-row xT
// tiles (laid out by the pool).
bool panels_fit(const Call& c, const BsrWeight& w) {
  return c.M >= 32 && active_cpu_isa() == CpuIsa::kAvx512Vnni && w.values.f32 != nullptr && w.bn % 8 == 0 &&
         w.bk % kCsrLanes == 0 && c.N % w.bn == 0;
}

Status run_panels(const Call& c, const BsrWeight& w) {
  constexpr int64_t T = 32;
  const int64_t tiles = (c.M + T - 1) / T, K = std::max<int64_t>(c.K, 1);
  float* xt = thread_buffer<float, kScratchSparseTiles>(tiles * T * K);
  if (xt == nullptr) return Status::kOutOfMemory;
  const int nthreads = threads_for(c.M, c.N, std::max<int64_t>(1, c.row_elements), c.nthreads);
  transpose_into_tiles(c, T, nthreads, xt);

  const RowSplit split = split_rows(c.N / w.bn, nthreads, 8);  // block rows a task
  std::atomic<bool> bad{false}, oom{false};
  parallel_for(split.tasks, nthreads, [&](int64_t task) {
    if (bad.load(std::memory_order_relaxed) || oom.load(std::memory_order_relaxed)) return;
    const int64_t n_begin = task * split.block * w.bn, n_end = std::min(c.N, n_begin + split.block * w.bn);
    const int64_t blocks = read_index(w.block_row_ptr, w.row_ptr_bytes, n_end / w.bn) -
                           read_index(w.block_row_ptr, w.row_ptr_bytes, n_begin / w.bn);
    int64_t* offsets = thread_buffer<int64_t, kScratchBsrOffsets>(std::max<int64_t>(blocks, 1));
    if (offsets == nullptr) return oom.store(true, std::memory_order_relaxed);
    const Tiles t{xt, c.bias, c.y, nullptr, c.M, c.K, c.N, n_begin, n_end};
    if (!bsr_panels_avx512(t, w, offsets)) bad.store(true, std::memory_order_relaxed);
  });
  if (oom.load()) return Status::kOutOfMemory;
  return bad.load() ? Status::kBadColumnIndex : Status::kOk;
}
#endif

template <typename Ptr>
bool row_ptr_valid(const Ptr* ptr, int64_t rows, int64_t entries) {
  if (ptr[0] != 0 || static_cast<int64_t>(ptr[rows]) != entries) return false;
  for (int64_t n = 0; n < rows; ++n) {
    if (ptr[n + 1] < ptr[n]) return false;
  }
  return true;
}

}  // namespace

RowSplit split_rows(int64_t N, int nthreads, int64_t max_block) {
  // About 32 tasks per thread, so the dynamic hand-out balances uneven rows.
  const int64_t want_tasks = 32 * int64_t{nthreads};
  const int64_t block = std::clamp<int64_t>((N + want_tasks - 1) / want_tasks, 8, max_block);
  return {block, (N + block - 1) / block};
}

Status check_sizes(int64_t M, int64_t K, int64_t N, int64_t stored, int64_t x_row_stride) {
  if (M < 0 || K < 0 || N < 0 || stored < 0) return Status::kNegativeSize;
  constexpr int64_t kMaxElements = int64_t{1} << 40;
  if (M > kMaxElements || N > kMaxElements || K > kMaxElements || stored > kMaxElements) return Status::kSizeTooLarge;
  // Column indices and positions are int32 inside the kernels.
  if (K > (int64_t{1} << 31) - 1) return Status::kSizeTooLarge;
  if (M != 0 && (x_row_stride > kMaxElements / M || K > kMaxElements / M)) return Status::kSizeTooLarge;
  if (N != 0 && M > kMaxElements / N) return Status::kSizeTooLarge;
  if (K != 0 && N > (int64_t{1} << 62) / K) return Status::kSizeTooLarge;  // so N * K never overflows
  if (M > 1 && x_row_stride < K) return Status::kBadStride;
  return Status::kOk;
}

Status check_row_ptr(const void* ptr, int ptr_bytes, int idx_bytes, int64_t rows, int64_t entries) {
  if ((ptr_bytes != 4 && ptr_bytes != 8) || (idx_bytes != 2 && idx_bytes != 4)) return Status::kBadIndexWidth;
  const bool valid = ptr_bytes == 4 ? row_ptr_valid(static_cast<const int32_t*>(ptr), rows, entries)
                                    : row_ptr_valid(static_cast<const int64_t*>(ptr), rows, entries);
  return valid ? Status::kOk : Status::kBadRowPtr;
}

Status make_values(const void* values, int value_type, const float* scale, Values* out) {
  if ((value_type == kValuesInt8) != (scale != nullptr)) return Status::kBadValues;
  *out = {nullptr, nullptr, nullptr, nullptr, scale};
  switch (value_type) {
    case kValuesFloat32:
      out->f32 = static_cast<const float*>(values);
      return Status::kOk;
    case kValuesInt8:
      out->i8 = static_cast<const int8_t*>(values);
      return Status::kOk;
    case kValuesFloat16:
      out->f16 = static_cast<const uint16_t*>(values);
      return Status::kOk;
    case kValuesBFloat16:
      out->bf16 = static_cast<const uint16_t*>(values);
      return Status::kOk;
    default:
      return Status::kBadValues;
  }
}

Status run(const Call& c, const CsrWeight& w) { return run_weight(c, w); }
Status run(const Call& c, const BsrWeight& w) {
#ifdef SLIMOPS_X86
  if (panels_fit(c, w)) return run_panels(c, w);
#endif
  return run_weight(c, w);
}
Status run(const Call& c, const NmWeight& w) {
#ifdef SLIMOPS_X86
  // The streaming kernels take float32 and int8 values; the others run the xT kernel.
  const bool int8_or_f32 = w.values.f32 != nullptr || w.values.i8 != nullptr;
  if (c.M <= 2 && active_cpu_isa() == CpuIsa::kAvx512Vnni && int8_or_f32) return run_rows(c, w, nm_rows_avx512);
  // On AVX2, 3-4 rows only with aligned runs (the others gather x): it
  // permutes x for each row, at 2 cycles a permute on the Zen 2, so from 8
  // rows the xT kernel is faster (2:4 at 4096^2: 3.4 ms against ~5.6 at M=4,
  // 12.8 against 11.2 at M=16).
  if (active_cpu_isa() == CpuIsa::kAvx2 && int8_or_f32 &&
      (c.M <= 2 || (c.M <= kNmRowsAvx2 && c.K % 32 == 0 && nm_runs_aligned(w.n, w.m)))) {
    return run_rows(c, w, nm_rows_avx2);
  }
  if (chunks_fit(c, w)) return run_chunks(c, w);
#endif
  return run_weight(c, w);
}

}  // namespace sparse_xt
}  // namespace slimops
