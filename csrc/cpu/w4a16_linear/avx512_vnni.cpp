// AVX-512 path (compiled with the avx512_vnni level's flags; it uses F and BW).
//
// The 16 weight values of a group, bf16((u - z) * s) for u = 0..15, sit in one
// zmm, so dequantizing 16 nibbles is one vpermps (which reads only the low 4
// bits of each index: the low nibbles need no mask). A chunk of 16 packed
// bytes gives 16 low nibbles (the even k, layout positions 16c..16c+15) and 16
// high ones (the odd k, positions 64+16c..), FMA'd against the bf16-rounded
// activations of up to four rows into four zmm of partial sums per row:
// zmm 2h + c%2 holds lanes [16 (2h + c%2), +16) of the float order.
#include <immintrin.h>

#include <utility>

#include "kernels.h"

namespace slimops {
namespace w4a16_linear {
namespace {

constexpr int kMR = 4;

// bf16((iota - z) * s) for iota = 0..15, rounded like bf16_bits (ties to even, NaN kept quiet).
inline __m512 group_table(int32_t z, float s) {
  const __m512 iota = _mm512_set_ps(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512 v = _mm512_mul_ps(_mm512_sub_ps(iota, _mm512_set1_ps(static_cast<float>(z))), _mm512_set1_ps(s));
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  rounded = _mm512_mask_or_epi32(rounded, nan, bits, _mm512_set1_epi32(0x00400000));
  return _mm512_castsi512_ps(_mm512_and_si512(rounded, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}

// The 16 packed bytes of chunk k0 of row wr, zero past the packed row, as 16 epi32.
inline __m512i chunk_bytes(const Weight& wt, const uint8_t* wr, int64_t k0) {
  const int64_t off = k0 / 2, left = wt.Kh - off;
  const __m128i b = left >= 16 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + off))
                               : _mm_maskz_loadu_epi8(static_cast<__mmask16>(_bzhi_u32(0xffff, static_cast<unsigned>(left))), wr + off);
  return _mm512_cvtepu8_epi32(b);
}

using Tables = GroupTables<__m512, group_table>;

// The accumulators of mr activation rows are indexed only by template
// parameters (index_sequence, no loops over rows): GCC keeps an array in
// registers only when every index is a constant before unrolling.
struct Avx512Kernel {
  template <int A, size_t... I>
  [[gnu::always_inline]] static void fma_rows(const float* xblock, __m512 w_even, __m512 w_odd,
                                              __m512 (&acc)[sizeof...(I)][4], std::index_sequence<I...>) {
    ((acc[I][A] = _mm512_fmadd_ps(_mm512_loadu_ps(xblock + I * kBlock), w_even, acc[I][A]),
      acc[I][2 + A] = _mm512_fmadd_ps(_mm512_loadu_ps(xblock + I * kBlock + 64), w_odd, acc[I][2 + A])),
     ...);
  }

  // Chunk k0 of parity A (= (k0 / 32) % 2, known at compile time) for mr activation rows.
  template <int mr, int A>
  [[gnu::always_inline]] static bool chunk(const Tile& t, int64_t m, const uint8_t* wr, Tables& tables, int64_t k0,
                                           __m512 (&acc)[mr][4]) {
    const __m512* table;
    if (!tables.at(k0, &table)) return false;
    const __m512i u = chunk_bytes(t.wt, wr, k0);
    const __m512 w_even = _mm512_permutexvar_ps(u, *table);
    const __m512 w_odd = _mm512_permutexvar_ps(_mm512_srli_epi32(u, 4), *table);
    const float* xblock = t.xb + (k0 / kBlock * t.M + m) * kBlock + 16 * (k0 % kBlock / kChunk);
    fma_rows<A>(xblock, w_even, w_odd, acc, std::make_index_sequence<mr>());
    return true;
  }

  template <size_t... I>
  static void finish_rows(const Tile& t, int64_t m, int64_t n, const __m512 (&acc)[sizeof...(I)][4],
                          std::index_sequence<I...>) {
    alignas(64) float p[sizeof...(I)][kLanes64];
    ((_mm512_store_ps(p[I], acc[I][0]), _mm512_store_ps(p[I] + 16, acc[I][1]), _mm512_store_ps(p[I] + 32, acc[I][2]),
      _mm512_store_ps(p[I] + 48, acc[I][3])),
     ...);
    ((t.y[(m + I) * t.N + n] = finish_output(p[I], t.bias, n)), ...);
  }

  template <int mr>
  static bool run(const Tile& t, int64_t m, int64_t n) {
    const Weight& wt = t.wt;
    const uint8_t* wr = wt.w + n * wt.Kh;
    Tables tables(wt, n);
    __m512 acc[mr][4] = {};
    // No early return on a bad zero point: one exit keeps the accumulators in registers.
    bool ok = true;
    for (int64_t k0 = 0; k0 < wt.K; k0 += 2 * kChunk) {
      ok &= chunk<mr, 0>(t, m, wr, tables, k0, acc);
      if (k0 + kChunk < wt.K) ok &= chunk<mr, 1>(t, m, wr, tables, k0 + kChunk, acc);
    }
    if (!ok) return false;
    finish_rows(t, m, n, acc, std::make_index_sequence<mr>());
    return true;
  }
};

}  // namespace

bool tile_avx512(const Tile& t) { return walk_tile<kMR, Avx512Kernel>(t); }

bool dequant_avx512(const Rows& r) {
  const Weight& wt = r.wt;
  const __m512i high_half = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  for (int64_t n = r.n_begin; n < r.n_end; ++n) {
    const uint8_t* wr = wt.w + n * wt.Kh;
    uint16_t* out = r.out + n * wt.K;
    Tables tables(wt, n);
    int64_t k0 = 0;
    for (; k0 + kChunk <= wt.K; k0 += kChunk) {
      const __m512* table;
      if (!tables.at(k0, &table)) return false;
      const __m512i u = chunk_bytes(wt, wr, k0);
      const __m512i even = _mm512_castps_si512(_mm512_permutexvar_ps(u, *table));
      const __m512i odd = _mm512_castps_si512(_mm512_permutexvar_ps(_mm512_srli_epi32(u, 4), *table));
      // 32-bit lane j = bf16 of k0 + 2j (low half) and k0 + 2j + 1 (high half): natural order in memory.
      const __m512i pairs = _mm512_or_si512(_mm512_srli_epi32(even, 16), _mm512_and_si512(odd, high_half));
      _mm512_storeu_si512(out + k0, pairs);
    }
    if (!dequant_range(wt, n, k0, wt.K, out)) return false;
  }
  return true;
}

}  // namespace w4a16_linear
}  // namespace slimops
