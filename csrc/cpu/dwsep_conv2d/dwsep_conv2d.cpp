// Entry points of dwsep_conv2d: weight packing, and the convolution (size
// checks, ISA choice and the split of the output pixels into tasks for the
// thread pool).
#include "slimops/dwsep_conv2d.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "../scratch.h"
#include "kernel.h"
#include "slimops/cpu_isa.h"
#include "slimops/thread_pool.h"

namespace slimops {
namespace {

using dwsep_conv2d::kPad;
using dwsep_conv2d::Packed;
using dwsep_conv2d::Task;
using TaskFn = void (*)(const DwsepShape&, const Packed&, const Task&);

TaskFn task_for(CpuIsa isa) {
  switch (isa) {
#ifdef SLIMOPS_X86
    case CpuIsa::kAvx512Vnni:
      return dwsep_conv2d::task_avx512;
    case CpuIsa::kAvx2:
      return dwsep_conv2d::task_avx2;
#endif
    default:
      break;
  }
  return dwsep_conv2d::task_scalar;
}

int64_t padded(int64_t n) { return (n + kPad - 1) / kPad * kPad; }

// A core's L2 in bytes (2 MiB when unknown).
int64_t l2_bytes() {
  static const int64_t bytes = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l2 > 0) return static_cast<int64_t>(l2);
#endif
    return int64_t{2} << 20;
  }();
  return bytes;
}

// Half of a core's L2: the largest 1x1 weight a fused task streams from L2
// per task. Tuned on a 1 MiB-L2 Zen 4 at 512 KiB; on the 2 MiB-L2 Xeon,
// 1 MiB was 8-12% faster for the 885 KiB-614 KiB weights of the late blocks.
int64_t fused_weight_limit() { return l2_bytes() / 2; }

Status check_shape(const DwsepShape& s) {
  const int64_t sizes[] = {s.B, s.H, s.W, s.C, s.O, s.Ho, s.Wo, s.KH, s.KW, s.pad_top, s.pad_left};
  for (int64_t v : sizes) {
    if (v < 0) return Status::kNegativeSize;
  }
  if (s.stride_h < 1 || s.stride_w < 1 || s.dilation_h < 1 || s.dilation_w < 1 || s.KH < 1 || s.KW < 1 ||
      s.Ho < 1 || s.Wo < 1) {
    return Status::kSizeTooLarge;
  }
  constexpr int64_t kMax = int64_t{1} << 31;
  const int64_t dims[] = {s.B, s.H, s.W, s.C, s.O, s.Ho, s.Wo, s.KH, s.KW,
                          s.stride_h, s.stride_w, s.dilation_h, s.dilation_w, s.pad_top, s.pad_left};
  for (int64_t v : dims) {
    if (v > kMax) return Status::kSizeTooLarge;
  }
  constexpr int64_t kMaxElements = int64_t{1} << 40;
  if (s.B * s.H > kMaxElements / std::max<int64_t>(1, s.W * padded(s.C)) ||
      s.B * s.Ho > kMaxElements / std::max<int64_t>(1, s.Wo * padded(s.O)) ||
      padded(s.C) > kMaxElements / std::max<int64_t>(1, padded(s.O) + s.KH * s.KW)) {
    return Status::kSizeTooLarge;
  }
  if (s.residual && (s.O != s.C || s.Ho != s.H || s.Wo != s.W)) return Status::kSizeTooLarge;
  return Status::kOk;
}

}  // namespace

int64_t dwsep_packed_floats(int64_t C, int64_t O, int64_t taps) {
  if (C < 0 || O < 0 || taps < 1 || C > (int64_t{1} << 31) || O > (int64_t{1} << 31) || taps > (int64_t{1} << 20)) {
    return -1;
  }
  const int64_t Cp = padded(C), Op = padded(O);
  return taps * Cp + Cp + C * Op + Op;
}

Status dwsep_pack_weights(const float* dw_w, const float* dw_b, const float* pw_w, const float* pw_b, int64_t C,
                          int64_t O, int64_t taps, float* packed, int nthreads) {
  const int64_t floats = dwsep_packed_floats(C, O, taps);
  if (floats < 0) return Status::kSizeTooLarge;
  if (floats == 0) return Status::kOk;
  if (packed == nullptr || (C != 0 && dw_w == nullptr) || (C != 0 && O != 0 && pw_w == nullptr)) {
    return Status::kNullPointer;
  }
  const int64_t Cp = padded(C), Op = padded(O);
  float* dwp = packed;
  float* pwp = packed + taps * Cp + Cp;
  std::fill(dwp, dwp + taps * Cp + Cp, 0.0f);
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t k = 0; k < taps; ++k) dwp[k * Cp + c] = dw_w[c * taps + k];
    if (dw_b != nullptr) dwp[taps * Cp + c] = dw_b[c];
  }
  // The 1x1 weights transposed to [C][Op] (zero padded), in blocks of 32
  // output channels so that both reads and writes stay within a few lines.
  constexpr int64_t kBlockO = 32;
  parallel_for((Op + kBlockO - 1) / kBlockO, std::max(1, nthreads), [&](int64_t task) {
    const int64_t o0 = task * kBlockO, o1 = std::min(Op, o0 + kBlockO);
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t o = o0; o < o1; ++o) pwp[c * Op + o] = o < O ? pw_w[o * C + c] : 0.0f;
    }
    for (int64_t o = o0; o < o1; ++o) pwp[C * Op + o] = o < O && pw_b != nullptr ? pw_b[o] : 0.0f;
  });
  return Status::kOk;
}

Status dwsep_conv2d_cpu(const float* x, const float* dw_w, const float* dw_b, const float* pw_w, const float* pw_b,
                        const DwsepShape& s, float* y, int nthreads) {
  const Status st = check_shape(s);
  if (st != Status::kOk) return st;
  if (s.B == 0 || s.O == 0) return Status::kOk;
  const int64_t floats = dwsep_packed_floats(s.C, s.O, s.KH * s.KW);
  if (floats < 0) return Status::kSizeTooLarge;
  float* packed = thread_buffer<float, kScratchDwsepWeights>(std::max<int64_t>(floats, 1));
  if (packed == nullptr) return Status::kOutOfMemory;
  const Status packing = dwsep_pack_weights(dw_w, dw_b, pw_w, pw_b, s.C, s.O, s.KH * s.KW, packed, nthreads);
  return packing != Status::kOk ? packing : dwsep_conv2d_cpu_packed(x, packed, floats, s, y, nthreads);
}

Status dwsep_conv2d_cpu_packed(const float* x, const float* packed, int64_t packed_floats, const DwsepShape& s,
                               float* y, int nthreads) {
  const Status st = check_shape(s);
  if (st != Status::kOk) return st;
  if (s.B == 0 || s.O == 0) return Status::kOk;
  if (packed_floats != dwsep_packed_floats(s.C, s.O, s.KH * s.KW)) return Status::kSizeTooLarge;
  if (y == nullptr || packed == nullptr || (s.C != 0 && x == nullptr)) return Status::kNullPointer;

  const int64_t Cp = padded(s.C), Op = padded(s.O), taps = s.KH * s.KW;
  const Packed pk{packed, packed + taps * Cp, packed + taps * Cp + Cp, packed + taps * Cp + Cp + s.C * Op, Cp, Op};
  const int64_t pixels = s.Ho * s.Wo;
  nthreads = threads_for(s.B * pixels, s.O + taps, s.C, nthreads);

  // Tasks: runs of output pixels of one image, whose depthwise tile (pixels x
  // Cp floats, at most 256 KiB: it stays in L2) feeds the 1x1 convolution.
  // (Tiles of at most 32 KiB or 512 KiB were 6% slower on the Zen 2's
  // MobileNetV2 suite at batch 1.)
  // Usually each task computes its own tile and its 1x1 (fused), the pixels
  // split until each thread has two tasks. A 1x1 weight too large for L2
  // (over fused_weight_limit()) would be streamed from memory once per task,
  // though, so on the small images of such layers (few pixels) the tasks take
  // as many pixels as a tile holds and
  // the output channels are split instead: then all threads first fill the
  // tiles, shared, and then split the 1x1 among them.
  const int64_t tile_pixels = std::max<int64_t>(8, 65536 / std::max<int64_t>(Cp, 1));
  const bool big_weight = s.C * Op * 4 > fused_weight_limit();
  int64_t runs = (pixels + tile_pixels - 1) / tile_pixels;
  if (!big_weight) runs = std::max(runs, std::min((2 * int64_t{nthreads} + s.B - 1) / s.B, pixels / 8));
  if (s.B == 1) runs = std::min(pixels, (runs + nthreads - 1) / nthreads * nthreads);
  const int64_t per_task = (pixels + runs - 1) / runs;
  const int64_t tasks_per_image = (pixels + per_task - 1) / per_task;
  const int64_t pixel_tasks = s.B * tasks_per_image;
  const int64_t o_blocks = Op / kPad;
  const int64_t o_parts = std::clamp<int64_t>((2 * int64_t{nthreads} + pixel_tasks - 1) / pixel_tasks, 1, o_blocks);
  const TaskFn run = task_for(active_cpu_isa());
  // Images larger than the L2 often come from memory (other layers ran in
  // between): 6-15% faster there on the Zen 4 (the 112 and 56 blocks) with
  // the depthwise step prefetching the next output row's new input rows;
  // 0-5% slower when the image is still in L3.
  const bool prefetch_rows = s.H * s.W * s.C * int64_t{4} > l2_bytes();
  // Where each output row reads one new input row (stride 1), such images run
  // in chunks of two output rows that prefetch the next chunk's input during
  // their 1x1 step (run_task): interleaved with eager, the Zen 3's 112x112
  // and 56x56 stride-1 blocks at batch 1 ran 3-8% faster, and (144,56,1,24)
  // 10-23% at batch 32; stride 2, which reads two new input rows per output
  // row, ran 0-4% slower that way.
  const bool chunked = prefetch_rows && s.stride_h == 1;
  auto task = [&](int64_t pixel_task, float* tile) {
    const int64_t b = pixel_task / tasks_per_image, p0 = pixel_task % tasks_per_image * per_task;
    return Task{x, y, tile, b, p0, std::min(pixels, p0 + per_task), 0, Op, true, true, prefetch_rows, chunked};
  };
  std::atomic<bool> ok{true};
  if (o_parts == 1) {
    parallel_for(pixel_tasks, nthreads, [&](int64_t i) {
      float* tile = thread_buffer<float, kScratchDwsepTaskTile>(per_task * Cp);
      if (tile == nullptr) return ok.store(false, std::memory_order_relaxed);
      run(s, pk, task(i, tile));
    });
    return ok.load() ? Status::kOk : Status::kOutOfMemory;
  }
  float* tiles = thread_buffer<float, kScratchDwsepTiles>(pixel_tasks * per_task * Cp);
  if (tiles == nullptr) return Status::kOutOfMemory;
  // Depthwise-only tasks: the parts of a tile between multiples of `part`
  // pixels. One output row each when that gives every thread two tasks, so
  // that the depthwise runs follow the rows (8-pixel parts cut the 7-pixel
  // rows of the late blocks into runs of 7 + 1, 3 + 3 + 1 + 1, ...); 8
  // pixels otherwise. A tile may start inside a part: one part more.
  const int64_t part = pixel_tasks * (per_task / s.Wo) >= 2 * int64_t{nthreads} ? s.Wo : 8;
  const int64_t parts_per_tile = (per_task + part - 1) / part + 1;
  parallel_for(pixel_tasks * parts_per_tile, nthreads, [&](int64_t i) {
    Task t = task(i / parts_per_tile, tiles + i / parts_per_tile * per_task * Cp);
    const int64_t start = (t.p_begin / part + i % parts_per_tile) * part;
    const int64_t first = std::max(t.p_begin, start), end = std::min(t.p_end, start + part);
    if (first >= end) return;
    t.tile += (first - t.p_begin) * Cp;
    t.p_begin = first;
    t.p_end = end;
    t.pointwise = false;
    run(s, pk, t);
  });
  parallel_for(pixel_tasks * o_parts, nthreads, [&](int64_t i) {
    const int64_t part = i % o_parts;
    Task t = task(i / o_parts, tiles + i / o_parts * per_task * Cp);
    t.o_begin = part * o_blocks / o_parts * kPad;
    t.o_end = (part + 1) * o_blocks / o_parts * kPad;
    t.depthwise = false;
    run(s, pk, t);
  });
  return ok.load() ? Status::kOk : Status::kOutOfMemory;
}

}  // namespace slimops
