// The transposed-activation ("xT") kernel of the sparse linear ops, written
// once for a vector type S and compiled per ISA (scalar.cpp, avx2.cpp,
// avx512_vnni.cpp). S provides V, kWidth, zero(), set1(f), load(p), store(p, v),
// add(a, b), mul(a, b) and fma(a, b, c) = a * b + c rounded once; and the column decoders
// columns.h: columns_in_range (16 CSR indices) and
// nm_columns<m> (16 N:M columns from their packed fields, checked).
//
// The entry point lays x out as tiles xt[tile][K][T] (T = S::kWidth activation
// rows a tile, zeros past row M), so one stored weight element (column c,
// value v) updates T rows at once: acc += v * xt[tile][c], a broadcast FMA
// with no gather. Each output keeps the float order of slimops/csr_linear.h
// over the row's stored elements in row order: element j to lane j % 16 (here
// 16 accumulators of T rows each), the halving tree, then the bias. So the
// results match the CSR gather kernels bit for bit, and do not depend on T.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "../prefetch.h"
#include "slimops/csr_linear.h"
#include "sources.h"

namespace slimops {
namespace sparse_xt {

// One task: outputs [n_begin, n_end) of every activation row.
struct Tiles {
  const float* xt;    // [tiles][K][T]
  const float* bias;  // [N] or null
  float* y;           // [M][N]
  float* yt;          // [n_end - n_begin][T] scratch of this task
  int64_t M, K, N, n_begin, n_end;
};

// One task of a kernel that reads x directly (nm_rows_avx512, nm_rows_avx2).
struct Rows {
  const float* x;     // [M, K], row stride x_row_stride
  const float* bias;  // [N] or null
  float* y;           // [M][N]
  int64_t M, K, x_row_stride, N, n_begin, n_end;
};

// Whether each run of 16 kept values of an n:m row starts a group and spans
// 32 columns (2:4 and 4:8): see aligned_runs.h.
inline bool nm_runs_aligned(int n, int m) { return n > 0 && 16 % n == 0 && 16 / n * m == 32; }

// Internal linkage on purpose: this header is compiled once per ISA with
// different target flags (see w8a16_linear/kernels.h).
namespace {

constexpr int kLanes = kCsrLanes;

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

inline int64_t read_index(const void* p, int bytes, int64_t i) {
  switch (bytes) {
    case 2:
      return static_cast<const int16_t*>(p)[i];
    case 4:
      return static_cast<const int32_t*>(p)[i];
    default:
      return static_cast<const int64_t*>(p)[i];
  }
}

// A run of at most kLanes consecutive stored elements of one row: their
// columns are cols[0 .. count) (CSR's own index array, once checked, or
// decoded[]), or first, first + 1, ... when contiguous (BSR blocks).
template <typename Idx>
struct RunOf {
  using Index = Idx;
  static constexpr int kAlignedM = 0;  // not an AlignedNmRun
  const Idx* cols;
  alignas(64) Idx decoded[kLanes];
  alignas(64) float widened[kLanes];  // int8 values, as floats (exact)
  const float* values;
  int count;
  bool contiguous = false;
  int64_t first = 0;
};

// float16 and bfloat16 bits as float (exact).
inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // Inf, NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: shift the leading 1 up to the implicit bit
    uint32_t m = mantissa, shift = 0;
    while ((m & 0x400u) == 0) {
      m <<= 1;
      ++shift;
    }
    bits = sign | ((113 - shift) << 23) | ((m & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline float value_at(const Values& v, int64_t i) {
  if (v.f32 != nullptr) return v.f32[i];
  if (v.i8 != nullptr) return v.i8[i];
  return v.f16 != nullptr ? f16_to_float(v.f16[i]) : bf16_to_float(v.bf16[i]);
}

// Points run.values at count stored values from offset: in place for float32,
// widened into run.widened for the others.
template <class Run>
[[gnu::always_inline]] inline void read_values(const Values& v, int64_t offset, int count, Run& run) {
  if (v.f32 != nullptr) {
    run.values = v.f32 + offset;
    return;
  }
  if (v.i8 != nullptr && count == kLanes) {
    for (int l = 0; l < kLanes; ++l) run.widened[l] = v.i8[offset + l];
  } else if (v.bf16 != nullptr && count == kLanes) {
    for (int l = 0; l < kLanes; ++l) run.widened[l] = bf16_to_float(v.bf16[offset + l]);
  } else {
    for (int l = 0; l < count; ++l) run.widened[l] = value_at(v, offset + l);
  }
  run.values = run.widened;
}

// Prefetches the stored elements kStreamPrefetchElements past offset.
template <typename Idx>
[[gnu::always_inline]] inline void prefetch_ahead(const Values& v, const Idx* col, int64_t offset) {
  prefetch_ahead_of(col, offset);
  if (v.f32 != nullptr) {
    prefetch_ahead_of(v.f32, offset);
  } else if (v.i8 != nullptr) {
    prefetch_ahead_of(v.i8, offset);
  } else {
    prefetch_ahead_of(v.f16 != nullptr ? v.f16 : v.bf16, offset);
  }
}

// Walks: Walk::row<S>(w, n, f) calls f(run) for row n's stored elements,
// kLanes at a time, and returns false on a bad index or field. Each walk has
// a single call of f and gets its own run_tiles instance: with more, GCC
// keeps the accumulators in memory instead of registers.
template <typename Idx>
struct CsrWalk {
  template <class S, class F>
  [[gnu::always_inline]] static bool row(const CsrWeight& w, int64_t n, F&& f) {
    const Idx* col = static_cast<const Idx*>(w.col_idx);
    const int64_t begin = read_index(w.row_ptr, w.row_ptr_bytes, n);
    const int64_t end = read_index(w.row_ptr, w.row_ptr_bytes, n + 1);
    RunOf<Idx> run;
    for (int64_t j = begin; j < end; j += kLanes) {
      run.count = static_cast<int>(min64(kLanes, end - j));
      run.cols = col + j;  // read in place once checked
      if (run.count == kLanes) {
        if (!S::columns_in_range(col + j, w.col_limit)) return false;
      } else {
        for (int l = 0; l < run.count; ++l) {
          if (static_cast<uint32_t>(static_cast<int32_t>(col[j + l])) >= w.col_limit) return false;
        }
      }
      prefetch_ahead(w.values, col, j);
      read_values(w.values, j, run.count, run);
      f(run);
    }
    return true;
  }
};

// Row n of a BSR weight is the row n % bn of each block of block row n / bn,
// blocks in order.
struct BlockRow {
  int64_t begin, end, r;  // its blocks, and the row within them
};
inline BlockRow block_row_of(const BsrWeight& w, int64_t n) {
  return {read_index(w.block_row_ptr, w.row_ptr_bytes, n / w.bn), read_index(w.block_row_ptr, w.row_ptr_bytes, n / w.bn + 1),
          n % w.bn};
}
inline bool bsr_block_col(const BsrWeight& w, int64_t b, int64_t* c) {
  *c = read_index(w.block_col_idx, w.col_idx_bytes, b);
  return static_cast<uint64_t>(*c) < w.block_col_limit;
}

// bk a multiple of kLanes: every run lies inside one block (contiguous
// columns, values read in place).
struct BsrWholeRunsWalk {
  template <class S, class F>
  [[gnu::always_inline]] static bool row(const BsrWeight& w, int64_t n, F&& f) {
    const BlockRow br = block_row_of(w, n);
    RunOf<int32_t> run;
    run.contiguous = true;
    run.count = kLanes;
    for (int64_t b = br.begin; b < br.end; ++b) {
      int64_t c;
      if (!bsr_block_col(w, b, &c)) return false;
      const int64_t v = (b * w.bn + br.r) * w.bk;
      for (int64_t k = 0; k < w.bk; k += kLanes) {
        run.first = c * w.bk + k;
        read_values(w.values, v + k, kLanes, run);
        f(run);
      }
    }
    return true;
  }
};

// Any bk: runs are packed across block boundaries.
struct BsrPackedWalk {
  template <class S, class F>
  [[gnu::always_inline]] static bool row(const BsrWeight& w, int64_t n, F&& f) {
    const BlockRow br = block_row_of(w, n);
    RunOf<int32_t> run;
    alignas(64) float values[kLanes];
    run.values = values;
    run.cols = run.decoded;
    run.count = 0;
    for (int64_t b = br.begin; b < br.end; ++b) {
      int64_t c;
      if (!bsr_block_col(w, b, &c)) return false;
      const int64_t v = (b * w.bn + br.r) * w.bk;
      for (int64_t k = 0; k < w.bk; ++k) {
        run.decoded[run.count] = static_cast<int32_t>(c * w.bk + k);
        values[run.count] = value_at(w.values, v + k);
        if (++run.count == kLanes || (b + 1 == br.end && k + 1 == w.bk)) {
          f(run);
          run.count = 0;
        }
      }
    }
    return true;
  }
};

// The position fields of a run of count <= kLanes kept values (starting on a
// byte: kLanes fields fill whole bytes), as 32-bit words, zero past count.
template <int M>
constexpr int kRunWords = M == 4 ? 1 : 2;
template <int M>
inline void load_run_fields(const uint8_t* src, int count, uint32_t (&words)[kRunWords<M>]) {
  constexpr int kBits = M == 4 ? 2 : 4;
  for (uint32_t& word : words) word = 0;
  if (count == kLanes) {
    std::memcpy(words, src, sizeof(words));
  } else {  // the row's last bytes only, without the padding bits of the last one
    const int bits = count * kBits;
    for (int i = 0; i < (bits + 7) / 8; ++i) {
      const uint32_t byte = 8 * (i + 1) <= bits ? src[i] : src[i] & ((1u << (bits - 8 * i)) - 1);
      words[i / 4] |= byte << (8 * (i % 4));
    }
  }
}

// From one run of kLanes kept values to the next: the group and place in it
// of the run's first value (the division is done once, in NmWeight).
inline void advance_run(const NmWeight& w, int64_t* q, int* p) {
  *q += w.run_groups;
  *p += w.run_places;
  if (*p >= w.n) {
    *p -= w.n;
    ++*q;
  }
}

// Kept element j of an N:M row is in group j / n at the position its field
// gives; a field >= m (possible with m = 8's 4-bit fields) is corrupt. A run
// starting at j = q * n + p has its lane l in group q + group_step[p][l]
// (NmWeight), so no division per element.
template <int M>
struct NmWalk {
  template <class S, class F>
  [[gnu::always_inline]] static bool row(const NmWeight& w, int64_t n, F&& f) {
    constexpr int kBits = M == 4 ? 2 : 4;
    constexpr int64_t kRunBytes = kLanes * kBits / 8;  // kLanes fields fill whole bytes
    const uint8_t* fields = w.indices + n * w.row_bytes;
    RunOf<int32_t> run;
    run.cols = run.decoded;
    int64_t q = 0;  // the group of the run's first element, and its place in it
    int p = 0;
    for (int64_t j = 0; j < w.kept; j += kLanes) {
      run.count = static_cast<int>(min64(kLanes, w.kept - j));
      uint32_t words[kRunWords<M>];
      load_run_fields<M>(fields + j / kLanes * kRunBytes, run.count, words);
      if (!S::template nm_columns<M>(words, static_cast<int32_t>(q * M), w.group_step[p], run.decoded)) return false;
      read_values(w.values, n * w.kept + j, run.count, run);
      f(run);
      advance_run(w, &q, &p);
    }
    return true;
  }
};

// A full run of 16 kept values of a 2:4 or 4:8 row that starts a group
// (nm_runs_aligned): it spans the 32 columns from `first`, and lane l's column
// is first + (l / n) * m + field l, each field read from `words` where
// fma_run uses it, with no decoded column array in between.
template <int M>
struct AlignedNmRun {
  static constexpr int kAlignedM = M;
  static constexpr int kBits = M == 4 ? 2 : 4;
  uint32_t words[kRunWords<M>];
  alignas(64) float widened[kLanes];
  const float* values;
  int64_t first;
  int count = kLanes;
};

// The N:M walk of rows with K % 32 == 0 and kept % 16 == 0 (every run aligned
// and full). 2-bit fields are all valid for m = 4; for m = 8 a 4-bit field
// with its high bit set (>= 8) is corrupt.
template <int M>
struct NmAlignedWalk {
  template <class S, class F>
  [[gnu::always_inline]] static bool row(const NmWeight& w, int64_t n, F&& f) {
    constexpr int64_t kRunBytes = kLanes * AlignedNmRun<M>::kBits / 8;
    const uint8_t* fields = w.indices + n * w.row_bytes;
    AlignedNmRun<M> run;
    for (int64_t k = 0; k < w.kept / kLanes; ++k) {
      std::memcpy(run.words, fields + k * kRunBytes, sizeof(run.words));
      if constexpr (M == 8) {
        if (((run.words[0] | run.words[1]) & 0x88888888u) != 0) return false;
      }
      run.first = 32 * k;
      read_values(w.values, n * w.kept + k * kLanes, kLanes, run);
      f(run);
    }
    return true;
  }
};

// Whether NmAlignedWalk can take the rows of w in a kernel over K columns.
inline bool nm_rows_all_aligned(const NmWeight& w, int64_t K) {
  return nm_runs_aligned(w.n, w.m) && K % 32 == 0 && w.kept % kLanes == 0 && w.kept / kLanes == K / 32;
}

// acc[l] += v[l] * xt[cols[l]] for the run's lanes (constant indices, so the
// accumulators stay in registers).
template <class S, class Run, size_t... L>
[[gnu::always_inline]] inline void fma_run(const float* xt, const Run& run, typename S::V (&acc)[kLanes],
                                           std::index_sequence<L...>) {
  constexpr int64_t T = S::kWidth;
  if constexpr (Run::kAlignedM != 0) {
    constexpr int kM = Run::kAlignedM, kN = 16 / (32 / kM), kBits = Run::kBits, kPerWord = 32 / kBits;
    const float* x = xt + run.first * T;
    ((acc[L] = S::fma(S::set1(run.values[L]),
                      S::load(x + ((L / kN) * kM + ((run.words[L / kPerWord] >> (kBits * (L % kPerWord))) & (kM - 1))) * T),
                      acc[L])),
     ...);
  } else if (run.contiguous) {  // always a full run
    const float* x = xt + run.first * T;
    ((acc[L] = S::fma(S::set1(run.values[L]), S::load(x + L * T), acc[L])), ...);
  } else if (run.count == kLanes) {
    if constexpr (std::is_same_v<typename Run::Index, int16_t>) {
      static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "index l % 4 is bits 16 (l % 4) of its word");
      // CSR's int16 indices, read in place once checked (so non-negative):
      // four a 64-bit load, taken apart with shifts. A load per index left
      // the loads the bottleneck. (Decoded int32 columns come from a vector
      // store, which 64-bit loads would not be forwarded from as cheaply.)
      uint64_t words[kLanes / 4];
      std::memcpy(words, run.cols, sizeof(words));
      ((acc[L] = S::fma(S::set1(run.values[L]), S::load(xt + int64_t((words[L / 4] >> (16 * (L % 4))) & 0xffff) * T), acc[L])), ...);
    } else {
      ((acc[L] = S::fma(S::set1(run.values[L]), S::load(xt + int64_t{run.cols[L]} * T), acc[L])), ...);
    }
  } else {
    ((acc[L] = L < static_cast<size_t>(run.count) ? S::fma(S::set1(run.values[L]), S::load(xt + int64_t{run.cols[L]} * T), acc[L])
                                                  : acc[L]),
     ...);
  }
}

// Step 2 of the float order on whole vectors, then the int8 scale (one
// rounding) and the bias.
template <class S>
[[gnu::always_inline]] inline typename S::V finish(typename S::V (&acc)[kLanes], const float* scale,
                                                   const float* bias, int64_t n) {
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int l = 0; l < width; ++l) acc[l] = S::add(acc[l], acc[l + width]);
  }
  const typename S::V sum = scale != nullptr ? S::mul(acc[0], S::set1(scale[n])) : acc[0];
  return bias != nullptr ? S::add(sum, S::set1(bias[n])) : sum;
}

// The task's outputs of tile rows m0 .. m0 + T, from yt ([row][T]) to y.
inline void scatter_tile(const Tiles& t, int64_t m0, int64_t T) {
  const int64_t tile_rows = min64(T, t.M - m0), rows = t.n_end - t.n_begin;
  for (int64_t i = 0; i < tile_rows; ++i) {
    float* y = t.y + (m0 + i) * t.N + t.n_begin;
    for (int64_t r = 0; r < rows; ++r) y[r] = t.yt[r * T + i];
  }
}

// With 16 vector registers (AVX2) GCC keeps the 16 accumulators on the
// stack, a load and a store per FMA; walking each row twice instead, 8 lanes
// in registers at a time, was 5-17% slower on the Zen 2 (which renames such
// stack accesses). With two ymm a lane, CSR walks each row in four passes
// instead (lane_passes.h).
template <class S, class Walk, class Weight>
bool run_tiles(const Tiles& t, const Weight& w) {
  using V = typename S::V;
  constexpr int64_t T = S::kWidth;
  for (int64_t m0 = 0; m0 < t.M; m0 += T) {
    const float* xt = t.xt + (m0 / T) * t.K * T;
    for (int64_t n = t.n_begin; n < t.n_end; ++n) {
      V acc[kLanes];
      for (int l = 0; l < kLanes; ++l) acc[l] = S::zero();
      const bool ok = Walk::template row<S>(w, n, [&](const auto& run) __attribute__((always_inline)) {
        fma_run<S>(xt, run, acc, std::make_index_sequence<kLanes>());
      });
      if (!ok) return false;
      S::store(t.yt + (n - t.n_begin) * T, finish<S>(acc, w.values.scale, t.bias, n));
    }
    scatter_tile(t, m0, T);
  }
  return true;
}

template <class S>
bool run_tiles(const Tiles& t, const CsrWeight& w) {
  return w.col_idx_bytes == 2 ? run_tiles<S, CsrWalk<int16_t>>(t, w) : run_tiles<S, CsrWalk<int32_t>>(t, w);
}
template <class S>
bool run_tiles(const Tiles& t, const BsrWeight& w) {
  return w.bk % kLanes == 0 ? run_tiles<S, BsrWholeRunsWalk>(t, w) : run_tiles<S, BsrPackedWalk>(t, w);
}
template <class S>
bool run_tiles(const Tiles& t, const NmWeight& w) {
  if (nm_rows_all_aligned(w, t.K)) {
    return w.m == 4 ? run_tiles<S, NmAlignedWalk<4>>(t, w) : run_tiles<S, NmAlignedWalk<8>>(t, w);
  }
  return w.m == 4 ? run_tiles<S, NmWalk<4>>(t, w) : run_tiles<S, NmWalk<8>>(t, w);
}

}  // namespace

// Per-ISA entry points, each for tiles of its S::kWidth rows (the entry
// point's table pairs each with its width).
bool csr_scalar(const Tiles& t, const CsrWeight& w);
bool bsr_scalar(const Tiles& t, const BsrWeight& w);
bool nm_scalar(const Tiles& t, const NmWeight& w);
bool csr_avx2(const Tiles& t, const CsrWeight& w);
bool bsr_avx2(const Tiles& t, const BsrWeight& w);
bool nm_avx2(const Tiles& t, const NmWeight& w);
bool csr_avx2_pair(const Tiles& t, const CsrWeight& w);
bool bsr_avx2_pair(const Tiles& t, const BsrWeight& w);
bool nm_avx2_pair(const Tiles& t, const NmWeight& w);
bool csr_avx512(const Tiles& t, const CsrWeight& w);
bool bsr_avx512(const Tiles& t, const BsrWeight& w);
bool nm_avx512(const Tiles& t, const NmWeight& w);
bool csr_avx512_half(const Tiles& t, const CsrWeight& w);
bool bsr_avx512_half(const Tiles& t, const BsrWeight& w);
bool nm_avx512_half(const Tiles& t, const NmWeight& w);
// N:M streaming the weight once; false on a corrupt position field.
// AVX-512: for M = 1 or 2 rows (a precondition), float32 or int8 values.
// AVX2: for M = 1 to kNmRowsAvx2 rows, float32 or int8 values.
bool nm_rows_avx512(const Rows& r, const NmWeight& w);
constexpr int64_t kNmRowsAvx2 = 4;
bool nm_rows_avx2(const Rows& r, const NmWeight& w);
// How many of a row's runs, from the first, are aligned: the full runs whose
// 32 columns lie inside the row (all of them when K % 32 == 0).
inline int64_t aligned_run_count(const NmWeight& w, int64_t K) {
  return nm_runs_aligned(w.n, w.m) ? min64(w.kept / 16, K / 32) : 0;
}
// N:M 2:4 or 4:8 (float32 or int8 values) with K % 32 == 0, for 1 to 16
// rows (AVX-512); scratch: nm_chunks_scratch(n_end - n_begin) floats,
// 64-byte aligned. False on a corrupt position field.
inline int64_t nm_chunks_scratch(int64_t rows) { return 16 * 512 + rows * 16 * 16; }
bool nm_chunks_avx512(const Rows& r, const NmWeight& w, float* scratch);
// BSR with float32 values, bn % 8 == 0, bk % 16 == 0, for tasks of whole
// block rows over 32-row xT tiles [tiles][K][32] (AVX-512); offsets: scratch
// for one int64 a block of the task. False on a bad block column.
bool bsr_panels_avx512(const Tiles& t, const BsrWeight& w, int64_t* offsets);

}  // namespace sparse_xt
}  // namespace slimops
