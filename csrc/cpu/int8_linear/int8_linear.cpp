// Entry points of int8_linear: argument checks, scratch buffers, ISA choice
// and the split of the output into tiles for the thread pool.
#include "slimops/int8_linear.h"

#include <algorithm>
#include <cmath>

#include "../scratch.h"
#include "kernels.h"
#include "slimops/cpu_isa.h"
#include "slimops/thread_pool.h"

namespace slimops {
namespace {

using int8_linear::GemmTile;
using int8_linear::GemmTileFn;
using int8_linear::QuantizeRowFn;

struct IsaKernels {
  QuantizeRowFn quantize_row;
  GemmTileFn gemm_tile;
};

IsaKernels kernels_for(CpuIsa isa) {
  switch (isa) {
#ifdef SLIMOPS_X86
    case CpuIsa::kAvx512Vnni:
      return {int8_linear::quantize_row_avx512, int8_linear::gemm_tile_avx512_vnni};
    case CpuIsa::kAvx2:
      return {int8_linear::quantize_row_avx2, int8_linear::gemm_tile_avx2};
#endif
    default:
      break;
  }
  return {int8_linear::quantize_row_scalar, int8_linear::gemm_tile_scalar};
}

// Sizes must be non-negative, K within the exact-int32 range, and every
// product used for indexing must stay far from int64 overflow.
Status check_sizes(int64_t M, int64_t K, int64_t N, int64_t x_row_stride) {
  if (M < 0 || K < 0 || N < 0) return Status::kNegativeSize;
  if (K > kInt8LinearMaxK) return Status::kSizeTooLarge;
  constexpr int64_t kMaxElements = int64_t{1} << 40;
  if (M > kMaxElements || N > kMaxElements) return Status::kSizeTooLarge;
  if (M != 0 && (x_row_stride > kMaxElements / M || K > kMaxElements / M)) return Status::kSizeTooLarge;
  if (N != 0 && (K > kMaxElements / N || M > kMaxElements / N)) return Status::kSizeTooLarge;
  if (M > 1 && x_row_stride < K) return Status::kBadStride;
  return Status::kOk;
}

// Rows per quantization task: enough work per task to pay for a hand-off.
int64_t rows_per_task(int64_t K) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(K, 1)); }

void quantize_rows(QuantizeRowFn quantize_row, const float* x, int64_t rows, int64_t cols, int64_t x_row_stride,
                   float static_scale, int8_t* q, float* scale, int32_t* qsum, int nthreads) {
  const int64_t per_task = rows_per_task(cols);
  const int64_t tasks = (rows + per_task - 1) / per_task;
  parallel_for(tasks, nthreads, [&](int64_t task) {
    const int64_t end = std::min(rows, (task + 1) * per_task);
    for (int64_t r = task * per_task; r < end; ++r) {
      quantize_row(x + r * x_row_stride, cols, static_scale, q + r * cols, scale + r, qsum + r);
    }
  });
}

}  // namespace

Status quantize_per_token_cpu(const float* x, int64_t rows, int64_t cols, int64_t x_row_stride, int8_t* q,
                              float* scale, int nthreads) {
  const Status s = check_sizes(rows, cols, 0, x_row_stride);
  if (s != Status::kOk) return s;
  if (rows == 0) return Status::kOk;
  if ((cols != 0 && (x == nullptr || q == nullptr)) || scale == nullptr) return Status::kNullPointer;
  auto qsum = scratch<int32_t>(rows);
  if (!qsum) return Status::kOutOfMemory;
  quantize_rows(kernels_for(active_cpu_isa()).quantize_row, x, rows, cols, x_row_stride, 0.0f, q, scale,
                qsum.get(), nthreads);
  return Status::kOk;
}

Status int8_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, float static_x_scale,
                       const int8_t* w, int64_t N, const float* w_scale, const float* bias, float* y, int nthreads) {
  const Status s = check_sizes(M, K, N, x_row_stride);
  if (s != Status::kOk) return s;
  // 0 asks for dynamic scales; anything else must be a usable scale.
  if (!(static_x_scale == 0.0f || (static_x_scale > 0.0f && std::isfinite(1.0f / static_x_scale) &&
                                    std::isfinite(static_x_scale)))) {
    return Status::kBadScale;
  }
  if (M == 0 || N == 0) return Status::kOk;
  if ((K != 0 && (x == nullptr || w == nullptr)) || w_scale == nullptr || y == nullptr) return Status::kNullPointer;

  auto q = scratch<int8_t>(M * K);
  auto x_scale = scratch<float>(M);
  auto qsum = scratch<int32_t>(M);
  if (!q || !x_scale || !qsum) return Status::kOutOfMemory;
  const IsaKernels isa = kernels_for(active_cpu_isa());
  nthreads = threads_for(M, N, K, nthreads);
  quantize_rows(isa.quantize_row, x, M, K, x_row_stride, static_x_scale, q.get(), x_scale.get(), qsum.get(),
                nthreads);

  // Tiles: all rows up to 128 at once (each weight row is then read from
  // memory once per 128 activation rows), and enough column blocks for about
  // 32 tasks per thread: the dynamic hand-out then still balances when a
  // helper thread starts late or shares its core (e.g. with a spinning OpenMP
  // worker right after a torch op).
  const int64_t m_block = std::min<int64_t>(M, 128);
  const int64_t m_tiles = (M + m_block - 1) / m_block;
  const int64_t want_n_tiles = std::max<int64_t>(1, 32 * int64_t{nthreads} / m_tiles);
  const int64_t n_block = std::clamp<int64_t>((N + want_n_tiles - 1) / want_n_tiles / 4 * 4, 4, 1024);
  const GemmTile base{q.get(), qsum.get(), x_scale.get(), w, w_scale, bias, y, K, N, 0, 0, 0, 0};
  parallel_for_tiles(M, N, m_block, n_block, nthreads, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    GemmTile t = base;
    t.m_begin = m0, t.m_end = m1, t.n_begin = n0, t.n_end = n1;
    isa.gemm_tile(t);
  });
  return Status::kOk;
}

}  // namespace slimops
