// Portable path: the tile of kernel.h on one float at a time.
#include <cmath>
#include <cstring>

#include "kernel.h"

namespace slimops {
namespace dwsep_conv2d {
namespace {

struct Scalar {
  using V = float;
  using M = bool;
  static constexpr int kWidth = 1;
  static constexpr int kDepthwisePixels = 4;
  static M mask(int64_t n) { return n > 0; }
  static V zero() { return 0.0f; }
  static V set1(float f) { return f; }
  static V load(const float* p) { return *p; }
  static V load(const float* p, M m) { return m ? *p : 0.0f; }
  static void store(float* p, V v) { *p = v; }
  static void store(float* p, V v, M m) {
    if (m) *p = v;
  }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V div(V a, V b) { return a / b; }
  static V fma(V a, V b, V c) { return std::fma(a, b, c); }
  static V max(V a, V b) { return a > b ? a : b; }
  static V min(V a, V b) { return a < b ? a : b; }
  static V where_greater(V a, V b, V t, V f) { return a > b ? t : f; }
  static V round_even(V a) { return std::nearbyint(a); }
  static V times_pow2(V p, V n) {
    int32_t bits;
    std::memcpy(&bits, &p, sizeof bits);
    // A NaN n (from a NaN input, so p is NaN too) adds 0, as the SIMD paths' conversion to
    // 0x80000000 shifted left by 23 does; converting NaN to an integer is undefined in C++.
    const int32_t e = n == n ? static_cast<int32_t>(n) : 0;
    bits = static_cast<int32_t>(static_cast<uint32_t>(bits) + (static_cast<uint32_t>(e) << 23));
    std::memcpy(&p, &bits, sizeof p);
    return p;
  }
};

}  // namespace

void task_scalar(const DwsepShape& s, const Packed& pk, const Task& t) { run_task<Scalar, 4, 4>(s, pk, t); }

}  // namespace dwsep_conv2d
}  // namespace slimops
