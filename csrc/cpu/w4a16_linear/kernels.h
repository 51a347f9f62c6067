// Per-ISA building blocks of w4a16_linear (float order in slimops/w4a16_linear.h);
// w4a16_linear.cpp lays out the activations and splits the work into tiles.
#pragma once

#include <cstdint>

#include "../int4_activation_layout.h"
#include "../lanes64.h"
#include "slimops/bf16.h"

namespace slimops {
namespace w4a16_linear {

constexpr int64_t kBlock = kInt4Block;  // K values per block of the activation layout
constexpr int64_t kChunk = 32;          // K values per 16 packed bytes; the SIMD paths need one group per chunk

// The quantized weight and its group parameters.
struct Weight {
  const uint8_t* w;        // [N, Kh] packed, Kh = ceil(K / 2)
  const float* w_scale;    // [N, G]
  const int32_t* w_zero;   // [N, G], or null: every zero point is 8
  int64_t K, Kh, G, group;  // group = K when G = 1
};

// A rectangle [m_begin, m_end) x [n_begin, n_end) of the output.
struct Tile {
  Weight wt;
  const float* xb;  // [Kb / kBlock, M, kBlock] bf16-rounded activations in the 4-bit layout
  const float* bias;  // [N] or null
  float* y;           // [M, N]
  int64_t M, Kb, N;
  int64_t m_begin, m_end, n_begin, n_end;
};
// Returns false when a zero point it read is outside 0..15 (the outputs are
// then meaningless and the call fails).
using TileFn = bool (*)(const Tile& t);

// Weight rows [n_begin, n_end) dequantized to bf16 bits into out [N, K].
struct Rows {
  Weight wt;
  uint16_t* out;
  int64_t n_begin, n_end;
};
using DequantFn = bool (*)(const Rows& r);

// Helpers with internal linkage: this header is compiled once per ISA with
// different target flags (see w8a16_linear/kernels.h).
namespace {

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Zero point of row n, group g (8 when symmetric); false when outside 0..15.
inline bool zero_point(const Weight& wt, int64_t n, int64_t g, int32_t* z) {
  *z = wt.w_zero == nullptr ? 8 : wt.w_zero[n * wt.G + g];
  return *z >= 0 && *z <= 15;
}

// The weight value of nibble u (slimops/w4a16_linear.h).
inline float weight_value(int32_t u, int32_t z, float s) { return round_to_bf16(static_cast<float>(u - z) * s); }

// Nibble of K index k of row n: 0 past the packed row (the padding of a chunk).
inline int32_t nibble(const Weight& wt, int64_t n, int64_t k) {
  const int64_t byte = k / 2;
  return byte < wt.Kh ? (wt.w[n * wt.Kh + byte] >> (4 * (k % 2))) & 0xF : 0;
}

// Lane of position p of a layout block (step 1 of the float order).
inline int lane_of(int p) { return 32 * (p >= 64) + 16 * ((p / 16) % 2) + p % 16; }

// Weights [k_begin, k_end) of row n as bf16 bits into out_row (the row of K values).
inline bool dequant_range(const Weight& wt, int64_t n, int64_t k_begin, int64_t k_end, uint16_t* out_row) {
  for (int64_t k = k_begin; k < k_end; ++k) {
    const int64_t g = k / wt.group;
    int32_t z;
    if (!zero_point(wt, n, g, &z)) return false;
    out_row[k] = bf16_bits(weight_value(nibble(wt, n, k), z, wt.w_scale[n * wt.G + g]));
  }
  return true;
}

inline float finish_output(const float* p, const float* bias, int64_t n) {
  const float v = reduce_lanes64(p);
  return bias != nullptr ? v + bias[n] : v;
}

// The dequantization table of each chunk's group, rebuilt when a chunk starts
// a new group (chunks visited in increasing k0; no division per chunk).
// kBuild(z, s) makes a table for zero point z and scale s.
template <class Table, Table (*kBuild)(int32_t, float)>
class GroupTables {
 public:
  GroupTables(const Weight& wt, int64_t n) : wt_(wt), n_(n) {}
  // Points *table at chunk k0's table; false when its zero point is outside 0..15.
  [[gnu::always_inline]] bool at(int64_t k0, const Table** table) {
    if (k0 >= next_) {
      const int64_t g = k0 / wt_.group;
      int32_t z;
      if (!zero_point(wt_, n_, g, &z)) return false;
      table_ = kBuild(z, wt_.w_scale[n_ * wt_.G + g]);
      next_ = (g + 1) * wt_.group;
    }
    *table = &table_;
    return true;
  }

 private:
  const Weight& wt_;
  int64_t n_;
  int64_t next_ = 0;
  Table table_{};
};

// Runs Kernel::run<mr> for 1 <= mr <= MR rows.
template <int MR, typename Kernel>
inline bool run_rows(int64_t mr, const Tile& t, int64_t m, int64_t n) {
  if constexpr (MR > 1) {
    if (mr < MR) return run_rows<MR - 1, Kernel>(mr, t, m, n);
  }
  return Kernel::template run<MR>(t, m, n);
}

// Walks a tile weight row by weight row, MR activation rows at a time (all of
// them at M <= MR, so each weight row is streamed from memory once); the next
// weight row is prefetched into L2 meanwhile.
template <int MR, typename Kernel>
bool walk_tile(const Tile& t) {
  for (int64_t n = t.n_begin; n < t.n_end; ++n) {
    if (n + 1 < t.n_end) {
      const uint8_t* next = t.wt.w + (n + 1) * t.wt.Kh;
      for (int64_t k = 0; k < t.wt.Kh; k += 64) __builtin_prefetch(next + k, 0, 2);
    }
    for (int64_t m = t.m_begin; m < t.m_end; m += MR) {
      if (!run_rows<MR, Kernel>(min64(MR, t.m_end - m), t, m, n)) return false;
    }
  }
  return true;
}

}  // namespace

bool tile_scalar(const Tile& t);
bool tile_avx2(const Tile& t);
bool tile_avx512(const Tile& t);
bool dequant_scalar(const Rows& r);
bool dequant_avx2(const Rows& r);
bool dequant_avx512(const Rows& r);

}  // namespace w4a16_linear
}  // namespace slimops
