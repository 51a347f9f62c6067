// AVX2 path (compiled with -mavx2 -mfma).
//
// The structure of avx512_vnni.cpp on 8-lane vectors: a tile is 8 weight
// rows. vpmaddubsw multiplies the unsigned nibbles by the signed activations
// and adds pairs into int16 (at most 2 * 15 * 127 = 3810, so the low-nibble
// and high-nibble results can be added in int16 too: 7620, no saturation);
// vpmaddwd with ones widens to int32 lanes of 8 consecutive K values. A
// 128-K block gives two such vectors per row (chunks 0-7 and 8-15), and a
// transpose-and-add tree turns them into four vectors of 32-K subgroup sums,
// lane r = weight row r.
#include <immintrin.h>

#include "kernels.h"

namespace slimops {
namespace w4a8_linear {
namespace {

constexpr int kRows = 8;

// Lanes [0, count) set: the valid rows of a tile.
inline __m256i first_lanes(int64_t count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// For rows r = 4h .. 4h+3 (h = 0, 1) of v: result 128-bit lane j, element r % 4
// = sum of 128-bit lane j of v[r].
inline __m256i quad_sums(const __m256i* v) {
  const __m256i p0 = _mm256_add_epi32(_mm256_unpacklo_epi32(v[0], v[1]), _mm256_unpackhi_epi32(v[0], v[1]));
  const __m256i p1 = _mm256_add_epi32(_mm256_unpacklo_epi32(v[2], v[3]), _mm256_unpackhi_epi32(v[2], v[3]));
  return _mm256_add_epi32(_mm256_unpacklo_epi64(p0, p1), _mm256_unpackhi_epi64(p0, p1));
}

// lo[r]: chunks 0-7 of row r, hi[r]: chunks 8-15. sub[j] lane r = 32-K subgroup j of row r.
inline void subgroup_sums(const __m256i (&lo)[kRows], const __m256i (&hi)[kRows], __m256i (&sub)[4]) {
  const __m256i a0 = quad_sums(lo), a1 = quad_sums(lo + 4);
  const __m256i b0 = quad_sums(hi), b1 = quad_sums(hi + 4);
  sub[0] = _mm256_permute2x128_si256(a0, a1, 0x20);
  sub[1] = _mm256_permute2x128_si256(a0, a1, 0x31);
  sub[2] = _mm256_permute2x128_si256(b0, b1, 0x20);
  sub[3] = _mm256_permute2x128_si256(b0, b1, 0x31);
}

struct RowAcc {
  __m256i run = _mm256_setzero_si256();
  __m256 sum = _mm256_setzero_ps();
};

struct GroupParams {
  __m256i z;
  __m256 s;
  int64_t group;
};

class GroupWalk {
 public:
  GroupWalk(const Tile& t, int64_t n, int rows)
      : t_(t), n_(n), valid_(first_lanes(rows)), per_group_(subgroups_per_group(t)),
        total_(t.G == 0 ? 0 : (t.K + kSubgroup - 1) / kSubgroup),
        index_(_mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int>(t.G)))) {}

  int block(int64_t b, bool (&ends)[4], GroupParams (&params)[4]) {
    const int count = static_cast<int>(min64(4, total_ - 4 * b));
    for (int i = 0; i < count; ++i) {
      ends[i] = ++in_group_ == per_group_;
      if (!ends[i]) continue;
      in_group_ = 0;
      const int64_t offset = n_ * t_.G + group_;
      params[i].group = group_++;
      params[i].s = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), t_.w_scale + offset, index_,
                                             _mm256_castsi256_ps(valid_), 4);
      params[i].z = t_.w_zero == nullptr
                        ? _mm256_set1_epi32(8)
                        : _mm256_mask_i32gather_epi32(_mm256_setzero_si256(),
                                                      reinterpret_cast<const int*>(t_.w_zero + offset), index_,
                                                      valid_, 4);
      bad_ = _mm256_or_si256(bad_, _mm256_andnot_si256(_mm256_set1_epi32(15), params[i].z));
    }
    return count;
  }

  bool zero_points_ok() const { return _mm256_testz_si256(bad_, bad_) != 0; }

 private:
  const Tile& t_;
  int64_t n_;
  __m256i valid_;
  int64_t per_group_, total_;
  __m256i index_;
  int64_t in_group_ = 0, group_ = 0;
  __m256i bad_ = _mm256_setzero_si256();
};

inline void absorb(const Tile& t, int64_t m, RowAcc& acc, const __m256i (&lo)[kRows], const __m256i (&hi)[kRows],
                   int count, const bool (&ends)[4], const GroupParams (&params)[4]) {
  __m256i sub[4];
  subgroup_sums(lo, hi, sub);
  for (int i = 0; i < count; ++i) {
    acc.run = _mm256_add_epi32(acc.run, sub[i]);
    if (!ends[i]) continue;
    const __m256i zq = _mm256_mullo_epi32(params[i].z, _mm256_set1_epi32(t.qgsum[m * t.G + params[i].group]));
    const __m256 d = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc.run, zq));
    acc.sum = _mm256_add_ps(acc.sum, _mm256_mul_ps(d, params[i].s));
    acc.run = _mm256_setzero_si256();
  }
}

inline void store_row(const Tile& t, int64_t m, int64_t n, int rows, const RowAcc& acc) {
  const __m256i valid = first_lanes(rows);
  __m256 v = _mm256_mul_ps(_mm256_set1_ps(t.x_scale[m]), acc.sum);
  if (t.bias != nullptr) v = _mm256_add_ps(v, _mm256_maskload_ps(t.bias + n, valid));
  _mm256_maskstore_ps(t.y + m * t.N + n, valid, v);
}

// Nibbles of 32 packed bytes starting at byte `at` of a row of Kh bytes (zeros past its end).
inline void unpack32(const uint8_t* row, int64_t Kh, int64_t at, __m256i& lo, __m256i& hi) {
  __m256i p;
  if (Kh - at >= 32) {
    p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + at));
  } else {
    alignas(32) uint8_t tail[32] = {};
    for (int64_t i = 0; i < Kh - at; ++i) tail[i] = row[at + i];
    p = _mm256_load_si256(reinterpret_cast<const __m256i*>(tail));
  }
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  lo = _mm256_and_si256(p, nibble);
  hi = _mm256_and_si256(_mm256_srli_epi16(p, 4), nibble);
}

// Chunk sums of 32 packed bytes (nibbles wl, wh) against activations ae (even) and ao (odd).
inline __m256i chunk_sums(__m256i wl, __m256i wh, __m256i ae, __m256i ao) {
  const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(wl, ae), _mm256_maddubs_epi16(wh, ao));
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

inline __m256i load(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// One activation row against rows [n, n + rows): weights streamed once.
bool gemv8(const Tile& t, int64_t m, int64_t n, int rows) {
  GroupWalk walk(t, n, rows);
  RowAcc acc;
  for (int64_t b = 0; b < t.Kb / kBlock; ++b) {
    bool ends[4];
    GroupParams params[4];
    const int count = walk.block(b, ends, params);
    const int8_t* ab = activation_block(t, m, b);
    const __m256i e0 = load(ab), e1 = load(ab + 32), o0 = load(ab + 64), o1 = load(ab + 96);
    __m256i lo[kRows], hi[kRows];
    for (int r = 0; r < kRows; ++r) {
      lo[r] = hi[r] = _mm256_setzero_si256();
      if (r >= rows) continue;
      const uint8_t* row = t.w + (n + r) * t.Kh;
      __m256i wl, wh;
      unpack32(row, t.Kh, 64 * b, wl, wh);
      lo[r] = chunk_sums(wl, wh, e0, o0);
      unpack32(row, t.Kh, 64 * b + 32, wl, wh);
      hi[r] = chunk_sums(wl, wh, e1, o1);
    }
    absorb(t, m, acc, lo, hi, count, ends, params);
  }
  store_row(t, m, n, rows, acc);
  return walk.zero_points_ok();
}

constexpr int64_t kMaxM = 32;

// Activation rows [m_begin, m_end) against rows [n, n + rows): each block of
// weights is unpacked once (into a stack buffer) for up to kMaxM activation rows.
bool gemm8(const Tile& t, int64_t n, int rows) {
  bool ok = true;
  for (int64_t m0 = t.m_begin; m0 < t.m_end; m0 += kMaxM) {
    const int64_t m_count = min64(kMaxM, t.m_end - m0);
    GroupWalk walk(t, n, rows);
    RowAcc acc[kMaxM];
    for (int64_t b = 0; b < t.Kb / kBlock; ++b) {
      bool ends[4];
      GroupParams params[4];
      const int count = walk.block(b, ends, params);
      __m256i w[kRows][4];
      for (int r = 0; r < kRows; ++r) {
        for (__m256i& v : w[r]) v = _mm256_setzero_si256();
        if (r >= rows) continue;
        const uint8_t* row = t.w + (n + r) * t.Kh;
        unpack32(row, t.Kh, 64 * b, w[r][0], w[r][1]);
        unpack32(row, t.Kh, 64 * b + 32, w[r][2], w[r][3]);
      }
      for (int64_t i = 0; i < m_count; ++i) {
        const int8_t* ab = activation_block(t, m0 + i, b);
        const __m256i e0 = load(ab), e1 = load(ab + 32), o0 = load(ab + 64), o1 = load(ab + 96);
        __m256i lo[kRows], hi[kRows];
        for (int r = 0; r < kRows; ++r) {
          lo[r] = chunk_sums(w[r][0], w[r][1], e0, o0);
          hi[r] = chunk_sums(w[r][2], w[r][3], e1, o1);
        }
        absorb(t, m0 + i, acc[i], lo, hi, count, ends, params);
      }
    }
    for (int64_t i = 0; i < m_count; ++i) store_row(t, m0 + i, n, rows, acc[i]);
    ok = ok && walk.zero_points_ok();
  }
  return ok;
}

}  // namespace

bool tile_avx2(const Tile& t) {
  bool ok = true;
  for (int64_t n = t.n_begin; n < t.n_end; n += kRows) {
    const int rows = static_cast<int>(min64(kRows, t.n_end - n));
    if (t.m_end - t.m_begin == 1) {
      ok = gemv8(t, t.m_begin, n, rows) && ok;
    } else {
      ok = gemm8(t, n, rows) && ok;
    }
  }
  return ok;
}

}  // namespace w4a8_linear
}  // namespace slimops
