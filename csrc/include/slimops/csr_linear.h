// CSR sparse linear on the CPU: y = x @ W^T + bias, with W [N, K] a float32
// CSR matrix (row_ptr [N + 1], col_idx [nnz], values [nnz]) and float32
// activations (the Python layer converts fp16/bf16 to float32 first).
//
// Float order, the same on every ISA path and thread count, so the results are
// bit-identical across them. For each output (m, n), with the row's nonzeros
// j = 0, 1, ..., row_ptr[n + 1] - row_ptr[n] - 1 (offsets within the row):
//   1. kCsrLanes = 16 partial sums, all starting at +0. Nonzero j goes to lane
//      j % 16, in increasing j:
//        p[j % 16] = fma(x[m, col_idx[j]], values[j], p[j % 16])   (fused)
//      Lanes past the row's last nonzero are left as they are.
//   2. A fixed halving tree: r[l] = p[l] + p[l + 8] for l < 8, then
//      r[l] + r[l + 4], r[l] + r[l + 2], r[l] + r[l + 1] to one sum.
//   3. y = sum + bias[n] when there is a bias (one rounding).
// A NaN or Inf in x reaches y only through a column the row stores.
//
// The arrays come from users, so nothing is trusted: row_ptr is checked up
// front (row_ptr[0] = 0, non-decreasing, row_ptr[N] = nnz) and every column
// index against [0, K) as it is read; a bad one stops the call with an error.
#pragma once

#include <cstdint>

#include "slimops/status.h"

namespace slimops {

// Partial sums per output in the float order above.
constexpr int kCsrLanes = 16;

// Index element widths in bytes: col_idx int16 (2) or int32 (4), row_ptr
// int32 (4) or int64 (8).
// x: [M, K] with row stride x_row_stride; values: [nnz]; bias: [N] or null;
// y: [M, N] contiguous.
// values: value_type 0 float32, 2 float16, 3 bfloat16 (scale null; the
// half types widened exactly), or 1 int8 with a float32 scale [N],
// W[n, k] = v * scale[n]: then the sum of step 2 is multiplied by scale[n]
// (one rounding) before the bias.
Status csr_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const void* row_ptr,
                      int row_ptr_bytes, const void* col_idx, int col_idx_bytes, int64_t nnz, const void* values,
                      int value_type, const float* scale, int64_t N, const float* bias, float* y, int nthreads);

}  // namespace slimops
