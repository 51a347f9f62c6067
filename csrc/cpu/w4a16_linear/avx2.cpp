// AVX2 path (compiled with -mavx2 -mfma).
//
// As the AVX-512 path (see there), with the group's 16 weight values in two
// ymm: vpermps picks from both by the low 3 bits of a nibble and a blend on
// its bit 3 (shifted into the sign bit) chooses. The 64 lanes of the float
// order are eight ymm, so one activation row is done at a time: ymm
// 4h + 2 (c%2) + q holds lanes [8 (4h + 2 (c%2) + q), +8), q the half of the chunk.
#include <immintrin.h>

#include <cstring>

#include "kernels.h"

namespace slimops {
namespace w4a16_linear {
namespace {

// bf16 rounding of 8 floats, as bf16_bits (ties to even, NaN kept quiet), as floats.
inline __m256 round_bf16(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd));
  const __m256i quiet = _mm256_or_si256(bits, _mm256_set1_epi32(0x00400000));
  const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  const __m256 pick = _mm256_blendv_ps(_mm256_castsi256_ps(rounded), _mm256_castsi256_ps(quiet), nan);
  return _mm256_and_ps(pick, _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0xffff0000u))));
}

struct Table {
  __m256 low = _mm256_setzero_ps(), high = _mm256_setzero_ps();  // values of u = 0..7 and 8..15
};

inline Table group_table(int32_t z, float s) {
  const __m256 zs = _mm256_set1_ps(static_cast<float>(z)), sv = _mm256_set1_ps(s);
  const __m256 iota = _mm256_set_ps(7, 6, 5, 4, 3, 2, 1, 0);
  const __m256 eight = _mm256_set1_ps(8);
  return {round_bf16(_mm256_mul_ps(_mm256_sub_ps(iota, zs), sv)),
          round_bf16(_mm256_mul_ps(_mm256_sub_ps(_mm256_add_ps(iota, eight), zs), sv))};
}

// Table values of the nibbles in the low 4 bits of idx; bit3 holds bit 3 of each nibble in bit 31.
inline __m256 lookup(const Table& t, __m256i idx, __m256i bit3) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t.low, idx), _mm256_permutevar8x32_ps(t.high, idx),
                          _mm256_castsi256_ps(bit3));
}

using Tables = GroupTables<Table, group_table>;

// The 16 packed bytes of chunk k0, zero past the packed row.
inline const uint8_t* chunk_bytes(const Weight& wt, const uint8_t* wr, int64_t k0, uint8_t (&tail)[16]) {
  const int64_t off = k0 / 2, left = wt.Kh - off;
  if (left >= 16) return wr + off;
  std::memset(tail, 0, sizeof tail);
  std::memcpy(tail, wr + off, static_cast<size_t>(left));
  return tail;
}

// Weight values of bytes b[0..8): the low nibbles (even k) and the high ones (odd k).
inline void dequant8(const Table& table, const uint8_t* b, __m256* even, __m256* odd) {
  const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b)));
  *even = lookup(table, v, _mm256_slli_epi32(v, 28));
  *odd = lookup(table, _mm256_srli_epi32(v, 4), _mm256_slli_epi32(v, 24));
}

struct Avx2Kernel {
  // Chunk k0 of parity A (= (k0 / 32) % 2, known at compile time so that the
  // accumulators stay in registers).
  template <int A>
  [[gnu::always_inline]] static bool chunk(const Tile& t, int64_t m, const uint8_t* wr, Tables& tables, int64_t k0, __m256 (&acc)[8]) {
    const Table* table;
    if (!tables.at(k0, &table)) return false;
    uint8_t tail[16];
    const uint8_t* bytes = chunk_bytes(t.wt, wr, k0, tail);
    const float* xr = t.xb + (k0 / kBlock * t.M + m) * kBlock + 16 * (k0 % kBlock / kChunk);
#pragma GCC unroll 2
    for (int q = 0; q < 2; ++q) {
      __m256 even, odd;
      dequant8(*table, bytes + 8 * q, &even, &odd);
      acc[2 * A + q] = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 8 * q), even, acc[2 * A + q]);
      acc[4 + 2 * A + q] = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 64 + 8 * q), odd, acc[4 + 2 * A + q]);
    }
    return true;
  }

  template <int mr>
  static bool run(const Tile& t, int64_t m, int64_t n) {
    static_assert(mr == 1, "the AVX2 path takes one activation row at a time");
    const Weight& wt = t.wt;
    const uint8_t* wr = wt.w + n * wt.Kh;
    Tables tables(wt, n);
    __m256 acc[8];
    for (auto& a : acc) a = _mm256_setzero_ps();
    // No early return on a bad zero point: one exit keeps the accumulators in registers.
    bool ok = true;
    for (int64_t k0 = 0; k0 < wt.K; k0 += 2 * kChunk) {
      ok &= chunk<0>(t, m, wr, tables, k0, acc);
      if (k0 + kChunk < wt.K) ok &= chunk<1>(t, m, wr, tables, k0 + kChunk, acc);
    }
    if (!ok) return false;
    alignas(32) float p[kLanes64];
    for (int a = 0; a < 8; ++a) _mm256_store_ps(p + 8 * a, acc[a]);
    t.y[m * t.N + n] = finish_output(p, t.bias, n);
    return true;
  }
};

}  // namespace

bool tile_avx2(const Tile& t) { return walk_tile<1, Avx2Kernel>(t); }

bool dequant_avx2(const Rows& r) {
  const Weight& wt = r.wt;
  const __m256i high_half = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  for (int64_t n = r.n_begin; n < r.n_end; ++n) {
    const uint8_t* wr = wt.w + n * wt.Kh;
    uint16_t* out = r.out + n * wt.K;
    Tables tables(wt, n);
    int64_t k0 = 0;
    for (; k0 + kChunk <= wt.K; k0 += kChunk) {
      const Table* table;
      if (!tables.at(k0, &table)) return false;
      for (int q = 0; q < 2; ++q) {
        __m256 even, odd;
        dequant8(*table, wr + k0 / 2 + 8 * q, &even, &odd);
        // 32-bit lane j = bf16 of the even k (low half) and the odd k after it (high half).
        const __m256i pairs = _mm256_or_si256(_mm256_srli_epi32(_mm256_castps_si256(even), 16),
                                              _mm256_and_si256(_mm256_castps_si256(odd), high_half));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k0 + 16 * q), pairs);
      }
    }
    if (!dequant_range(wt, n, k0, wt.K, out)) return false;
  }
  return true;
}

}  // namespace w4a16_linear
}  // namespace slimops
