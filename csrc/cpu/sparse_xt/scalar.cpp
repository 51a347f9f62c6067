// Portable path: tiles of one activation row, plain floats.
#include <cmath>

#include "columns.h"
#include "kernel.h"

namespace slimops {
namespace sparse_xt {
namespace {

struct Scalar : PortableColumns {
  using V = float;
  static constexpr int kWidth = 1;
  static V zero() { return 0.0f; }
  static V set1(float f) { return f; }
  static V load(const float* p) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static V add(V a, V b) { return a + b; }
  static V mul(V a, V b) { return a * b; }
  static V fma(V a, V b, V c) { return std::fma(a, b, c); }
};

}  // namespace

bool csr_scalar(const Tiles& t, const CsrWeight& w) { return run_tiles<Scalar>(t, w); }
bool bsr_scalar(const Tiles& t, const BsrWeight& w) { return run_tiles<Scalar>(t, w); }
bool nm_scalar(const Tiles& t, const NmWeight& w) { return run_tiles<Scalar>(t, w); }

}  // namespace sparse_xt
}  // namespace slimops
