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

}  // namespace slimops
