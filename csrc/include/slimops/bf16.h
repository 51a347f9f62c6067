// bfloat16 rounding on the host, torch-free: the rounding every slimops CPU
// path that works in bf16 uses, and the one torch's float -> bfloat16 cast uses.
#pragma once

#include <cstdint>
#include <cstring>

namespace slimops {

// Upper 16 bits of v rounded to nearest, ties to even; a NaN stays a (quiet) NaN.
inline uint16_t bf16_bits(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// v rounded to the nearest bfloat16, as a float (exact).
inline float round_to_bf16(float v) {
  const uint32_t bits = uint32_t{bf16_bits(v)} << 16;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

}  // namespace slimops
