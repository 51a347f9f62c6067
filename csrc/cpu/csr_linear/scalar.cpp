// Portable path: plain loops compiled without ISA flags, and the readable
// statement of the float order every SIMD path follows.
#include <cmath>

#include "kernels.h"

namespace slimops {
namespace csr_linear {
namespace {

struct ScalarKernel {
  template <int mr, typename T, typename Idx>
  static bool run(const Rows& r, const T* values, const Idx* col, int64_t begin, int64_t end, int64_t m,
                  int64_t n) {
    for (int i = 0; i < mr; ++i) {
      const float* a = r.x + (m + i) * r.x_row_stride;
      float p[kCsrLanes] = {};
      for (int64_t j = begin; j < end; ++j) {
        const int32_t c = col[j];
        if (static_cast<uint32_t>(c) >= r.index_limit) return false;
        float& lane = p[(j - begin) % kCsrLanes];
        lane = std::fma(a[c], static_cast<float>(values[j]), lane);
      }
      r.y[(m + i) * r.N + n] = finish_output(p, r, n);
    }
    return true;
  }
};

}  // namespace

bool rows_scalar(const Rows& r) { return walk_rows_any_values<kCsrGatherMaxRows, ScalarKernel>(r); }

}  // namespace csr_linear
}  // namespace slimops
