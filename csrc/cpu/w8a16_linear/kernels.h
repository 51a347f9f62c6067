// Per-ISA building blocks of w8a16_linear (float order in slimops/w8a16_linear.h);
// w8a16_linear.cpp tiles the work and picks the implementation for the active ISA.
#pragma once

#include <cstdint>

#include "../lanes64.h"
#include "slimops/w8a16_linear.h"

namespace slimops {
namespace w8a16_linear {

// A rectangle [m_begin, m_end) x [n_begin, n_end) of the output.
struct Tile {
  const float* x;         // [M, K], row stride x_row_stride
  const int8_t* w;        // [N, K]
  const float* w_scale;   // [N]
  const float* bias;      // [N] or null
  float* y;               // [M, N]
  int64_t K, N, x_row_stride;
  int64_t m_begin, m_end, n_begin, n_end;
};
using TileFn = void (*)(const Tile& t);

// Internal linkage on purpose: this header is compiled once per ISA with
// different target flags, and an inline function with external linkage would
// let the linker keep, say, the AVX-512 copy for the scalar path too.
namespace {

// std::min would be a template instantiated in every ISA's file: see above.
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Steps 2 and 3 of the float order: the fixed reduction tree over the 64
// partial sums p, then the scale and bias (plain float operations).
inline float finish_output(const float* p, const Tile& t, int64_t n) {
  const float v = reduce_lanes64(p) * t.w_scale[n];
  return t.bias != nullptr ? v + t.bias[n] : v;
}

// Runs Kernel::run<mr> for 1 <= mr <= MR rows.
template <int MR, typename Kernel>
inline void run_rows(int64_t mr, const Tile& t, int64_t m, int64_t n) {
  if constexpr (MR > 1) {
    if (mr < MR) return run_rows<MR - 1, Kernel>(mr, t, m, n);
  }
  Kernel::template run<MR>(t, m, n);
}

// Walks a tile weight row by weight row; each row is converted once per MR
// activation rows (all of them in one go when M <= MR: the decode case, where
// each weight row is streamed from memory exactly once). The next weight row
// is prefetched into L2 while this one is in use.
template <int MR, typename Kernel>
void walk_tile(const Tile& t) {
  for (int64_t n = t.n_begin; n < t.n_end; ++n) {
    if (n + 1 < t.n_end) {
      const int8_t* next = t.w + (n + 1) * t.K;
      for (int64_t k = 0; k < t.K; k += 64) __builtin_prefetch(next + k, 0, 2);
    }
    for (int64_t m = t.m_begin; m < t.m_end; m += MR) run_rows<MR, Kernel>(min64(MR, t.m_end - m), t, m, n);
  }
}

}  // namespace

void tile_scalar(const Tile& t);
void tile_avx2(const Tile& t);
void tile_avx512(const Tile& t);

}  // namespace w8a16_linear
}  // namespace slimops
