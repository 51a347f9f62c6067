// Status codes returned by every torch-free entry point. The bindings turn a
// non-ok status into a Python exception; the Python layer validates inputs
// first, so these are the last line of defence against out-of-bounds access.
#pragma once

namespace slimops {

enum class Status : int {
  kOk = 0,
  kNegativeSize = 1,
  kSizeTooLarge = 2,
  kNullPointer = 3,
  kBadStride = 4,
  kOutOfMemory = 5,
  kBadZeroPoint = 6,
  kBadScale = 7,
  kBadIndexWidth = 8,
  kBadRowPtr = 9,
  kBadColumnIndex = 10,
  kBadShape = 11,
  kBadPosition = 12,
  kBadValues = 13,
};

inline const char* status_message(Status s) {
  switch (s) {
    case Status::kOk:
      return "ok";
    case Status::kNegativeSize:
      return "a size is negative";
    case Status::kSizeTooLarge:
      return "a size is larger than the kernel supports";
    case Status::kNullPointer:
      return "a required pointer is null";
    case Status::kBadStride:
      return "a row stride is smaller than the row length";
    case Status::kOutOfMemory:
      return "out of memory for the kernel's scratch buffer";
    case Status::kBadZeroPoint:
      return "a 4-bit zero point is outside 0..15";
    case Status::kBadScale:
      return "the static activation scale must be positive and finite";
    case Status::kBadIndexWidth:
      return "an index array has an unsupported element width";
    case Status::kBadRowPtr:
      return "row_ptr is corrupted (needs row_ptr[0] = 0, non-decreasing, row_ptr[N] = nnz)";
    case Status::kBadColumnIndex:
      return "a column index is outside [0, K)";
    case Status::kBadShape:
      return "the block shape or N:M pattern does not fit the weight";
    case Status::kBadPosition:
      return "an N:M position field is outside its group";
    case Status::kBadValues:
      return "values must be float32, float16 or bfloat16 (no scale), or int8 with a float32 scale per output row";
  }
  return "unknown error";
}

}  // namespace slimops
