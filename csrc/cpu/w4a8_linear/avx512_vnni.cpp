// AVX-512 VNNI path (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni).
//
// A tile is 16 weight rows, one per lane of the float accumulator; every path
// adds the group products into it in group order. Three ways to get there:
//
// - gemv_rows (one activation row, g = 128): weight rows streamed one at a
//   time, front to back (one sequential stream per thread, like the int8
//   gemv); see the comment there.
// - gemv16 (one activation row, other groups): for each 128-K block,
//   vpdpbusd on the low and high nibbles against the even and odd halves of
//   the block layout (kernels.h) gives v[r]: lane l = sum u * q over K values
//   8l .. 8l + 7 of weight row r. A transpose-and-add tree turns the 16 v[r]
//   into four vectors of 32-K subgroup sums, lane r = weight row r; those are
//   added up per group, corrected by z * (sum q), converted and scaled.
// - gemm16 (several activation rows): the weight block is transposed once so
//   that a lane is a weight row, and each activation row accumulates its group
//   sums directly with broadcast activations; see the comment there.
#include <immintrin.h>

#include "kernels.h"

namespace slimops {
namespace w4a8_linear {
namespace {

constexpr int kRows = 16;

inline __mmask16 first_lanes(int64_t count) { return static_cast<__mmask16>(_bzhi_u32(0xffff, static_cast<unsigned>(count))); }

// sub[j] lane r = sum of 128-bit lane j of v[r]: the 32-K subgroup j of row r.
inline void subgroup_sums(const __m512i (&v)[kRows], __m512i (&sub)[4]) {
  __m512i pair[8];  // 128-bit lane j: [v2p(0+2), v2p+1(0+2), v2p(1+3), v2p+1(1+3)] of v's lane j
  for (int p = 0; p < 8; ++p) {
    pair[p] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * p], v[2 * p + 1]),
                               _mm512_unpackhi_epi32(v[2 * p], v[2 * p + 1]));
  }
  __m512i quad[4];  // 128-bit lane j, element r: subgroup j of row 4q + r
  for (int q = 0; q < 4; ++q) {
    quad[q] = _mm512_add_epi32(_mm512_unpacklo_epi64(pair[2 * q], pair[2 * q + 1]),
                               _mm512_unpackhi_epi64(pair[2 * q], pair[2 * q + 1]));
  }
  // 4 x 4 transpose of 128-bit lanes: sub[j] lane q = quad[q] lane j.
  const __m512i t0 = _mm512_shuffle_i32x4(quad[0], quad[1], _MM_SHUFFLE(1, 0, 1, 0));
  const __m512i t1 = _mm512_shuffle_i32x4(quad[0], quad[1], _MM_SHUFFLE(3, 2, 3, 2));
  const __m512i t2 = _mm512_shuffle_i32x4(quad[2], quad[3], _MM_SHUFFLE(1, 0, 1, 0));
  const __m512i t3 = _mm512_shuffle_i32x4(quad[2], quad[3], _MM_SHUFFLE(3, 2, 3, 2));
  sub[0] = _mm512_shuffle_i32x4(t0, t2, _MM_SHUFFLE(2, 0, 2, 0));
  sub[1] = _mm512_shuffle_i32x4(t0, t2, _MM_SHUFFLE(3, 1, 3, 1));
  sub[2] = _mm512_shuffle_i32x4(t1, t3, _MM_SHUFFLE(2, 0, 2, 0));
  sub[3] = _mm512_shuffle_i32x4(t1, t3, _MM_SHUFFLE(3, 1, 3, 1));
}

// The running state of one activation row against the tile's 16 weight rows.
struct RowAcc {
  __m512i run = _mm512_setzero_si512();  // sum u * q of the current group so far
  __m512 sum = _mm512_setzero_ps();      // float32 sum of the finished groups
};

// Zero points and scales of one group for the tile's rows.
struct GroupParams {
  __m512i z;
  __m512 s;
  int64_t group;
};

// Where the walk over subgroups stands; the same for every activation row.
class GroupWalk {
 public:
  GroupWalk(const Tile& t, int64_t n, int rows)
      : t_(t), n_(n), valid_(first_lanes(rows)), per_group_(subgroups_per_group(t)),
        total_(t.G == 0 ? 0 : (t.K + kSubgroup - 1) / kSubgroup),
        index_(_mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                  _mm512_set1_epi32(static_cast<int>(t.G)))) {}

  // Subgroups of block b, and for each one whether it ends a group and that
  // group's parameters.
  int block(int64_t b, bool (&ends)[4], GroupParams (&params)[4]) {
    const int count = static_cast<int>(min64(4, total_ - 4 * b));
    for (int i = 0; i < count; ++i) {
      ends[i] = ++in_group_ == per_group_;
      if (!ends[i]) continue;
      in_group_ = 0;
      const int64_t offset = n_ * t_.G + group_;
      params[i].group = group_++;
      params[i].s = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid_, index_, t_.w_scale + offset, 4);
      params[i].z = t_.w_zero == nullptr
                        ? _mm512_set1_epi32(8)
                        : _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid_, index_, t_.w_zero + offset, 4);
      bad_ = _mm512_or_si512(bad_, _mm512_andnot_si512(_mm512_set1_epi32(15), params[i].z));
    }
    return count;
  }

  bool zero_points_ok() const { return _mm512_test_epi32_mask(bad_, bad_) == 0; }

 private:
  const Tile& t_;
  int64_t n_;
  __mmask16 valid_;
  int64_t per_group_, total_;
  __m512i index_;  // lane r: r * G, the offset of row r's parameters
  int64_t in_group_ = 0, group_ = 0;
  __m512i bad_ = _mm512_setzero_si512();
};

// Folds one block's subgroup sums of activation row m into its state.
inline void absorb(const Tile& t, int64_t m, RowAcc& acc, const __m512i (&v)[kRows], int count, const bool (&ends)[4],
                   const GroupParams (&params)[4]) {
  __m512i sub[4];
  subgroup_sums(v, sub);
  for (int i = 0; i < count; ++i) {
    acc.run = _mm512_add_epi32(acc.run, sub[i]);
    if (!ends[i]) continue;
    const __m512i zq = _mm512_mullo_epi32(params[i].z, _mm512_set1_epi32(t.qgsum[m * t.G + params[i].group]));
    const __m512 d = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc.run, zq));
    acc.sum = _mm512_add_ps(acc.sum, _mm512_mul_ps(d, params[i].s));
    acc.run = _mm512_setzero_si512();
  }
}

inline void store_row(const Tile& t, int64_t m, int64_t n, int rows, const RowAcc& acc) {
  const __mmask16 valid = first_lanes(rows);
  __m512 v = _mm512_mul_ps(_mm512_set1_ps(t.x_scale[m]), acc.sum);
  if (t.bias != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(valid, t.bias + n));
  _mm512_mask_storeu_ps(t.y + m * t.N + n, valid, v);
}

// Low and high nibbles of bytes [64b, 64b + 64) of a packed row (zeros past its end).
inline void unpack(const uint8_t* row, int64_t Kh, int64_t b, __m512i& lo, __m512i& hi) {
  const int64_t left = Kh - 64 * b;
  const __m512i p = left >= 64 ? _mm512_loadu_si512(row + 64 * b)
                               : _mm512_maskz_loadu_epi8(_bzhi_u64(~0ULL, static_cast<unsigned>(left)), row + 64 * b);
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  lo = _mm512_and_si512(p, nibble);
  hi = _mm512_and_si512(_mm512_srli_epi16(p, 4), nibble);
}

// One activation row against rows [n, n + rows): weights streamed once.
bool gemv16(const Tile& t, int64_t m, int64_t n, int rows) {
  GroupWalk walk(t, n, rows);
  RowAcc acc;
  // Sixteen row streams are more than the hardware prefetchers follow: while
  // this tile runs, the next tile's rows (one contiguous range) are
  // prefetched into L2 front to back, a slice per block.
  const int64_t blocks = t.Kb / kBlock;
  const char* next = reinterpret_cast<const char*>(t.w + (n + rows) * t.Kh);
  const int64_t next_bytes = min64(kRows, t.n_end - n - rows) * t.Kh;
  const int64_t slice = (kRows * t.Kh / blocks + 63) / 64 * 64;
  int64_t prefetched = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    for (const int64_t end = min64(next_bytes, prefetched + slice); prefetched < end; prefetched += 64) {
      _mm_prefetch(next + prefetched, _MM_HINT_T1);
    }
    bool ends[4];
    GroupParams params[4];
    const int count = walk.block(b, ends, params);
    const int8_t* a = activation_block(t, m, b);
    const __m512i even = _mm512_loadu_si512(a);
    const __m512i odd = _mm512_loadu_si512(a + 64);
    __m512i v[kRows];
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      v[r] = _mm512_setzero_si512();
      if (r >= rows) continue;
      __m512i lo, hi;
      unpack(t.w + (n + r) * t.Kh, t.Kh, b, lo, hi);
      v[r] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(v[r], lo, even), hi, odd);
    }
    absorb(t, m, acc, v, count, ends, params);
  }
  store_row(t, m, n, rows, acc);
  return walk.zero_points_ok();
}

// Several activation rows: the weights are turned around instead, so that a
// lane is a weight row and no per-row reduction is needed. Per 128-K block the
// 16 rows' 64 packed bytes are transposed as dwords: w[d] lane r = bytes
// 4d .. 4d + 3 of row r, whose low nibbles are K = 8d, 8d + 2, 8d + 4, 8d + 6
// and high nibbles the odd K between: exactly dword d of the even and of the
// odd half of the activation block, broadcast. Each activation row then
// accumulates 32 vpdpbusd per block straight into its lane-per-row group sum;
// the transpose is paid once per block for all activation rows.

// out[d] lane r = dword d of v[r]: the 16 x 16 dword transpose.
inline void transpose16(__m512i (&v)[kRows]) {
  __m512i a[kRows];  // 128-bit lane j: dwords 4j + {0,1} (even a) or 4j + {2,3} (odd a) of v[2i], v[2i + 1]
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
  }
  __m512i b[kRows];  // b[4i + c] 128-bit lane j: dword 4j + c of v[4i .. 4i + 3]
  for (int i = 0; i < 4; ++i) {
    b[4 * i + 0] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {  // 4 x 4 transpose of 128-bit lanes: v[4j + c] lane i = b[4i + c] lane j
    const __m512i t0 = _mm512_shuffle_i32x4(b[c], b[4 + c], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t1 = _mm512_shuffle_i32x4(b[c], b[4 + c], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i t2 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t3 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], _MM_SHUFFLE(3, 2, 3, 2));
    v[c] = _mm512_shuffle_i32x4(t0, t2, _MM_SHUFFLE(2, 0, 2, 0));
    v[4 + c] = _mm512_shuffle_i32x4(t0, t2, _MM_SHUFFLE(3, 1, 3, 1));
    v[8 + c] = _mm512_shuffle_i32x4(t1, t3, _MM_SHUFFLE(2, 0, 2, 0));
    v[12 + c] = _mm512_shuffle_i32x4(t1, t3, _MM_SHUFFLE(3, 1, 3, 1));
  }
}

// Block b of rows [n, n + rows) turned around: w[2d] the low nibbles of
// w[d] above, w[2d + 1] the high ones.
inline void transposed_block(const Tile& t, int64_t n, int rows, int64_t b, __m512i* w) {
  __m512i v[kRows];
  for (int r = 0; r < kRows; ++r) {
    const int64_t left = t.Kh - 64 * b;
    const uint8_t* p = t.w + (n + r) * t.Kh + 64 * b;
    v[r] = r >= rows    ? _mm512_setzero_si512()
           : left >= 64 ? _mm512_loadu_si512(p)
                        : _mm512_maskz_loadu_epi8(_bzhi_u64(~0ULL, static_cast<unsigned>(left)), p);
  }
  transpose16(v);
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  for (int d = 0; d < kRows; ++d) {
    w[2 * d] = _mm512_and_si512(v[d], nibble);
    w[2 * d + 1] = _mm512_and_si512(_mm512_srli_epi16(v[d], 4), nibble);
  }
}

inline __m512i broadcast_dword(const int8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, sizeof v);
  return _mm512_set1_epi32(v);
}

// MC activation rows from m0 against one transposed block: run[i] lane r is
// the integer sum of the current group, sum[i] the float sum of the finished ones.
template <int MC>
void absorb_transposed(const Tile& t, int64_t m0, int64_t b, const __m512i* w, int count, const bool (&ends)[4],
                       const GroupParams (&params)[4], __m512i* run, __m512* sum) {
  const int8_t* a = activation_block(t, m0, b);
  __m512i acc[MC];
#pragma GCC unroll 16
  for (int i = 0; i < MC; ++i) acc[i] = run[i];
  for (int j = 0; j < count; ++j) {
#pragma GCC unroll 4
    for (int d = 4 * j; d < 4 * j + 4; ++d) {
#pragma GCC unroll 16
      for (int i = 0; i < MC; ++i) {
        acc[i] = _mm512_dpbusd_epi32(acc[i], w[2 * d], broadcast_dword(a + i * kBlock + 4 * d));
        acc[i] = _mm512_dpbusd_epi32(acc[i], w[2 * d + 1], broadcast_dword(a + i * kBlock + 64 + 4 * d));
      }
    }
    if (!ends[j]) continue;
#pragma GCC unroll 16
    for (int i = 0; i < MC; ++i) {
      const __m512i zq = _mm512_mullo_epi32(params[j].z, _mm512_set1_epi32(t.qgsum[(m0 + i) * t.G + params[j].group]));
      const __m512 d = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i], zq));
      sum[i] = _mm512_add_ps(sum[i], _mm512_mul_ps(d, params[j].s));
      acc[i] = _mm512_setzero_si512();
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MC; ++i) run[i] = acc[i];
}

// Activation rows per pass: one register accumulator each.
constexpr int64_t kMaxM = 16;

bool gemm16(const Tile& t, int64_t n, int rows) {
  alignas(64) __m512i w[2 * kRows];
  bool ok = true;
  for (int64_t m0 = t.m_begin; m0 < t.m_end; m0 += kMaxM) {
    const int64_t m_count = min64(kMaxM, t.m_end - m0);
    GroupWalk walk(t, n, rows);
    __m512i run[kMaxM];
    __m512 sum[kMaxM];
    for (int64_t i = 0; i < kMaxM; ++i) {
      run[i] = _mm512_setzero_si512();
      sum[i] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < t.Kb / kBlock; ++b) {
      bool ends[4];
      GroupParams params[4];
      const int count = walk.block(b, ends, params);
      transposed_block(t, n, rows, b, w);
      // m_count split into 8 + 4 + 2 + 1 passes below 16.
      int64_t i = 0;
      if (m_count == 16) {
        absorb_transposed<16>(t, m0, b, w, count, ends, params, run, sum);
        i = 16;
      }
      for (int chunk = 8; chunk >= 1; chunk /= 2) {
        if (m_count - i < chunk) continue;
        switch (chunk) {
          case 8: absorb_transposed<8>(t, m0 + i, b, w, count, ends, params, run + i, sum + i); break;
          case 4: absorb_transposed<4>(t, m0 + i, b, w, count, ends, params, run + i, sum + i); break;
          case 2: absorb_transposed<2>(t, m0 + i, b, w, count, ends, params, run + i, sum + i); break;
          default: absorb_transposed<1>(t, m0 + i, b, w, count, ends, params, run + i, sum + i); break;
        }
        i += chunk;
      }
    }
    for (int64_t i = 0; i < m_count; ++i) {
      RowAcc acc;
      acc.sum = sum[i];
      store_row(t, m0 + i, n, rows, acc);
    }
    ok = ok && walk.zero_points_ok();
  }
  return ok;
}

// One activation row with groups of exactly one block (g = 128, the common
// case) and G <= kMaxRowGroups: each weight row is read front to back on its
// own, one sequential stream like the int8 gemv, with no software prefetch.
// Sixteen blocks give sixteen v, reduced together (subgroup_sums + 3 adds)
// into the group sums of that stretch, lane j = group j; the row's zero
// points and scales for them are contiguous. The float products of 16 rows
// are kept and turned around (transpose16), so the in-order float sum over
// the groups runs with lane = row, as in the other paths.
constexpr int64_t kMaxRowGroups = 256;

bool gemv_rows(const Tile& t, int64_t m) {
  alignas(64) float prod[kRows][kMaxRowGroups];
  const int32_t* qgsum = t.qgsum + m * t.G;
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  __m512i bad = _mm512_setzero_si512();
  for (int64_t n0 = t.n_begin; n0 < t.n_end; n0 += kRows) {
    const int rows = static_cast<int>(min64(kRows, t.n_end - n0));
    for (int r = 0; r < kRows; ++r) {
      const int64_t n = n0 + r;
      for (int64_t j0 = 0; j0 < t.G; j0 += 16) {
        if (r >= rows) {
          _mm512_store_ps(prod[r] + j0, _mm512_setzero_ps());
          continue;
        }
        const int count = static_cast<int>(min64(16, t.G - j0));
        __m512i v[kRows];
#pragma GCC unroll 16
        for (int i = 0; i < kRows; ++i) {
          v[i] = _mm512_setzero_si512();
          if (i >= count) continue;
          const __m512i p = _mm512_loadu_si512(t.w + n * t.Kh + 64 * (j0 + i));
          const int8_t* a = activation_block(t, m, j0 + i);
          v[i] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(v[i], _mm512_and_si512(p, nibble), _mm512_loadu_si512(a)),
                                     _mm512_and_si512(_mm512_srli_epi16(p, 4), nibble), _mm512_loadu_si512(a + 64));
        }
        __m512i sub[4];
        subgroup_sums(v, sub);
        const __m512i sums = _mm512_add_epi32(_mm512_add_epi32(sub[0], sub[1]), _mm512_add_epi32(sub[2], sub[3]));
        const __mmask16 valid = first_lanes(count);
        const __m512i z = t.w_zero == nullptr ? _mm512_set1_epi32(8)
                                              : _mm512_maskz_loadu_epi32(valid, t.w_zero + n * t.G + j0);
        bad = _mm512_or_si512(bad, _mm512_andnot_si512(_mm512_set1_epi32(15), z));
        const __m512i d = _mm512_sub_epi32(sums, _mm512_mullo_epi32(z, _mm512_maskz_loadu_epi32(valid, qgsum + j0)));
        const __m512 s = _mm512_maskz_loadu_ps(valid, t.w_scale + n * t.G + j0);
        _mm512_store_ps(prod[r] + j0, _mm512_mul_ps(_mm512_cvtepi32_ps(d), s));
      }
    }
    RowAcc acc;
    for (int64_t j0 = 0; j0 < t.G; j0 += 16) {
      __m512i col[kRows];
      for (int r = 0; r < kRows; ++r) col[r] = _mm512_castps_si512(_mm512_load_ps(prod[r] + j0));
      transpose16(col);
      const int count = static_cast<int>(min64(16, t.G - j0));
      for (int j = 0; j < count; ++j) acc.sum = _mm512_add_ps(acc.sum, _mm512_castsi512_ps(col[j]));
    }
    store_row(t, m, n0, rows, acc);
  }
  return _mm512_test_epi32_mask(bad, bad) == 0;
}

}  // namespace

bool tile_avx512_vnni(const Tile& t) {
  if (t.m_end - t.m_begin == 1 && t.group == kBlock && t.G <= kMaxRowGroups) return gemv_rows(t, t.m_begin);
  bool ok = true;
  for (int64_t n = t.n_begin; n < t.n_end; n += kRows) {
    const int rows = static_cast<int>(min64(kRows, t.n_end - n));
    if (t.m_end - t.m_begin == 1) {
      ok = gemv16(t, t.m_begin, n, rows) && ok;
    } else {
      ok = gemm16(t, n, rows) && ok;
    }
  }
  return ok;
}

}  // namespace w4a8_linear
}  // namespace slimops
