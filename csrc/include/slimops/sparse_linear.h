// BSR and N:M sparse linear on the CPU: y = x @ W^T + bias with W [N, K] a
// float32 BSR or N:M matrix in the layout of slimops.formats.sparse (version
// 1), and float32 activations. (CSR: slimops/csr_linear.h.) Values as there:
// value_type 0 float32, 2 float16, 3 bfloat16, or 1 int8 with a float32
// scale [N] (W[n, k] = v * scale[n]).
//
// Float order: that of slimops/csr_linear.h, over each row's stored elements
// in row order, so every ISA path and thread count gives the same bits. The
// stored elements of row n are, for BSR, row n % bn of each block of block
// row n / bn, blocks in order; for N:M, its K / m * n kept values in order
// (explicit zeros included). With int8 values the sum (of the exactly widened
// values) is multiplied by scale[n], one rounding, before the bias.
//
// Nothing is trusted: block_row_ptr is checked up front, and every block
// column index and N:M position field as it is read; a bad one stops the
// call with an error.
#pragma once

#include <cstdint>

#include "slimops/status.h"

namespace slimops {

// block_row_ptr: [N / bn + 1], int32 or int64 (row_ptr_bytes 4 or 8);
// block_col_idx: [blocks], int16 or int32 (col_idx_bytes 2 or 4);
// values: [blocks][bn][bk]. bn must divide N and bk divide K.
Status bsr_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const void* block_row_ptr,
                      int row_ptr_bytes, const void* block_col_idx, int col_idx_bytes, int64_t blocks,
                      const void* values, int value_type, const float* scale, int64_t N, int64_t bn, int64_t bk,
                      const float* bias, float* y, int nthreads);

// values: [N][K / m * n]; indices: [N][row_bytes] with row_bytes =
// ceil(K / m * n * b / 8), b = 2 bits for m = 4 and 4 for m = 8.
// m must be 4 or 8 and divide K; 1 <= n < m.
Status nm_linear_cpu(const float* x, int64_t M, int64_t K, int64_t x_row_stride, const void* values,
                     int value_type, const float* scale, const uint8_t* indices, int64_t N, int n, int m,
                     const float* bias, float* y, int nthreads);

}  // namespace slimops
