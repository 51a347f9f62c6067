// The three sparse weight formats as seen by the transposed-activation kernel
// (kernel.h): plain data, walked there. The arrays are laid out as in
// slimops.formats.sparse (layout version 1); every pointer, size and row
// pointer has been checked by the entry point, and the column data (CSR/BSR
// indices, N:M fields) is checked by the walk as it is read.
#pragma once

#include <cstdint>

#include "slimops/status.h"

namespace slimops {
namespace sparse_xt {

// Stored values: float32, float16, bfloat16 (the bits), or int8 with a
// float32 scale per output row (W[n, k] = v * scale[n]); exactly one of the
// arrays is set.
struct Values {
  const float* f32;
  const int8_t* i8;
  const uint16_t* f16;
  const uint16_t* bf16;
  const float* scale;  // [N], with i8
};

struct CsrWeight {
  const void* row_ptr;  // [N + 1], int32 or int64 (row_ptr_bytes)
  const void* col_idx;  // [nnz], int16 or int32 (col_idx_bytes)
  Values values;  // [nnz]
  int row_ptr_bytes, col_idx_bytes;
  uint32_t col_limit;  // K (indices compare as uint32, so negative ones fail)
};

struct BsrWeight {
  const void* block_row_ptr;  // [N / bn + 1], int32 or int64
  const void* block_col_idx;  // [blocks], int16 or int32
  Values values;              // [blocks][bn][bk]
  int row_ptr_bytes, col_idx_bytes;
  int64_t bn, bk;
  uint32_t block_col_limit;  // K / bk
};

// n of every m elements kept; m is 4 (2-bit fields) or 8 (4-bit fields).
struct NmWeight {
  Values values;           // [N][kept], kept = K / m * n
  const uint8_t* indices;  // [N][row_bytes] packed position fields, low bits first
  int64_t kept, row_bytes;
  int n, m;
  // group_step[p][l] = (p + l) / n: how many groups lane l of a run of 16 is
  // past the run's first group, when the run starts at place p of a group.
  int32_t group_step[8][16];
  int run_groups, run_places;  // 16 = run_groups * n + run_places
};

// The status of a walk that met a bad index or field.
inline Status bad_data_status(const CsrWeight&) { return Status::kBadColumnIndex; }
inline Status bad_data_status(const BsrWeight&) { return Status::kBadColumnIndex; }
inline Status bad_data_status(const NmWeight&) { return Status::kBadPosition; }

}  // namespace sparse_xt
}  // namespace slimops
