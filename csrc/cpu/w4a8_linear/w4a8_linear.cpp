// Entry point of w4a8_linear: argument checks, per-token quantization into
// the kernels' layouts, ISA choice and the split of the output into tiles.
#include "slimops/w4a8_linear.h"

#include <algorithm>
#include <atomic>

#include "../int8_linear/kernels.h"
#include "../int4_activation_layout.h"
#include "../scratch.h"
#include "kernels.h"
#include "slimops/cpu_isa.h"
#include "slimops/thread_pool.h"

namespace slimops {
namespace {

using w4a8_linear::kBlock;
using w4a8_linear::kSubgroup;
using w4a8_linear::Tile;
using w4a8_linear::TileFn;

struct IsaKernels {
  int8_linear::QuantizeRowFn quantize_row;
  TileFn tile;
  int64_t tile_rows;  // weight rows per SIMD tile: column blocks are multiples of it
};

IsaKernels kernels_for(CpuIsa isa) {
  switch (isa) {
#ifdef SLIMOPS_X86
    case CpuIsa::kAvx512Vnni:
      return {int8_linear::quantize_row_avx512, w4a8_linear::tile_avx512_vnni, 16};
    case CpuIsa::kAvx2:
      return {int8_linear::quantize_row_avx2, w4a8_linear::tile_avx2, 8};
#endif
    default:
      break;
  }
  return {int8_linear::quantize_row_scalar, w4a8_linear::tile_scalar, 1};
}

Status check_sizes(int64_t M, int64_t K, int64_t N, int64_t x_row_stride, int64_t group_size) {
  if (M < 0 || K < 0 || N < 0) return Status::kNegativeSize;
  if (K > kW4A8LinearMaxK) return Status::kSizeTooLarge;
  if (group_size != -1 && (group_size <= 0 || K % group_size != 0)) return Status::kSizeTooLarge;
  constexpr int64_t kMaxElements = int64_t{1} << 40;
  if (M > kMaxElements || N > kMaxElements) return Status::kSizeTooLarge;
  // Kb (K rounded up to a block) bounds every per-row length: K, ceil(K/2), G.
  const int64_t Kb = K + kBlock;
  if (M != 0 && (x_row_stride > kMaxElements / M || Kb > kMaxElements / M)) return Status::kSizeTooLarge;
  if (N != 0 && (Kb > kMaxElements / N || M > kMaxElements / N)) return Status::kSizeTooLarge;
  if (M > 1 && x_row_stride < K) return Status::kBadStride;
  return Status::kOk;
}

}  // namespace

Status w4a8_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const uint8_t* w, int64_t N,
                       const float* w_scale, const int32_t* w_zero, int64_t group_size, const float* bias, float* y,
                       int nthreads) {
  const Status s = check_sizes(M, K, N, x_row_stride, group_size);
  if (s != Status::kOk) return s;
  if (M == 0 || N == 0) return Status::kOk;
  const int64_t G = group_size == -1 ? 1 : K / group_size;
  const int64_t group = group_size == -1 ? K : group_size;
  if ((K != 0 && (x == nullptr || w == nullptr)) || (G != 0 && w_scale == nullptr) || y == nullptr) {
    return Status::kNullPointer;
  }
  const int64_t Kb = (K + kBlock - 1) / kBlock * kBlock;
  const int64_t Kh = (K + 1) / 2;

  IsaKernels isa = kernels_for(active_cpu_isa());
  // The SIMD paths add up 32-K subgroups; other group sizes take the scalar tile.
  const bool simd_groups = K > 0 && (G == 1 || group % kSubgroup == 0);
  const bool simd = isa.tile != w4a8_linear::tile_scalar && simd_groups;
  auto q = scratch<int8_t>(M * K);
  auto qb = scratch<int8_t>(simd ? M * Kb : 0);
  auto qgsum = scratch<int32_t>(M * G);
  auto x_scale = scratch<float>(M);
  if (!q || !qb || !qgsum || !x_scale) return Status::kOutOfMemory;

  nthreads = threads_for(M, N, K, nthreads);

  const int64_t rows_per_task = std::max<int64_t>(1, 32768 / std::max<int64_t>(K, 1));
  parallel_for((M + rows_per_task - 1) / rows_per_task, nthreads, [&](int64_t task) {
    for (int64_t m = task * rows_per_task; m < std::min(M, (task + 1) * rows_per_task); ++m) {
      int32_t row_sum;
      int8_t* qm = q.get() + m * K;
      isa.quantize_row(x + m * x_row_stride, K, 0.0f, qm, x_scale.get() + m, &row_sum);
      for (int64_t j = 0; j < G; ++j) {
        int32_t sum = 0;
        for (int64_t k = j * group; k < (j + 1) * group; ++k) sum += qm[k];
        qgsum[m * G + j] = sum;
      }
      if (simd) int4_activation_row(K, Kb, M, qb.get() + m * kBlock, [&](int64_t k) { return qm[k]; });
    }
  });

  // Tiles: all rows up to 64 at once, and column blocks (multiples of the
  // SIMD tile) for about 16 tasks per thread so the dynamic hand-out balances;
  // 4 at M = 1, where a task's first weight rows are not prefetched.
  const int64_t step = simd ? isa.tile_rows : 1;
  const int64_t m_block = std::min<int64_t>(M, 64);
  const int64_t m_tiles = (M + m_block - 1) / m_block;
  const int64_t tasks_per_thread = M == 1 ? 4 : 16;
  const int64_t want_n_tiles = std::max<int64_t>(1, tasks_per_thread * nthreads / m_tiles);
  const int64_t n_block = std::clamp<int64_t>((N + want_n_tiles - 1) / want_n_tiles / step * step, step, 4096);
  const TileFn tile = simd ? isa.tile : w4a8_linear::tile_scalar;
  const Tile base{q.get(), qb.get(), qgsum.get(), x_scale.get(), w, w_scale, w_zero, bias, y,
                  M, K, Kb, Kh, N, G, group, 0, 0, 0, 0};
  std::atomic<bool> ok{true};
  parallel_for_tiles(M, N, m_block, n_block, nthreads, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    Tile t = base;
    t.m_begin = m0, t.m_end = m1, t.n_begin = n0, t.n_end = n1;
    if (!tile(t)) ok.store(false, std::memory_order_relaxed);
  });
  return ok.load() ? Status::kOk : Status::kBadZeroPoint;
}

}  // namespace slimops
