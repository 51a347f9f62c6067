// Per-call scratch buffers of the CPU entry points: nullptr (not an
// exception) when memory runs out, so the caller can return kOutOfMemory.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>

namespace slimops {

template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(new (std::nothrow) T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

// A buffer of at least n elements owned by the calling thread and kept for
// its later calls (Tag tells apart the buffers of one thread), or nullptr when
// memory runs out. Per-call allocations of hundreds of KiB come from fresh
// pages each time (mmap), whose faults cost more than a small layer's
// arithmetic. The buffer keeps its largest size until the thread ends.
// The Tag of each thread_buffer: one list, so no two buffers that may be held
// at once share one.
enum ScratchTag : int {
  kScratchDwsepDepthwiseWeights = 0,
  kScratchDwsepPointwiseWeights = 1,
  kScratchDwsepTiles = 2,
  kScratchDwsepTaskTile = 3,
  kScratchSparseTiles = 4,
  kScratchSparseOutput = 5,
};

template <typename T, int Tag>
T* thread_buffer(int64_t n) {
  thread_local std::unique_ptr<T[]> buffer;
  thread_local int64_t capacity = 0;
  if (n > capacity) {
    buffer.reset(new (std::nothrow) T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
    capacity = buffer ? n : 0;
  }
  return buffer.get();
}

}  // namespace slimops
