// Per-ISA building blocks of csr_linear (float order in slimops/csr_linear.h);
// csr_linear.cpp checks the arrays, splits the rows and picks the ISA.
#pragma once

#include <cstdint>

#include "../sparse_xt/lanes.h"
#include "slimops/csr_linear.h"

namespace slimops {
namespace csr_linear {

// Measured at K = N = 4096: the gather kernels stream the weight once and win
// at 1-2 activation rows; from 3 rows the xT kernel (sparse_xt/), which needs
// no gathers, is faster. So the gather kernels only ever take 1 or 2 rows.
constexpr int kCsrGatherMaxRows = 2;

// Output rows [n_begin, n_end) for all M (<= kCsrGatherMaxRows) activation rows.
struct Rows {
  const float* x;        // [M, K], row stride x_row_stride
  const void* row_ptr;   // [N + 1], already checked
  const void* col_idx;   // [nnz], checked as read
  const float* values;   // [nnz] float32, or null with int8 values:
  const int8_t* values_i8;  // [nnz] (scalar and AVX2 paths), W[n, k] = v * scale[n]
  const float* scale;       // [N] with values_i8, else null
  const float* bias;     // [N] or null
  float* y;              // [M, N]
  int64_t M, K, N, x_row_stride;
  int row_ptr_bytes, col_idx_bytes;
  // Indices compared as uint32 against K (< 2^31), so negative ones always fail.
  uint32_t index_limit;
  int64_t n_begin, n_end;
  int64_t nnz;  // the index and value arrays' length
};
// Returns false on a column index outside [0, K).
using RowsFn = bool (*)(const Rows& r);

// Internal linkage on purpose: this header is compiled once per ISA with
// different target flags (see w8a16_linear/kernels.h).
namespace {

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

inline int64_t row_start(const Rows& r, int64_t n) {
  return r.row_ptr_bytes == 4 ? static_cast<const int32_t*>(r.row_ptr)[n] : static_cast<const int64_t*>(r.row_ptr)[n];
}

// Steps 2 and 3 of the float order (int8 values: the sum times scale[n], one rounding, first).
inline float finish_output(float (&p)[kCsrLanes], const Rows& r, int64_t n) {
  return sparse_xt::sum_lanes(p, r.scale, r.bias, n);
}

// Runs Kernel::run<mr> for 1 <= mr <= MR activation rows; T: the stored values' type.
template <int MR, typename Kernel, typename T, typename Idx>
inline bool run_rows(int64_t mr, const Rows& r, const T* values, const Idx* col, int64_t begin, int64_t end,
                     int64_t m, int64_t n) {
  if constexpr (MR > 1) {
    if (mr < MR) return run_rows<MR - 1, Kernel>(mr, r, values, col, begin, end, m, n);
  }
  return Kernel::template run<MR>(r, values, col, begin, end, m, n);
}

// Walks the output rows; each row's indices and values are read once per MR
// activation rows (once in all for M <= MR, the decode case).
template <int MR, typename Kernel, typename T, typename Idx>
bool walk_rows(const Rows& r, const T* values) {
  const Idx* col = static_cast<const Idx*>(r.col_idx);
  for (int64_t n = r.n_begin; n < r.n_end; ++n) {
    const int64_t begin = row_start(r, n), end = row_start(r, n + 1);
    for (int64_t m = 0; m < r.M; m += MR) {
      if (!run_rows<MR, Kernel>(min64(MR, r.M - m), r, values, col, begin, end, m, n)) return false;
    }
  }
  return true;
}

template <int MR, typename Kernel, typename T>
bool walk_rows_any_index(const Rows& r, const T* values) {
  return r.col_idx_bytes == 2 ? walk_rows<MR, Kernel, T, int16_t>(r, values)
                              : walk_rows<MR, Kernel, T, int32_t>(r, values);
}

// Float32 or int8 values (paths that take both).
template <int MR, typename Kernel>
bool walk_rows_any_values(const Rows& r) {
  return r.values != nullptr ? walk_rows_any_index<MR, Kernel>(r, r.values)
                             : walk_rows_any_index<MR, Kernel>(r, r.values_i8);
}

}  // namespace

bool rows_scalar(const Rows& r);
bool rows_avx2(const Rows& r);
bool rows_avx512(const Rows& r);  // float32 values only

}  // namespace csr_linear
}  // namespace slimops
