// Per-ISA building blocks of w4a8_linear; w4a8_linear.cpp quantizes the
// activations, lays them out and splits the output into tiles.
//
// Activation layout of the SIMD paths: int4_activation_layout.h; every 32-bit
// lane of a u8 x s8 dot product covers 8 consecutive K values.
//
// Exactness: u is 0..15 and q is -127..127, so vpdpbusd (no saturation) and
// vpmaddubsw (a pair is at most 2 * 15 * 127 = 3810) give sum u * q exactly,
// and d = sum u * q - z * (sum q over the group) uses the group sums of the
// activations computed once per token.
#pragma once

#include <cstdint>

#include "../int4_activation_layout.h"

namespace slimops {
namespace w4a8_linear {

constexpr int64_t kBlock = kInt4Block;  // K values per block of the activation layout
constexpr int64_t kSubgroup = 32;   // the SIMD paths reduce 32-K subgroups; g must be a multiple (or G = 1)

// A rectangle [m_begin, m_end) x [n_begin, n_end) of the output.
struct Tile {
  const int8_t* q;        // [M, K] quantized activations (scalar path)
  const int8_t* qb;       // [Kb / kBlock, M, kBlock] the block layout above, Kb = K rounded up to kBlock (SIMD paths)
  const int32_t* qgsum;   // [M, G] sum of q over each group
  const float* x_scale;   // [M]
  const uint8_t* w;       // [N, Kh] packed, Kh = ceil(K / 2)
  const float* w_scale;   // [N, G]
  const int32_t* w_zero;  // [N, G], or null: every zero point is 8
  const float* bias;      // [N] or null
  float* y;               // [M, N]
  int64_t M, K, Kb, Kh, N, G, group;
  int64_t m_begin, m_end, n_begin, n_end;
};
// Returns false when a zero point it read is outside 0..15 (its outputs are
// then meaningless and the call fails).
using TileFn = bool (*)(const Tile& t);

// Helpers with internal linkage: this header is compiled once per ISA with
// different target flags (see int8_linear/kernels.h).
namespace {

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Subgroups of 32 K values per group for the SIMD paths: the whole row when
// there is one group (any K), else g / 32.
inline int64_t subgroups_per_group(const Tile& t) {
  return t.G == 1 ? (t.K + kSubgroup - 1) / kSubgroup : t.group / kSubgroup;
}

// Block b of activation row m in the block layout.
inline const int8_t* activation_block(const Tile& t, int64_t m, int64_t b) { return t.qb + (b * t.M + m) * kBlock; }

// The last two float32 steps, shared so every ISA rounds identically.
inline float finish_output(float acc, float x_scale, const float* bias, int64_t n) {
  const float v = x_scale * acc;
  return bias != nullptr ? v + bias[n] : v;
}

}  // namespace

bool tile_scalar(const Tile& t);
bool tile_avx2(const Tile& t);
bool tile_avx512_vnni(const Tile& t);

}  // namespace w4a8_linear
}  // namespace slimops
