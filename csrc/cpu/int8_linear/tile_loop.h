// Walks a GemmTile in register-sized micro tiles of up to MR rows x NR columns.
// Each ISA supplies a Kernel class whose run<mr, nr>(t, m, n) computes and
// stores y[m, m + mr) x [n, n + nr) for every edge shape mr <= MR, nr <= NR.
// Included by the SIMD translation units only; internal linkage for the same
// reason as the helpers in kernels.h.
#pragma once

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
  for (int64_t n = t.n_begin; n < t.n_end; n += NR) {
    const int nr = t.n_end - n < NR ? static_cast<int>(t.n_end - n) : NR;
    for (int64_t m = t.m_begin; m < t.m_end; m += MR) {
      const int mr = t.m_end - m < MR ? static_cast<int>(t.m_end - m) : MR;
      micro[(mr - 1) * NR + (nr - 1)](t, m, n);
    }
  }
}

}  // namespace
}  // namespace int8_linear
}  // namespace slimops
