// What the sparse entry points (csr_linear.cpp, sparse_linear.cpp) share: the
// size and row-pointer checks, and the driver of the xT kernel (kernel.h).
#pragma once

#include <cstdint>

#include "slimops/status.h"
#include "sources.h"

namespace slimops {
namespace sparse_xt {

struct Call {
  const float* x;  // [M, K], row stride x_row_stride
  int64_t M, K, x_row_stride, N;
  const float* bias;  // [N] or null
  float* y;           // [M, N]
  int nthreads;
  int64_t row_elements;  // mean stored elements a row, for the thread count
};

// Output rows in tasks of `block` rows (the last may be short): about 32 a
// thread, 8 to max_block rows each.
struct RowSplit {
  int64_t block, tasks;
};
RowSplit split_rows(int64_t N, int nthreads, int64_t max_block);

// Sizes must be non-negative and every product used for indexing must stay
// far from int64 overflow.
Status check_sizes(int64_t M, int64_t K, int64_t N, int64_t stored, int64_t x_row_stride);

// ptr[0] = 0, non-decreasing, ptr[rows] = entries (so every row's range lies
// inside the index and value arrays), and supported element widths.
Status check_row_ptr(const void* ptr, int ptr_bytes, int idx_bytes, int64_t rows, int64_t entries);

// Value type codes of the entry points.
enum ValueType : int { kValuesFloat32 = 0, kValuesInt8 = 1, kValuesFloat16 = 2, kValuesBFloat16 = 3 };

// The Values of a values array of that type: a scale with int8 values only;
// kBadValues otherwise.
Status make_values(const void* values, int value_type, const float* scale, Values* out);

// y for all M rows (M >= 1, N >= 1; checked arrays).
Status run(const Call& c, const CsrWeight& w);
Status run(const Call& c, const BsrWeight& w);
Status run(const Call& c, const NmWeight& w);

}  // namespace sparse_xt
}  // namespace slimops
