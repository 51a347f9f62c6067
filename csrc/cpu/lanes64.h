// The fixed reduction tree of 64 float32 partial sums shared by the kernels
// that define their float order over 64 lanes (w8a16_linear, w4a16_linear):
//   q[l] = (p[l] + p[l + 16]) + (p[l + 32] + p[l + 48])   for l < 16,
//   then halving: r[l] = q[l] + q[l + 8], r[l] + r[l + 4], ... to one sum.
// Plain float adds (-ffp-contract=off), so every ISA's copy rounds identically.
#pragma once

namespace slimops {
// Internal linkage on purpose: the header is compiled once per ISA with
// different target flags (see w8a16_linear/kernels.h).
namespace {

constexpr int kLanes64 = 64;

inline float reduce_lanes64(const float* p) {
  float r[16];
  for (int l = 0; l < 16; ++l) r[l] = (p[l] + p[l + 16]) + (p[l + 32] + p[l + 48]);
  for (int width = 8; width >= 1; width /= 2) {
    for (int l = 0; l < width; ++l) r[l] = r[l] + r[l + width];
  }
  return r[0];
}

}  // namespace
}  // namespace slimops
