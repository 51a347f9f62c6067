// The xT kernel for float32 values on a vector type too wide for its 16
// accumulators to stay in registers (YmmPair: 16 lanes x 2 ymm = 32 ymm, with
// AVX2's 16). run_tiles keeps them on the stack, so each stored element costs
// two accumulator loads and two stores besides its broadcast and x loads.
// Here each row is walked in four passes instead, pass g keeping lanes
// 4g .. 4g + 3 (8 ymm) in registers: element j of the row goes to lane
// j % 16 as before, each lane sums its elements in row order, and the lanes
// meet in finish's halving tree, so the float order and the bits are
// run_tiles'. A row's column indices (block columns for BSR) are checked
// once before its passes; its arrays are read four times, from L1 after the
// first. On the Zen 2, CSR,
// 16 rows, K = N = 4096, 90% sparse: 2.0 ms against run_tiles' 2.9 on one
// core (a microbenchmark), 1.1-1.2 ms against 1.5 through the op with hot
// weights. Eight lanes a pass would need 16 accumulators; values broadcast
// from one 16-byte load by permutes were no faster.
//
// The walks: CSR (any row) and BSR with bk % 16 == 0 (runs inside blocks,
// contiguous columns: 16x16 at 90%, 16 rows 1.53 -> 0.9-1.2 ms, 128 rows
// 9.7 -> 6.9-8.4 ms, hot); the others take run_tiles. N:M 2:4 and 4:8 ran 13-22%
// slower in passes at 16 rows: they read half of xt's lines each output row,
// so L2 feeding L1 is their limit, not the accumulators, and the passes add a
// field decode per element.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernel.h"

namespace slimops {
namespace sparse_xt {
namespace {

constexpr int kPassLanes = 4;

// The four accumulators of a pass (named: see YmmPair).
template <class S>
struct PassAcc {
  typename S::V a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();

  // Lane q += v[q] * xt[c[q]], for the lanes below count.
  [[gnu::always_inline]] void add(const float* xt, const int64_t (&c)[kPassLanes], const float* v, int count = 4) {
    constexpr int64_t T = S::kWidth;
    if (count > 0) a0 = S::fma(S::set1(v[0]), S::load(xt + c[0] * T), a0);
    if (count > 1) a1 = S::fma(S::set1(v[1]), S::load(xt + c[1] * T), a1);
    if (count > 2) a2 = S::fma(S::set1(v[2]), S::load(xt + c[2] * T), a2);
    if (count > 3) a3 = S::fma(S::set1(v[3]), S::load(xt + c[3] * T), a3);
  }

  [[gnu::always_inline]] void store(int g, typename S::V (&acc)[kLanes]) const {
    acc[g * kPassLanes] = a0;
    acc[g * kPassLanes + 1] = a1;
    acc[g * kPassLanes + 2] = a2;
    acc[g * kPassLanes + 3] = a3;
  }
};

// ---- CSR --------------------------------------------------------------------
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

template <typename Idx>
struct CsrPasses {
  template <class S>
  [[gnu::always_inline]] static bool row(const CsrWeight& w, const float* xt, int64_t n,
                                         typename S::V (&acc)[kLanes]) {
    const Idx* col = static_cast<const Idx*>(w.col_idx);
    const float* values = w.values.f32;
    const int64_t begin = read_index(w.row_ptr, w.row_ptr_bytes, n);
    const int64_t end = read_index(w.row_ptr, w.row_ptr_bytes, n + 1);
    int64_t j = begin;
    for (; end - j >= kLanes; j += kLanes) {
      if (!S::columns_in_range(col + j, w.col_limit)) return false;
      prefetch_ahead(w.values, col, j);
    }
    for (; j < end; ++j) {
      if (static_cast<uint32_t>(static_cast<int32_t>(col[j])) >= w.col_limit) return false;
    }
    const int64_t full_end = begin + (end - begin) / kLanes * kLanes;
    for (int g = 0; g < kLanes / kPassLanes; ++g) {
      PassAcc<S> p;
      int64_t c[kPassLanes];
      for (j = begin + g * kPassLanes; j < full_end; j += kLanes) {
        four_columns(col, j, c);
        p.add(xt, c, values + j);
      }
      const int count = static_cast<int>(min64(kPassLanes, end - j));  // this pass's lanes of a partial run
      for (int q = 0; q < count; ++q) c[q] = col[j + q];
      p.add(xt, c, values + j, count);
      p.store(g, acc);
    }
    return true;
  }
};

// ---- BSR, bk % 16 == 0 ----------------------------------------------------------
struct BsrPasses {
  template <class S>
  [[gnu::always_inline]] static bool row(const BsrWeight& w, const float* xt, int64_t n,
                                         typename S::V (&acc)[kLanes]) {
    const BlockRow br = block_row_of(w, n);
    for (int64_t b = br.begin; b < br.end; ++b) {
      int64_t c;
      if (!bsr_block_col(w, b, &c)) return false;
    }
    for (int g = 0; g < kLanes / kPassLanes; ++g) {
      PassAcc<S> p;
      for (int64_t b = br.begin; b < br.end; ++b) {
        const int64_t first = read_index(w.block_col_idx, w.col_idx_bytes, b) * w.bk + g * kPassLanes;
        const float* v = w.values.f32 + (b * w.bn + br.r) * w.bk + g * kPassLanes;
        for (int64_t k = 0; k < w.bk; k += kLanes) {
          const int64_t c[kPassLanes] = {first + k, first + k + 1, first + k + 2, first + k + 3};
          p.add(xt, c, v + k);
        }
      }
      p.store(g, acc);
    }
    return true;
  }
};

template <class S, class Passes, class Weight>
bool run_lane_passes(const Tiles& t, const Weight& w) {
  using V = typename S::V;
  constexpr int64_t T = S::kWidth;
  for (int64_t m0 = 0; m0 < t.M; m0 += T) {
    const float* xt = t.xt + (m0 / T) * t.K * T;
    for (int64_t n = t.n_begin; n < t.n_end; ++n) {
      V acc[kLanes];
      if (!Passes::template row<S>(w, xt, n, acc)) return false;
      S::store(t.yt + (n - t.n_begin) * T, finish<S>(acc, nullptr, t.bias, n));  // float32 values: no scale
    }
    scatter_tile(t, m0, T);
  }
  return true;
}

// run_tiles, in lane passes where the values are float32 and the walk has them.
template <class S>
bool run_tiles_in_lane_passes(const Tiles& t, const CsrWeight& w) {
  if (w.values.f32 == nullptr) return run_tiles<S>(t, w);
  return w.col_idx_bytes == 2 ? run_lane_passes<S, CsrPasses<int16_t>>(t, w)
                              : run_lane_passes<S, CsrPasses<int32_t>>(t, w);
}
template <class S>
bool run_tiles_in_lane_passes(const Tiles& t, const BsrWeight& w) {
  if (w.values.f32 == nullptr || w.bk % kLanes != 0) return run_tiles<S>(t, w);
  return run_lane_passes<S, BsrPasses>(t, w);
}

}  // namespace
}  // namespace sparse_xt
}  // namespace slimops
