// The CSR xT kernel for float32 values on a vector type too wide for its 16
// accumulators to stay in registers (YmmPair: 16 lanes x 2 ymm = 32 ymm, with
// AVX2's 16). run_tiles keeps them on the stack, so each stored element costs
// two accumulator loads and two stores besides its broadcast and x loads.
// Here each row is walked in four passes instead, pass g keeping lanes
// 4g .. 4g + 3 (8 ymm) in registers: element j of the row goes to lane
// j % 16 as before, each lane sums its elements in row order, and the lanes
// meet in finish's halving tree, so the float order and the bits are
// run_tiles'. The row's indices and values are read four times, from L1
// after the first (a row is 6 bytes a stored element). On the Zen 2, 16
// rows, K = N = 4096, 90% sparse: 2.0 ms against run_tiles' 2.9 on one core
// (a microbenchmark), 1.1-1.2 ms against 1.5 through the op with hot weights.
// Eight lanes a pass would need 16 accumulators; values broadcast from one
// 16-byte load by permutes were no faster.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernel.h"

namespace slimops {
namespace sparse_xt {
namespace {

constexpr int kPassLanes = 4;

// Whether row n's columns all lie in [0, col_limit), and prefetches the
// stream ahead of it as CsrWalk does.
template <class S, typename Idx>
[[gnu::always_inline]] inline bool csr_row_in_range(const CsrWeight& w, const Idx* col, int64_t begin, int64_t end) {
  int64_t j = begin;
  for (; end - j >= kLanes; j += kLanes) {
    if (!S::columns_in_range(col + j, w.col_limit)) return false;
    prefetch_ahead(w.values, col, j);
  }
  for (; j < end; ++j) {
    if (static_cast<uint32_t>(static_cast<int32_t>(col[j])) >= w.col_limit) return false;
  }
  return true;
}

// The four columns col[j .. j + 4), once checked (so non-negative): int16
// ones from one 64-bit load (see fma_run).
template <typename Idx>
[[gnu::always_inline]] inline void four_columns(const Idx* col, int64_t j, int64_t (&c)[kPassLanes]) {
  if constexpr (sizeof(Idx) == 2) {
    static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "index q is bits 16q of the word");
    uint64_t word;
    std::memcpy(&word, col + j, sizeof(word));
    for (int q = 0; q < kPassLanes; ++q) c[q] = static_cast<int64_t>((word >> (16 * q)) & 0xffff);
  } else {
    for (int q = 0; q < kPassLanes; ++q) c[q] = col[j + q];
  }
}

// Lanes g * 4 .. g * 4 + 3 of row [begin, end) over the tile xt.
template <class S, typename Idx>
[[gnu::always_inline]] inline void lane_pass(const float* xt, const Idx* col, const float* values, int64_t begin,
                                             int64_t end, int g, typename S::V (&acc)[kLanes]) {
  using V = typename S::V;
  constexpr int64_t T = S::kWidth;
  V a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();  // named: see YmmPair
  const int64_t full_end = begin + (end - begin) / kLanes * kLanes;
  int64_t j = begin + g * kPassLanes;
  for (; j < full_end; j += kLanes) {
    int64_t c[kPassLanes];
    four_columns(col, j, c);
    a0 = S::fma(S::set1(values[j]), S::load(xt + c[0] * T), a0);
    a1 = S::fma(S::set1(values[j + 1]), S::load(xt + c[1] * T), a1);
    a2 = S::fma(S::set1(values[j + 2]), S::load(xt + c[2] * T), a2);
    a3 = S::fma(S::set1(values[j + 3]), S::load(xt + c[3] * T), a3);
  }
  // The lanes of this pass in the row's last, partial run.
  if (j < end) a0 = S::fma(S::set1(values[j]), S::load(xt + int64_t{col[j]} * T), a0);
  if (j + 1 < end) a1 = S::fma(S::set1(values[j + 1]), S::load(xt + int64_t{col[j + 1]} * T), a1);
  if (j + 2 < end) a2 = S::fma(S::set1(values[j + 2]), S::load(xt + int64_t{col[j + 2]} * T), a2);
  if (j + 3 < end) a3 = S::fma(S::set1(values[j + 3]), S::load(xt + int64_t{col[j + 3]} * T), a3);
  acc[g * kPassLanes] = a0;
  acc[g * kPassLanes + 1] = a1;
  acc[g * kPassLanes + 2] = a2;
  acc[g * kPassLanes + 3] = a3;
}

template <class S, typename Idx>
bool run_csr_lane_passes(const Tiles& t, const CsrWeight& w) {
  using V = typename S::V;
  constexpr int64_t T = S::kWidth;
  const Idx* col = static_cast<const Idx*>(w.col_idx);
  for (int64_t m0 = 0; m0 < t.M; m0 += T) {
    const float* xt = t.xt + (m0 / T) * t.K * T;
    for (int64_t n = t.n_begin; n < t.n_end; ++n) {
      const int64_t begin = read_index(w.row_ptr, w.row_ptr_bytes, n);
      const int64_t end = read_index(w.row_ptr, w.row_ptr_bytes, n + 1);
      if (!csr_row_in_range<S>(w, col, begin, end)) return false;
      V acc[kLanes];
      for (int g = 0; g < kLanes / kPassLanes; ++g) lane_pass<S>(xt, col, w.values.f32, begin, end, g, acc);
      S::store(t.yt + (n - t.n_begin) * T, finish<S>(acc, w.values.scale, t.bias, n));
    }
    scatter_tile(t, m0, T);
  }
  return true;
}

// run_tiles for CSR, in lane passes where the values are float32.
template <class S>
bool run_tiles_in_lane_passes(const Tiles& t, const CsrWeight& w) {
  if (w.values.f32 == nullptr) return run_tiles<S>(t, w);
  return w.col_idx_bytes == 2 ? run_csr_lane_passes<S, int16_t>(t, w) : run_csr_lane_passes<S, int32_t>(t, w);
}

}  // namespace
}  // namespace sparse_xt
}  // namespace slimops
