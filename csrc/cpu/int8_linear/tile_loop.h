// Walks a GemmTile in register-sized micro tiles of up to MR rows x NR columns.
// Each ISA supplies a Kernel class whose run<mr, nr>(t, m, n) computes and
// stores y[m, m + mr) x [n, n + nr) for every edge shape mr <= MR, nr <= NR.
// Included by the SIMD translation units only; internal linkage for the same
// reason as the helpers in kernels.h.
#pragma once

#include <xmmintrin.h>

#include <array>
#include <utility>

#include "kernels.h"

namespace slimops {
namespace int8_linear {
namespace {

using MicroFn = void (*)(const GemmTile& t, int64_t m, int64_t n);

// Entry (mr - 1) * NR + (nr - 1) is Kernel::run<mr, nr>.
template <int MR, int NR, typename Kernel, size_t... I>
constexpr std::array<MicroFn, MR * NR> micro_table(std::index_sequence<I...>) {
  return {&Kernel::template run<static_cast<int>(I) / NR + 1, static_cast<int>(I) % NR + 1>...};
}

template <int MR, int NR, typename Kernel>
void walk_tile(const GemmTile& t) {
  static constexpr std::array<MicroFn, MR * NR> micro =
      micro_table<MR, NR, Kernel>(std::make_index_sequence<MR * NR>());
  // While the row groups of activations pass over NR weight rows, the next
  // NR rows are prefetched into L2 a slice per micro tile; otherwise the first
  // micro tile of every column group waits on DRAM.
  const int64_t row_groups = (t.m_end - t.m_begin + MR - 1) / MR;
  const int64_t slice = (NR * t.K / row_groups + 63) / 64 * 64;
  for (int64_t n = t.n_begin; n < t.n_end; n += NR) {
    const int nr = t.n_end - n < NR ? static_cast<int>(t.n_end - n) : NR;
    const int64_t next_rows = min64(NR, t.n_end - n - nr);
    const char* next = reinterpret_cast<const char*>(t.w + (n + nr) * t.K);
    const int64_t next_bytes = next_rows > 0 ? next_rows * t.K : 0;
    int64_t prefetched = 0;
    for (int64_t m = t.m_begin; m < t.m_end; m += MR) {
      const int mr = t.m_end - m < MR ? static_cast<int>(t.m_end - m) : MR;
      for (const int64_t end = min64(next_bytes, prefetched + slice); prefetched < end; prefetched += 64) {
        _mm_prefetch(next + prefetched, _MM_HINT_T1);
      }
      micro[(mr - 1) * NR + (nr - 1)](t, m, n);
    }
  }
}

}  // namespace
}  // namespace int8_linear
}  // namespace slimops
