// Entry points of w4a16_linear: argument checks, the bf16 activation layout,
// ISA choice and the split of the work for the thread pool.
#include "slimops/w4a16_linear.h"

#include <algorithm>
#include <atomic>

#include "../scratch.h"
#include "kernels.h"
#include "slimops/cpu_isa.h"
#include "slimops/thread_pool.h"

namespace slimops {
namespace {

using w4a16_linear::DequantFn;
using w4a16_linear::kBlock;
using w4a16_linear::kChunk;
using w4a16_linear::Rows;
using w4a16_linear::Tile;
using w4a16_linear::TileFn;
using w4a16_linear::Weight;

struct IsaKernels {
  TileFn tile;
  DequantFn dequant;
  int64_t tile_rows;  // activation rows one pass over a weight row takes
};

IsaKernels kernels_for(CpuIsa isa) {
  switch (isa) {
#ifdef SLIMOPS_X86
    case CpuIsa::kAvx512Vnni:
      return {w4a16_linear::tile_avx512, w4a16_linear::dequant_avx512, 4};
    case CpuIsa::kAvx2:
      return {w4a16_linear::tile_avx2, w4a16_linear::dequant_avx2, 1};
#endif
    default:
      break;
  }
  return {w4a16_linear::tile_scalar, w4a16_linear::dequant_scalar, 4};
}

constexpr int64_t kMaxElements = int64_t{1} << 40;

// Sizes of the weight: non-negative, a group size that divides K, and every
// product used for indexing far from int64 overflow. Fills *wt's sizes.
Status check_weight(int64_t N, int64_t K, int64_t group_size, Weight* wt) {
  if (N < 0 || K < 0) return Status::kNegativeSize;
  if (N > kMaxElements || K > kMaxElements || (N != 0 && K + kBlock > kMaxElements / N)) return Status::kSizeTooLarge;
  if (group_size != -1 && (group_size <= 0 || K % group_size != 0)) return Status::kSizeTooLarge;
  wt->K = K;
  wt->Kh = (K + 1) / 2;
  wt->G = group_size == -1 ? 1 : K / group_size;
  wt->group = group_size == -1 ? std::max<int64_t>(K, 1) : group_size;
  return Status::kOk;
}

// The SIMD paths need each 32-K chunk inside one group.
bool simd_groups(const Weight& wt) { return wt.G == 1 || wt.group % kChunk == 0; }

}  // namespace

Status w4a16_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const uint8_t* w, int64_t N,
                        const float* w_scale, const int32_t* w_zero, int64_t group_size, const float* bias, float* y,
                        int nthreads) {
  Weight wt{w, w_scale, w_zero, 0, 0, 0, 0};
  Status s = check_weight(N, K, group_size, &wt);
  if (s != Status::kOk) return s;
  if (M < 0) return Status::kNegativeSize;
  const int64_t Kb = (K + kBlock - 1) / kBlock * kBlock;
  if (M > kMaxElements || (M != 0 && (x_row_stride > kMaxElements / M || Kb > kMaxElements / M)) ||
      (N != 0 && M > kMaxElements / N)) {
    return Status::kSizeTooLarge;
  }
  if (M > 1 && x_row_stride < K) return Status::kBadStride;
  if (M == 0 || N == 0) return Status::kOk;
  if ((K != 0 && (x == nullptr || w == nullptr || w_scale == nullptr)) || y == nullptr) return Status::kNullPointer;

  IsaKernels isa = kernels_for(active_cpu_isa());
  if (!simd_groups(wt)) isa = kernels_for(CpuIsa::kScalar);
  auto xb = scratch<float>(M * Kb);
  if (!xb) return Status::kOutOfMemory;
  nthreads = threads_for(M, N, K, nthreads);

  const int64_t rows_per_task = std::max<int64_t>(1, 16384 / std::max<int64_t>(K, 1));
  parallel_for((M + rows_per_task - 1) / rows_per_task, nthreads, [&](int64_t task) {
    for (int64_t m = task * rows_per_task; m < std::min(M, (task + 1) * rows_per_task); ++m) {
      const float* xm = x + m * x_row_stride;
      int4_activation_row(K, Kb, M, xb.get() + m * kBlock, [&](int64_t k) { return round_to_bf16(xm[k]); });
    }
  });

  // Tiles: all rows up to 64 at once, and about 16 column blocks per thread so
  // the dynamic hand-out balances (4 at M = 1, where a task's first weight
  // rows are not prefetched).
  const int64_t m_block = std::min<int64_t>(M, 64);
  const int64_t m_tiles = (M + m_block - 1) / m_block;
  const int64_t tasks_per_thread = M == 1 ? 4 : 16;
  const int64_t want_n_tiles = std::max<int64_t>(1, tasks_per_thread * nthreads / m_tiles);
  const int64_t n_block = std::clamp<int64_t>((N + want_n_tiles - 1) / want_n_tiles, 1, 4096);
  const Tile base{wt, xb.get(), bias, y, M, Kb, N, 0, 0, 0, 0};
  std::atomic<bool> ok{true};
  parallel_for_tiles(M, N, m_block, n_block, nthreads, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    Tile t = base;
    t.m_begin = m0, t.m_end = m1, t.n_begin = n0, t.n_end = n1;
    if (!isa.tile(t)) ok.store(false, std::memory_order_relaxed);
  });
  return ok.load() ? Status::kOk : Status::kBadZeroPoint;
}

Status w4a16_dequantize_bf16_cpu(const uint8_t* w, int64_t N, int64_t K, const float* w_scale, const int32_t* w_zero,
                                 int64_t group_size, uint16_t* out, int nthreads) {
  Weight wt{w, w_scale, w_zero, 0, 0, 0, 0};
  const Status s = check_weight(N, K, group_size, &wt);
  if (s != Status::kOk) return s;
  if (N == 0 || K == 0) return Status::kOk;
  if (w == nullptr || w_scale == nullptr || out == nullptr) return Status::kNullPointer;
  IsaKernels isa = kernels_for(simd_groups(wt) ? active_cpu_isa() : CpuIsa::kScalar);
  nthreads = threads_for(1, N, K, nthreads);
  const int64_t rows_per_task = std::max<int64_t>(1, 65536 / K);
  std::atomic<bool> ok{true};
  parallel_for((N + rows_per_task - 1) / rows_per_task, nthreads, [&](int64_t task) {
    const Rows rows{wt, out, task * rows_per_task, std::min(N, (task + 1) * rows_per_task)};
    if (!isa.dequant(rows)) ok.store(false, std::memory_order_relaxed);
  });
  return ok.load() ? Status::kOk : Status::kBadZeroPoint;
}

}  // namespace slimops
