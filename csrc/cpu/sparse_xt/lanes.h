// Steps 2 and 3 of the sparse float order (slimops/csr_linear.h) on one
// output's 16 partial sums: the fixed halving tree, then an int8 weight's
// scale (one rounding; null for float values) and the bias. Internal linkage:
// compiled per ISA (plain float operations, -ffp-contract=off).
#pragma once

#include <cstdint>

namespace slimops {
namespace sparse_xt {
namespace {

inline float sum_lanes(float (&p)[16], const float* scale, const float* bias, int64_t n) {
  for (int width = 8; width >= 1; width /= 2) {
    for (int l = 0; l < width; ++l) p[l] = p[l] + p[l + width];
  }
  const float sum = scale != nullptr ? p[0] * scale[n] : p[0];
  return bias != nullptr ? sum + bias[n] : sum;
}

}  // namespace
}  // namespace sparse_xt
}  // namespace slimops
