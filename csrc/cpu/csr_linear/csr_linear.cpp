// Entry point of csr_linear: argument and row_ptr checks; up to
// kCsrGatherMaxRows activation rows the gather kernels here (ISA choice and
// the split of the output rows into tasks), from there the xT kernel.
#include "slimops/csr_linear.h"

#include <algorithm>
#include <atomic>

#include "../sparse_xt/driver.h"
#include "kernels.h"
#include "slimops/cpu_isa.h"
#include "slimops/thread_pool.h"

namespace slimops {
namespace {

using csr_linear::Rows;
using csr_linear::RowsFn;

using csr_linear::kCsrGatherMaxRows;

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

}  // namespace

Status csr_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const void* row_ptr,
                      int row_ptr_bytes, const void* col_idx, int col_idx_bytes, int64_t nnz, const void* values,
                      int value_type, const float* scale, int64_t N, const float* bias, float* y, int nthreads) {
  Status s = sparse_xt::check_sizes(M, K, N, nnz, x_row_stride);
  if (s != Status::kOk) return s;
  if (row_ptr == nullptr || (nnz != 0 && (col_idx == nullptr || values == nullptr))) return Status::kNullPointer;
  s = sparse_xt::check_row_ptr(row_ptr, row_ptr_bytes, col_idx_bytes, N, nnz);
  if (s != Status::kOk) return s;
  // With K == 0 no column index is valid; the kernels' range checks assume K >= 1.
  if (K == 0 && nnz != 0) return Status::kBadColumnIndex;
  sparse_xt::Values v;
  s = sparse_xt::make_values(values, value_type, scale, &v);
  if (s != Status::kOk) return s;
  if (M == 0 || N == 0) return Status::kOk;
  if ((K != 0 && x == nullptr) || y == nullptr) return Status::kNullPointer;
  const int64_t mean_row_nnz = std::max<int64_t>(1, nnz / N);
  // The gather kernels take float32 values, and int8 ones on the scalar and
  // AVX2 paths (on the Zen 2, int8 CSR at density 0.5 and M=1: 4.7 ms in the
  // xT kernel, which wastes 7 of its 8 tile rows there, 1.8 ms here, as fast
  // as float32 values); others run the xT kernel. (AVX-512's int8 break-evens
  // were measured on the xT kernel, and its gather kernel is float32 only.)
  const CpuIsa isa = active_cpu_isa();
  const bool gather_values = v.f32 != nullptr || (v.i8 != nullptr && isa != CpuIsa::kAvx512Vnni);
  if (M > kCsrGatherMaxRows || !gather_values) {
    const sparse_xt::CsrWeight w{row_ptr, col_idx, v, row_ptr_bytes, col_idx_bytes, static_cast<uint32_t>(K)};
    return sparse_xt::run({x, M, K, x_row_stride, N, bias, y, nthreads, mean_row_nnz}, w);
  }
  const RowsFn rows = rows_for(isa);
  nthreads = threads_for(M, N, mean_row_nnz, nthreads);

  const sparse_xt::RowSplit split = sparse_xt::split_rows(N, nthreads, 1024);
  const int64_t n_block = split.block, tasks = split.tasks;
  const Rows base{x, row_ptr, col_idx, v.f32, v.i8, v.scale, bias, y, M, K, N, x_row_stride, row_ptr_bytes,
                  col_idx_bytes, static_cast<uint32_t>(K), 0, 0, nnz};
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
