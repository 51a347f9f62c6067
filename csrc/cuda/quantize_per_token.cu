// Per-token (per-row) symmetric int8 quantization on the GPU. Torch-free.
//
// Contract (declared in slimops/cuda_kernels.h; matches slimops.reference.quantize_per_token):
//   for each row r of x [rows, cols] (row stride x_row_stride elements, columns contiguous),
//   all math in float32 with IEEE rounding (no fast-math shortcuts):
//     amax = max |x[r, :]|            (a NaN or Inf anywhere makes amax non-finite)
//     scale[r] = amax / 127           (__fdiv_rn)
//     q[r, c] = clamp(rint(x[r, c] * (127 / amax)), -127, 127)
//               (__fdiv_rn for 127 / amax, __fmul_rn, __float2int_rn = round half to even)
//     127 / amax not finite (amax == 0, or amax below 127 / FLT_MAX) -> q[r, :] = 0
//     amax not finite -> q[r, :] = 0, scale[r] = NaN  (so a linear layer's output row is NaN)
//   q is a contiguous int8 [rows, cols]; scale is float32 [rows].
//
// Work split: short rows (cols <= kWarpPerRowMaxCols) get one warp each, eight rows per
// 256-thread block, so a 64-wide row does not leave 224 threads idle; longer rows get a
// whole block so one row's bandwidth is spread over all of its warps. Each row is read
// twice (max, then quantize); the second read hits L1/L2, since a row is at most tens of KB.
// Loads are 16-byte vectors when the pointers, stride and cols allow it, else scalar.
#include "slimops/cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

namespace {

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int64_t kWarpPerRowMaxCols = 1024;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// fmaxf drops NaN operands; this max keeps them, so one NaN poisons the row's amax.
__device__ __forceinline__ float nan_max(float a, float b) { return (b > a || b != b) ? b : a; }

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Max over the THREADS_PER_ROW threads sharing a row; every one of them gets the result.
template <int THREADS_PER_ROW>
__device__ __forceinline__ float row_max(float v, float* warp_max) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  if constexpr (THREADS_PER_ROW > kWarpSize) {
    if (threadIdx.x % kWarpSize == 0) warp_max[threadIdx.x / kWarpSize] = v;
    __syncthreads();
    v = warp_max[0];
    for (int w = 1; w < THREADS_PER_ROW / kWarpSize; ++w) v = nan_max(v, warp_max[w]);
  }
  return v;
}

__device__ __forceinline__ int8_t quantize(float x, float inv) {
  const int v = __float2int_rn(__fmul_rn(x, inv));
  return static_cast<int8_t>(min(max(v, -127), 127));
}

// VEC elements per load (cols % VEC == 0, rows 16-byte aligned when VEC > 1).
template <typename T, int VEC, int THREADS_PER_ROW>
__global__ void __launch_bounds__(kThreads)
quantize_rows(const T* __restrict__ x, int64_t rows, int64_t cols, int64_t x_row_stride,
              int8_t* __restrict__ q, float* __restrict__ scale) {
  static_assert(THREADS_PER_ROW % kWarpSize == 0 && kThreads % THREADS_PER_ROW == 0, "row = whole warps");
  __shared__ float warp_max[kThreads / kWarpSize];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / THREADS_PER_ROW) +
                      threadIdx.x / THREADS_PER_ROW;
  if (row >= rows) return;  // whole warps leave together; a block-wide row is never past the end
  const int lane = threadIdx.x % THREADS_PER_ROW;
  const auto* x_row = reinterpret_cast<const Pack<T, VEC>*>(x + row * x_row_stride);
  auto* q_row = reinterpret_cast<Pack<int8_t, VEC>*>(q + row * cols);
  const int64_t packs = cols / VEC;

  float amax = 0.0f;
  for (int64_t i = lane; i < packs; i += THREADS_PER_ROW) {
    const Pack<T, VEC> p = x_row[i];
#pragma unroll
    for (int j = 0; j < VEC; ++j) amax = nan_max(amax, fabsf(to_float(p.v[j])));
  }
  amax = row_max<THREADS_PER_ROW>(amax, warp_max);

  const bool finite = isfinite(amax);
  if (lane == 0) scale[row] = finite ? __fdiv_rn(amax, 127.0f) : __int_as_float(0x7fc00000);
  const float inv = finite && amax > 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
  const bool all_zero = !isfinite(inv) || inv == 0.0f;
  for (int64_t i = lane; i < packs; i += THREADS_PER_ROW) {
    Pack<int8_t, VEC> out;
    if (all_zero) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) out.v[j] = 0;
    } else {
      const Pack<T, VEC> p = x_row[i];
#pragma unroll
      for (int j = 0; j < VEC; ++j) out.v[j] = quantize(to_float(p.v[j]), inv);
    }
    q_row[i] = out;
  }
}

template <typename T, int VEC>
void launch_rows(const T* x, int64_t rows, int64_t cols, int64_t x_row_stride, int8_t* q,
                 float* scale, bool warp_per_row, unsigned blocks, cudaStream_t stream) {
  if (warp_per_row)
    quantize_rows<T, VEC, kWarpSize><<<blocks, kThreads, 0, stream>>>(x, rows, cols, x_row_stride, q, scale);
  else
    quantize_rows<T, VEC, kThreads><<<blocks, kThreads, 0, stream>>>(x, rows, cols, x_row_stride, q, scale);
}

bool aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <typename T>
int launch(const void* x_raw, int64_t rows, int64_t cols, int64_t x_row_stride, int8_t* q,
           float* scale, cudaStream_t stream) {
  // Every x element offset, in bytes, and every q offset must fit in int64.
  const int64_t max_elems = INT64_MAX / static_cast<int64_t>(sizeof(T));
  if (cols > max_elems || (cols > 0 && rows > INT64_MAX / cols)) return cudaErrorInvalidValue;
  if (x_row_stride > 0 && rows - 1 > (max_elems - cols) / x_row_stride) return cudaErrorInvalidValue;

  const bool warp_per_row = cols <= kWarpPerRowMaxCols;
  const int64_t rows_per_block = warp_per_row ? kThreads / kWarpSize : 1;
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  if (blocks > INT_MAX) return cudaErrorInvalidValue;

  const T* x = static_cast<const T*>(x_raw);
  constexpr int kVec = 16 / sizeof(T);
  const bool vectorized = cols % kVec == 0 && x_row_stride % kVec == 0 && aligned(x, 16) && aligned(q, kVec);
  const auto grid = static_cast<unsigned>(blocks);
  if (vectorized)
    launch_rows<T, kVec>(x, rows, cols, x_row_stride, q, scale, warp_per_row, grid, stream);
  else
    launch_rows<T, 1>(x, rows, cols, x_row_stride, q, scale, warp_per_row, grid, stream);
  return cudaGetLastError();
}

}  // namespace

int slimops_quantize_per_token_cuda(const void* x, int x_dtype, int64_t rows, int64_t cols,
                                    int64_t x_row_stride, int8_t* q, float* scale, void* stream) {
  if (rows < 0 || cols < 0 || x_row_stride < 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (scale == nullptr || (cols > 0 && (x == nullptr || q == nullptr))) return cudaErrorInvalidValue;
  const auto s = static_cast<cudaStream_t>(stream);
  switch (x_dtype) {
    case SLIMOPS_F32: return launch<float>(x, rows, cols, x_row_stride, q, scale, s);
    case SLIMOPS_F16: return launch<__half>(x, rows, cols, x_row_stride, q, scale, s);
    case SLIMOPS_BF16: return launch<__nv_bfloat16>(x, rows, cols, x_row_stride, q, scale, s);
    default: return cudaErrorInvalidValue;
  }
}
