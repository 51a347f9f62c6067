// Entry points of bsr_linear and nm_linear: argument checks, then the xT
// driver for every row count.
#include "slimops/sparse_linear.h"

#include <algorithm>

#include "driver.h"

namespace slimops {

Status bsr_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const void* block_row_ptr,
                      int row_ptr_bytes, const void* block_col_idx, int col_idx_bytes, int64_t blocks,
                      const void* values, int value_type, const float* scale, int64_t N, int64_t bn, int64_t bk,
                      const float* bias, float* y, int nthreads) {
  Status s = sparse_xt::check_sizes(M, K, N, blocks, x_row_stride);
  if (s != Status::kOk) return s;
  if (bn < 1 || bk < 1 || N % bn != 0 || K % bk != 0) return Status::kBadShape;
  // More blocks than the matrix holds (N and K are bounded now, so no overflow).
  if (blocks > (N / bn) * (K / bk)) return Status::kBadRowPtr;
  if (block_row_ptr == nullptr || (blocks != 0 && (block_col_idx == nullptr || values == nullptr))) {
    return Status::kNullPointer;
  }
  s = sparse_xt::check_row_ptr(block_row_ptr, row_ptr_bytes, col_idx_bytes, N / bn, blocks);
  if (s != Status::kOk) return s;
  sparse_xt::Values v;
  s = sparse_xt::make_values(values, value_type, scale, &v);
  if (s != Status::kOk) return s;
  if (M == 0 || N == 0) return Status::kOk;
  if ((K != 0 && x == nullptr) || y == nullptr) return Status::kNullPointer;
  const sparse_xt::BsrWeight w{block_row_ptr, block_col_idx, v, row_ptr_bytes, col_idx_bytes, bn, bk,
                               static_cast<uint32_t>(K / bk)};
  const int64_t row_elements = blocks * bk / std::max<int64_t>(1, N / bn);
  return sparse_xt::run({x, M, K, x_row_stride, N, bias, y, nthreads, row_elements}, w);
}

Status nm_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const void* values,
                     int value_type, const float* scale, const uint8_t* indices, int64_t N, int n, int m,
                     const float* bias, float* y, int nthreads) {
  if ((m != 4 && m != 8) || n < 1 || n >= m || K % m != 0) return Status::kBadShape;
  const int64_t kept = K / m * n;
  Status s = sparse_xt::check_sizes(M, K, N, kept, x_row_stride);
  if (s != Status::kOk) return s;
  sparse_xt::Values v;
  s = sparse_xt::make_values(values, value_type, scale, &v);
  if (s != Status::kOk) return s;
  if (M == 0 || N == 0) return Status::kOk;
  if ((kept != 0 && (values == nullptr || indices == nullptr)) || (K != 0 && x == nullptr) || y == nullptr) {
    return Status::kNullPointer;
  }
  const int bits = m == 4 ? 2 : 4;
  sparse_xt::NmWeight w{v, indices, kept, (kept * bits + 7) / 8, n, m, {}, 16 / n, 16 % n};
  for (int p = 0; p < n; ++p) {
    for (int l = 0; l < 16; ++l) w.group_step[p][l] = (p + l) / n;
  }
  return sparse_xt::run({x, M, K, x_row_stride, N, bias, y, nthreads, kept}, w);
}

}  // namespace slimops
