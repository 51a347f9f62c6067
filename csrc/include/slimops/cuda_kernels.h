// Torch-free CUDA entry points of slimops. Plain pointers, sizes and a stream;
// the Python layer owns tensors, devices and dtype checks.
#pragma once

#include <cstdint>

// Element types accepted by slimops_quantize_per_token_cuda.
enum SlimopsDtype : int { SLIMOPS_F32 = 0, SLIMOPS_F16 = 1, SLIMOPS_BF16 = 2 };

// Per-row symmetric int8 quantization of a [rows, cols] matrix on the GPU.
//   x: device pointer, row r starts at x + r * x_row_stride (elements, >= 0),
//      columns contiguous; x_dtype is a SlimopsDtype.
//   q: device int8 [rows, cols], contiguous. scale: device float32 [rows].
//   stream: a cudaStream_t (nullptr = the legacy default stream).
// Per row, in float32: amax = max|x|; scale = amax / 127;
// q = clamp(rint(x * (127 / amax)), -127, 127) with round-half-to-even.
// amax == 0 -> q = 0, scale = 0. A row holding NaN or Inf -> q = 0, scale = NaN.
// Returns 0 once the kernel is enqueued, or a cudaError_t value: invalid
// arguments (unknown dtype, negative sizes or stride, sizes whose indexing
// would overflow) give cudaErrorInvalidValue and launch nothing.
int slimops_quantize_per_token_cuda(const void* x, int x_dtype, int64_t rows, int64_t cols,
                                    int64_t x_row_stride, int8_t* q, float* scale, void* stream);
