// Per-call scratch buffers of the CPU entry points: nullptr (not an
// exception) when memory runs out, so the caller can return kOutOfMemory.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <type_traits>

namespace slimops {

// Scratch starts on a cache line: the kernels read it in 64-byte vectors, and
// malloc's 16-byte alignment made every one of them straddle two lines in
// some processes and not in others (the sparse xT kernel ran 1.3x slower).
constexpr size_t kScratchAlignment = 64;

struct AlignedDelete {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
using ScratchPtr = std::unique_ptr<T[], AlignedDelete>;

// Trivial element types only: the memory is not constructed.
template <typename T>
ScratchPtr<T> scratch(int64_t n) {
  static_assert(std::is_trivial<T>::value, "scratch holds plain numbers");
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T);
  const size_t rounded = (bytes + kScratchAlignment - 1) / kScratchAlignment * kScratchAlignment;
  return ScratchPtr<T>(static_cast<T*>(std::aligned_alloc(kScratchAlignment, rounded)));
}

// A buffer of at least n elements owned by the calling thread and kept for
// its later calls (Tag tells apart the buffers of one thread), or nullptr when
// memory runs out. Per-call allocations of hundreds of KiB come from fresh
// pages each time (mmap), whose faults cost more than a small layer's
// arithmetic. The buffer keeps its largest size until the thread ends.
// The Tag of each thread_buffer: one list, so no two buffers that may be held
// at once share one.
enum ScratchTag : int {
  kScratchDwsepWeights = 1,
  kScratchDwsepTiles = 2,
  kScratchDwsepTaskTile = 3,
  kScratchSparseTiles = 4,
  kScratchSparseOutput = 5,
  kScratchBsrOffsets = 6,
};

template <typename T, int Tag>
T* thread_buffer(int64_t n) {
  thread_local ScratchPtr<T> buffer;
  thread_local int64_t capacity = 0;
  if (n > capacity) {
    buffer.reset();  // before the new one, so the peak is not both
    buffer = scratch<T>(n);
    capacity = buffer ? n : 0;
  }
  return buffer.get();
}

}  // namespace slimops
