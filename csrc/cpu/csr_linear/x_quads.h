// x at four checked (non-negative, in-range) column indices as one xmm, for
// the gather kernels' full blocks: scalar loads merged by shuffles. On Zen 4
// that is ~1.4x the rate of vgatherdps, which takes ~20 cycles for 16 lanes
// and was the kernels' limit; on the Zen 2 the gathers ran CSR 90% at M=1
// 1.5x longer. The indices are read as 64-bit words and taken
// apart in registers (one load per four int16 ones). Internal linkage:
// compiled per ISA, like kernels.h.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace slimops {
namespace csr_linear {
namespace {

inline __m128 x_quad_of(__m128 e0, __m128 e1, __m128 e2, __m128 e3) {
  return _mm_movelh_ps(_mm_unpacklo_ps(e0, e1), _mm_unpacklo_ps(e2, e3));
}

inline __m128 x_quad(const float* x, const int16_t* col) {
  uint64_t f;
  std::memcpy(&f, col, sizeof(f));
  return x_quad_of(_mm_load_ss(x + (f & 0xffff)), _mm_load_ss(x + ((f >> 16) & 0xffff)),
                   _mm_load_ss(x + ((f >> 32) & 0xffff)), _mm_load_ss(x + (f >> 48)));
}

inline __m128 x_quad(const float* x, const int32_t* col) {
  uint64_t f[2];
  std::memcpy(f, col, sizeof(f));
  return x_quad_of(_mm_load_ss(x + (f[0] & 0xffffffff)), _mm_load_ss(x + (f[0] >> 32)),
                   _mm_load_ss(x + (f[1] & 0xffffffff)), _mm_load_ss(x + (f[1] >> 32)));
}

// Eight lanes: x at col[0 .. 8).
template <typename Idx>
inline __m256 x_octet(const float* x, const Idx* col) {
  return _mm256_insertf128_ps(_mm256_castps128_ps256(x_quad(x, col)), x_quad(x, col + 4), 1);
}

}  // namespace
}  // namespace csr_linear
}  // namespace slimops
