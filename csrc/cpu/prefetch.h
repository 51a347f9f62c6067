// Software prefetch for kernels that stream a weight once. The hardware
// prefetcher alone left a cold weight (one not in cache) 1.1-1.5x slower to
// stream than a hot one in the sparse kernels; asking a fixed number of
// elements ahead closes most of that gap.
#pragma once

#include <cstdint>

namespace slimops {

// Elements ahead of the one being read. Tried at K = N = 4096: on the AMD
// EPYC, 90% CSR, 256 and 2048 were slower than 512; on the AMX Xeon, 2:4 at
// M=1, 1024 and 2048 beat 512 by ~10% and CSR did not care; on the Zen 2,
// CSR 90% at M=1 and 2 took the same time (within 3%) at 512, 1024 and 2048.
constexpr int64_t kStreamPrefetchElements = 1024;

// Into L2 (prefetcht1): on the Xeon, 2:4 at M=1 streamed ~7% faster than
// into L1 (prefetcht0), and prefetchnta halved the speed. Addresses past an
// array's end are fine to prefetch (a prefetch never faults); they are
// computed as integers, not as out-of-range pointers.
[[gnu::always_inline]] inline void prefetch_at(const void* base, int64_t byte_offset) {
  __builtin_prefetch(
      reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(base) + static_cast<uintptr_t>(byte_offset)), 0,
      /*locality=*/2);
}

// Element `index + kStreamPrefetchElements` of an array of T.
template <typename T>
[[gnu::always_inline]] inline void prefetch_ahead_of(const T* array, int64_t index) {
  prefetch_at(array, (index + kStreamPrefetchElements) * static_cast<int64_t>(sizeof(T)));
}

}  // namespace slimops
