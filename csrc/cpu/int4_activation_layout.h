// The activation layout of the 4-bit SIMD kernels (w4a8_linear, w4a16_linear),
// built per call: each row is cut into blocks of 128 K values, zero padded at
// the end; a block holds its 64 even elements (k = 0, 2, ..., 126) and then its
// 64 odd ones. Blocks are stored block-major, [Kb / 128][M][128]: the rows a
// tile reads together for one block are contiguous (row-major, M rows 4096
// bytes apart would all fall into the same L1 sets and evict each other).
// Byte i of a 64-byte slice of packed weights then pairs with element i of the
// even half (low nibble, u[2i]) and of the odd half (high nibble, u[2i+1]):
// the nibbles are unpacked with one and/shift each and no shuffle.
#pragma once

#include <algorithm>
#include <cstdint>

namespace slimops {

constexpr int64_t kInt4Block = 128;  // K values per block of the layout

// Writes row m (values value(k), k < K) at out = layout + m * kInt4Block.
template <typename T, typename Value>
void int4_activation_row(int64_t K, int64_t Kb, int64_t M, T* out, Value value) {
  for (int64_t b = 0; b < Kb / kInt4Block; ++b) std::fill(out + b * M * kInt4Block, out + (b * M + 1) * kInt4Block, T{0});
  for (int64_t k = 0; k < K; ++k) {
    const int64_t i = k % kInt4Block;
    out[k / kInt4Block * M * kInt4Block + (i % 2) * 64 + i / 2] = value(k);
  }
}

}  // namespace slimops
