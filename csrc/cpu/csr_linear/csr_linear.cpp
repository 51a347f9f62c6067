// Entry point of csr_linear: argument and row_ptr checks, ISA choice and the
// split of the output rows into tasks for the thread pool.
#include "slimops/csr_linear.h"

#include <algorithm>
#include <atomic>

#include "kernels.h"
#include "slimops/cpu_isa.h"
#include "slimops/thread_pool.h"

namespace slimops {
namespace {

using csr_linear::Rows;
using csr_linear::RowsFn;

RowsFn rows_for(CpuIsa isa) {
  switch (isa) {
#ifdef SLIMOPS_X86
    case CpuIsa::kAvx512Vnni:
      return csr_linear::rows_avx512;
    case CpuIsa::kAvx2:
      return csr_linear::rows_avx2;
#endif
    default:
      break;
  }
  return csr_linear::rows_scalar;
}

// Sizes must be non-negative and every product used for indexing must stay
// far from int64 overflow.
Status check_sizes(int64_t M, int64_t K, int64_t N, int64_t nnz, int64_t x_row_stride) {
  if (M < 0 || K < 0 || N < 0 || nnz < 0) return Status::kNegativeSize;
  constexpr int64_t kMaxElements = int64_t{1} << 40;
  if (M > kMaxElements || N > kMaxElements || K > kMaxElements || nnz > kMaxElements) return Status::kSizeTooLarge;
  if (M != 0 && (x_row_stride > kMaxElements / M || K > kMaxElements / M)) return Status::kSizeTooLarge;
  if (N != 0 && M > kMaxElements / N) return Status::kSizeTooLarge;
  if (M > 1 && x_row_stride < K) return Status::kBadStride;
  return Status::kOk;
}

// row_ptr[0] = 0, non-decreasing, row_ptr[N] = nnz: then every row's range
// lies inside the nnz entries of col_idx and values.
template <typename Ptr>
bool row_ptr_valid(const Ptr* row_ptr, int64_t N, int64_t nnz) {
  if (row_ptr[0] != 0 || static_cast<int64_t>(row_ptr[N]) != nnz) return false;
  for (int64_t n = 0; n < N; ++n) {
    if (row_ptr[n + 1] < row_ptr[n]) return false;
  }
  return true;
}

Status check_arrays(const void* row_ptr, int row_ptr_bytes, int col_idx_bytes, int64_t N, int64_t nnz) {
  if ((row_ptr_bytes != 4 && row_ptr_bytes != 8) || (col_idx_bytes != 2 && col_idx_bytes != 4)) {
    return Status::kBadIndexWidth;
  }
  const bool valid = row_ptr_bytes == 4 ? row_ptr_valid(static_cast<const int32_t*>(row_ptr), N, nnz)
                                        : row_ptr_valid(static_cast<const int64_t*>(row_ptr), N, nnz);
  return valid ? Status::kOk : Status::kBadRowPtr;
}

}  // namespace

Status csr_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const void* row_ptr,
                      int row_ptr_bytes, const void* col_idx, int col_idx_bytes, int64_t nnz, const float* values,
                      int64_t N, const float* bias, float* y, int nthreads) {
  Status s = check_sizes(M, K, N, nnz, x_row_stride);
  if (s != Status::kOk) return s;
  if (row_ptr == nullptr || (nnz != 0 && (col_idx == nullptr || values == nullptr))) return Status::kNullPointer;
  s = check_arrays(row_ptr, row_ptr_bytes, col_idx_bytes, N, nnz);
  if (s != Status::kOk) return s;
  if (M == 0 || N == 0) return Status::kOk;
  if ((K != 0 && x == nullptr) || y == nullptr) return Status::kNullPointer;
  const RowsFn rows = rows_for(active_cpu_isa());
  const int64_t mean_row_nnz = std::max<int64_t>(1, nnz / N);
  nthreads = threads_for(M, N, mean_row_nnz, nthreads);

  // About 32 tasks per thread, so the dynamic hand-out balances uneven rows.
  const int64_t want_tasks = 32 * int64_t{nthreads};
  const int64_t n_block = std::clamp<int64_t>((N + want_tasks - 1) / want_tasks, 8, 1024);
  const int64_t tasks = (N + n_block - 1) / n_block;
  const Rows base{x, row_ptr, col_idx, values, bias, y, M, K, N, x_row_stride, row_ptr_bytes, col_idx_bytes,
                  static_cast<uint32_t>(std::min<int64_t>(K, int64_t{1} << 31)), 0, 0};
  std::atomic<bool> bad_index{false};
  parallel_for(tasks, nthreads, [&](int64_t task) {
    if (bad_index.load(std::memory_order_relaxed)) return;
    Rows r = base;
    r.n_begin = task * n_block;
    r.n_end = std::min(N, r.n_begin + n_block);
    if (!rows(r)) bad_index.store(true, std::memory_order_relaxed);
  });
  return bad_index.load() ? Status::kBadColumnIndex : Status::kOk;
}

}  // namespace slimops
