// Per-ISA building blocks of int8_linear; int8_linear.cpp tiles the work and
// picks the implementation for the active ISA.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace slimops {
namespace int8_linear {

// One row of per-token quantization (semantics in slimops/int8_linear.h).
// qsum receives sum_k q[k], which the VNNI kernel needs for its unsigned shift.
// static_scale > 0 quantizes with that fixed scale instead of max|x| / 127.
using QuantizeRowFn = void (*)(const float* x, int64_t K, float static_scale, int8_t* q, float* scale,
                               int32_t* qsum);

// A rectangle [m_begin, m_end) x [n_begin, n_end) of the output.
struct GemmTile {
  const int8_t* q;        // [M, K] quantized activations
  const int32_t* qsum;    // [M]
  const float* x_scale;   // [M]
  const int8_t* w;        // [N, K]
  const float* w_scale;   // [N]
  const float* bias;      // [N] or null
  float* y;               // [M, N]
  int64_t K, N;
  int64_t m_begin, m_end, n_begin, n_end;
};
using GemmTileFn = void (*)(const GemmTile& t);

// Helpers below live in an anonymous namespace on purpose: this header is
// compiled once per ISA with different target flags, and an inline function
// with external linkage would let the linker keep, say, the AVX-512 copy for
// the scalar path too.
namespace {

// std::min would be a template instantiated in every ISA's file: see above.
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// The float epilogue shared by every ISA, so all paths round identically.
inline float dequantize_output(int32_t acc, float x_scale, float w_scale, const float* bias, int64_t n) {
  const float v = static_cast<float>(acc) * x_scale * w_scale;
  return bias != nullptr ? v + bias[n] : v;
}

// Scale of one row: static_scale when positive, else max|x| / 127. Returns
// the multiplier (1 / static_scale, or 127 / amax), or 0 when the row
// quantizes to all zeros: amax 0, amax so small (below 127 / FLT_MAX) that
// 127 / amax overflows, or a NaN/Inf in the row, whose scale is then NaN so
// the output row reads NaN rather than a silent number.
inline float row_scale(float amax, bool finite, float static_scale, float* scale) {
  if (!finite) {
    *scale = std::numeric_limits<float>::quiet_NaN();
    return 0.0f;
  }
  if (static_scale > 0.0f) {
    *scale = static_scale;
    return 1.0f / static_scale;
  }
  *scale = amax / 127.0f;
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  return std::isfinite(inv) ? inv : 0.0f;
}

inline void zero_row(int64_t K, int8_t* q, int32_t* qsum) {
  if (K > 0) std::memset(q, 0, static_cast<size_t>(K));
  *qsum = 0;
}

}  // namespace

void quantize_row_scalar(const float* x, int64_t K, float static_scale, int8_t* q, float* scale, int32_t* qsum);
void gemm_tile_scalar(const GemmTile& t);

void quantize_row_avx2(const float* x, int64_t K, float static_scale, int8_t* q, float* scale, int32_t* qsum);
void gemm_tile_avx2(const GemmTile& t);

void quantize_row_avx512(const float* x, int64_t K, float static_scale, int8_t* q, float* scale, int32_t* qsum);
void gemm_tile_avx512_vnni(const GemmTile& t);

}  // namespace int8_linear
}  // namespace slimops
