// Entry point of w8a16_linear: argument checks, ISA choice and the split of the
// output into tiles for the thread pool.
#include "slimops/w8a16_linear.h"

#include <algorithm>

#include "kernels.h"
#include "slimops/cpu_isa.h"
#include "slimops/thread_pool.h"

namespace slimops {
namespace {

using w8a16_linear::Tile;
using w8a16_linear::TileFn;

TileFn tile_for(CpuIsa isa) {
  switch (isa) {
#ifdef SLIMOPS_X86
    case CpuIsa::kAvx512Vnni:
      return w8a16_linear::tile_avx512;
    case CpuIsa::kAvx2:
      return w8a16_linear::tile_avx2;
#endif
    default:
      break;
  }
  return w8a16_linear::tile_scalar;
}

// Sizes must be non-negative and every product used for indexing must stay
// far from int64 overflow.
Status check_sizes(int64_t M, int64_t K, int64_t N, int64_t x_row_stride) {
  if (M < 0 || K < 0 || N < 0) return Status::kNegativeSize;
  constexpr int64_t kMaxElements = int64_t{1} << 40;
  if (M > kMaxElements || N > kMaxElements || K > kMaxElements) return Status::kSizeTooLarge;
  if (M != 0 && (x_row_stride > kMaxElements / M || K > kMaxElements / M)) return Status::kSizeTooLarge;
  if (N != 0 && (K > kMaxElements / N || M > kMaxElements / N)) return Status::kSizeTooLarge;
  if (M > 1 && x_row_stride < K) return Status::kBadStride;
  return Status::kOk;
}

}  // namespace

Status w8a16_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const int8_t* w, int64_t N,
                        const float* w_scale, const float* bias, float* y, int nthreads) {
  const Status s = check_sizes(M, K, N, x_row_stride);
  if (s != Status::kOk) return s;
  if (M == 0 || N == 0) return Status::kOk;
  if ((K != 0 && (x == nullptr || w == nullptr)) || w_scale == nullptr || y == nullptr) return Status::kNullPointer;
  const TileFn tile = tile_for(active_cpu_isa());
  nthreads = threads_for(M, N, K, nthreads);

  // Tiles: up to 32 activation rows (128 KiB of float32 x at K = 1024, within
  // L2 up to K = 8192) share each pass over a weight row, and enough column
  // blocks for about 32 tasks per thread, so the dynamic hand-out balances.
  const int64_t m_block = std::min<int64_t>(M, 32);
  const int64_t m_tiles = (M + m_block - 1) / m_block;
  const int64_t want_n_tiles = std::max<int64_t>(1, 32 * int64_t{nthreads} / m_tiles);
  const int64_t n_block = std::clamp<int64_t>((N + want_n_tiles - 1) / want_n_tiles, 8, 1024);
  const Tile base{x, w, w_scale, bias, y, K, N, x_row_stride, 0, 0, 0, 0};
  parallel_for_tiles(M, N, m_block, n_block, nthreads, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    Tile t = base;
    t.m_begin = m0, t.m_end = m1, t.n_begin = n0, t.n_end = n1;
    tile(t);
  });
  return Status::kOk;
}

}  // namespace slimops
