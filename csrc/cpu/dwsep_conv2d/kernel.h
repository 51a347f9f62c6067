// The fused tile of dwsep_conv2d, written once for a vector type S and
// compiled per ISA (scalar.cpp, avx2.cpp, avx512_vnni.cpp). S provides:
//   V, M (a lane mask), kWidth; mask(n): the first n lanes (n may be <= 0 or
//   > kWidth); zero(), set1(f); load(p), load(p, m) (zeros outside m),
//   store(p, v), store(p, v, m); add, sub, mul, div, fma(a, b, c) = a * b + c
//   rounded once; max/min with x86 semantics (see vec_math.h);
//   where_greater(a, b, t, f) = a > b ? t : f per lane; round_even;
//   kDepthwisePixels, the longest depthwise run (a power of two; see window_runs);
//   times_pow2(p, n) = p * 2^n for integral n in [-126, 127].
//
// A task covers a run of output pixels of one image: it computes the
// depthwise outputs of all channels for those pixels into a tile (pixel-major,
// Cp channels a pixel), then the 1x1 convolution of the tile, MR pixels by
// NV vectors of output channels at a time, broadcasting tile values against
// the packed [C][Op] 1x1 weights.
#pragma once

#include <cstdint>
#include <type_traits>

#include "slimops/dwsep_conv2d.h"
#include "vec_math.h"

namespace slimops {
namespace dwsep_conv2d {

// Weights packed by the entry point: channel counts padded to kPad with zeros.
constexpr int64_t kPad = 16;

struct Packed {
  const float* dw_w;  // [KH * KW][Cp]
  const float* dw_b;  // [Cp]
  const float* pw_w;  // [C][Op]
  const float* pw_b;  // [Op]
  int64_t Cp, Op;
};

struct Task {
  const float* x;  // [B, H, W, C]
  float* y;        // [B, Ho, Wo, O]
  float* tile;     // [p_end - p_begin][Cp] scratch
  int64_t b, p_begin, p_end;  // image, and output pixels [p_begin, p_end) of Ho * Wo
  int64_t o_begin, o_end;     // output channels, multiples of kPad (o_end may pass O up to Op)
  bool depthwise, pointwise;  // which steps to run: both (fused), or one (the tile is shared)
  bool prefetch_rows;         // the depthwise step prefetches the input rows of the next output row
  bool chunked;               // a fused task runs in chunks of two output rows (run_task)
};

namespace {

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Input vector (iy, ix, c..) of the image, or zeros in the padding.
template <class S, bool kMasked>
inline typename S::V input_or_zero(const DwsepShape& s, const float* image, int64_t iy, int64_t ix, int64_t c,
                                   typename S::M m) {
  if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) return S::zero();
  const float* p = image + (iy * s.W + ix) * s.C + c;
  return kMasked ? S::load(p, m) : S::load(p);
}

template <class S, int NP, int NR = 1>
inline void finish_depthwise(const DwsepShape& s, const Packed& pk, const typename S::V (&acc)[NR][NP], int64_t c,
                             float* out) {
  const typename S::V bias = S::load(pk.dw_b + c);
  with_activation(s.act1, [&](auto act) {
    for (int r = 0; r < NR; ++r) {
      float* row = out + r * s.Wo * pk.Cp;
      for (int q = 0; q < NP; ++q) {
        S::store(row + q * pk.Cp + c, activate_as<S, decltype(act)::value>(S::add(acc[r][q], bias)));
      }
    }
  });
}

// Depthwise outputs, channels c.., of NP pixels of output row oy, columns ox
// .. ox + NP - 1: each weight vector loaded once serves all NP pixels. Any
// kernel size, stride and dilation.
template <class S, int NP, bool kMasked>
inline void depthwise_taps(const DwsepShape& s, const Packed& pk, const float* image, int64_t oy, int64_t ox,
                           int64_t c, float* out) {
  using V = typename S::V;
  const auto m = S::mask(s.C - c);
  V acc[1][NP];
  for (int q = 0; q < NP; ++q) acc[0][q] = S::zero();
  for (int64_t kh = 0; kh < s.KH; ++kh) {
    const int64_t iy = oy * s.stride_h - s.pad_top + kh * s.dilation_h;
    for (int64_t kw = 0; kw < s.KW; ++kw) {
      const V wv = S::load(pk.dw_w + (kh * s.KW + kw) * pk.Cp + c);
      const int64_t ix = ox * s.stride_w - s.pad_left + kw * s.dilation_w;
      for (int q = 0; q < NP; ++q) {
        acc[0][q] = S::fma(input_or_zero<S, kMasked>(s, image, iy, ix + q * s.stride_w, c, m), wv, acc[0][q]);
      }
    }
  }
  finish_depthwise<S, NP>(s, pk, acc, c, out);
}

// The same for a square KW x KW kernel, dilation 1 along W and a stride
// known at compile time (a compile-time kernel height lets GCC unroll the
// rows: 6-17% faster on the Zen 4; other kernels take depthwise_taps): for
// each kernel row, the (NP - 1) * SW + KW input vectors the NP pixels read
// are loaded once and reused from registers by every (pixel, tap) pair that
// reads them; pixel runs away from the left and right borders skip the
// column checks. Same float order. With NR = 2 (stride and dilation 1 along
// H), the same for output rows oy and oy + 1 (written Wo pixels apart): each
// of their KW + 1 input rows is loaded once for both, and each output still
// takes its kernel rows in order.
template <class S, int NP, int NR, int KW, int SW, bool kMasked, bool kBorder>
[[gnu::always_inline]] inline void depthwise_window_vector(const DwsepShape& s, const Packed& pk, const float* image,
                                                           int64_t oy, int64_t ix, int64_t c, float* out) {
  using V = typename S::V;
  constexpr int kSpan = (NP - 1) * SW + KW;
  const auto m = S::mask(s.C - c);
  V acc[NR][NP];
  for (int r = 0; r < NR; ++r) {
    for (int q = 0; q < NP; ++q) acc[r][q] = S::zero();
  }
#pragma GCC unroll 8
  for (int64_t kh = 0; kh < KW + NR - 1; ++kh) {  // KH == KW; kernel row kh - r of output row oy + r
    const int64_t iy = oy * s.stride_h - s.pad_top + kh * s.dilation_h;
    V xs[kSpan];
    if (iy < 0 || iy >= s.H) {
      for (int j = 0; j < kSpan; ++j) xs[j] = S::zero();
    } else if (!kBorder) {  // straight loads: with a select per vector GCC kept xs on the stack
      const float* x0 = image + (iy * s.W + ix) * s.C + c;
      for (int j = 0; j < kSpan; ++j) xs[j] = kMasked ? S::load(x0 + j * s.C, m) : S::load(x0 + j * s.C);
    } else {
      for (int j = 0; j < kSpan; ++j) {
        const bool inside = ix + j >= 0 && ix + j < s.W;
        const float* xj = image + ((iy * s.W + ix + j) * s.C + c) * inside;  // the image start when outside
        xs[j] = inside ? (kMasked ? S::load(xj, m) : S::load(xj)) : S::zero();
      }
    }
    for (int r = 0; r < NR; ++r) {
      if (kh - r < 0 || kh - r >= KW) continue;
      const float* w = pk.dw_w + (kh - r) * KW * pk.Cp + c;
      for (int kw = 0; kw < KW; ++kw) {
        const V wv = S::load(w + kw * pk.Cp);
        for (int q = 0; q < NP; ++q) acc[r][q] = S::fma(xs[q * SW + kw], wv, acc[r][q]);
      }
    }
  }
  finish_depthwise<S, NP, NR>(s, pk, acc, c, out);
}

template <class S, int NP, int NR, int KW, int SW, bool kMasked>
[[gnu::always_inline]] inline void depthwise_window(const DwsepShape& s, const Packed& pk, const float* image,
                                                    int64_t oy, int64_t ox, int64_t c, float* out) {
  const int64_t ix = ox * SW - s.pad_left;
  if (ix >= 0 && ix + (NP - 1) * SW + KW <= s.W) {
    depthwise_window_vector<S, NP, NR, KW, SW, kMasked, false>(s, pk, image, oy, ix, c, out);
  } else {
    depthwise_window_vector<S, NP, NR, KW, SW, kMasked, true>(s, pk, image, oy, ix, c, out);
  }
}

// All channels of NP pixels: Kernel<NP, kMasked>::run per channel vector.
template <class S, int NP, template <int, bool> class Kernel>
void depthwise_pixels(const DwsepShape& s, const Packed& pk, const float* image, int64_t oy, int64_t ox, float* out) {
  const int64_t full = s.C / S::kWidth * S::kWidth;
  for (int64_t c = 0; c < full; c += S::kWidth) Kernel<NP, false>::run(s, pk, image, oy, ox, c, out);
  for (int64_t c = full; c < pk.Cp; c += S::kWidth) Kernel<NP, true>::run(s, pk, image, oy, ox, c, out);
}

template <class S>
struct Taps {
  template <int NP, bool kMasked>
  struct K {
    static void run(const DwsepShape& s, const Packed& pk, const float* image, int64_t oy, int64_t ox, int64_t c,
                    float* out) {
      depthwise_taps<S, NP, kMasked>(s, pk, image, oy, ox, c, out);
    }
  };
};

template <class S, int KW, int SW, int NR = 1>
struct Window {
  template <int NP, bool kMasked>
  struct K {
    // Inlined into depthwise_pixels' channel loop, which then keeps the
    // shape and pointers in registers (0-9% faster than a call per vector).
    [[gnu::always_inline]] static void run(const DwsepShape& s, const Packed& pk, const float* image, int64_t oy,
                                           int64_t ox, int64_t c, float* out) {
      depthwise_window<S, NP, NR, KW, SW, kMasked>(s, pk, image, oy, ox, c, out);
    }
  };
};

using PixelsFn = void (*)(const DwsepShape&, const Packed&, const float*, int64_t, int64_t, float*);

// Runs of NP, NP / 2, ..., 1 pixels for one depthwise kernel.
template <class S, template <int, bool> class Kernel, int NP>
struct RunFns {
  PixelsFn fns[4] = {depthwise_pixels<S, NP, Kernel>, depthwise_pixels<S, (NP > 1 ? NP / 2 : 1), Kernel>,
                     depthwise_pixels<S, (NP > 3 ? NP / 4 : 1), Kernel>, depthwise_pixels<S, 1, Kernel>};
  int sizes[4] = {NP, NP > 1 ? NP / 2 : 1, NP > 3 ? NP / 4 : 1, 1};
};

template <class S>
struct DepthwiseRuns {
  PixelsFn fns[4];
  int sizes[4];
  PixelsFn pair_fns[4];  // the same runs over two output rows at once, or nulls
  template <template <int, bool> class Kernel, int NP = S::kDepthwisePixels>
  static DepthwiseRuns of() {
    const RunFns<S, Kernel, NP> r;
    return {{r.fns[0], r.fns[1], r.fns[2], r.fns[3]}, {r.sizes[0], r.sizes[1], r.sizes[2], r.sizes[3]}, {}};
  }
  template <template <int, bool> class Kernel, template <int, bool> class PairKernel, int NP>
  static DepthwiseRuns paired() {
    DepthwiseRuns runs = of<Kernel, NP>();
    const RunFns<S, PairKernel, NP> pairs;
    for (int i = 0; i < 4; ++i) runs.pair_fns[i] = pairs.fns[i];
    return runs;
  }
};

// Runs for one window kernel: kDepthwisePixels pixels, then halves of that
// (8, 4, 2, 1). Stride 2 reads twice the input columns per pixel, so on the
// 8-pixel path it starts at half the pixels per run to keep the window in
// registers; the 4-pixel paths keep 4 (a 3x3 window of 9 vectors, 4
// accumulators and a weight fit 16 registers; 4-8% faster than 2 on the Zen
// 2's 112 and 56 stride-2 blocks, the same on the smaller ones). At
// stride 1 on the 32-register path (8-pixel runs), rows whose width is a
// multiple of 7 (the 7, 14, 28, 56 and 112-pixel rows of MobileNet and
// EfficientNet) run 7 pixels at a time (then 3, 1): with 8, a 7-pixel row
// took runs of 4, 2 and 1, each loading its own window and weights, and its
// depthwise step ran 1.6x longer. On that path, stride 1 with stride and
// dilation 1 along H also has the two-row form of depthwise_window_vector
// (its accumulators and window need the 32 registers); on the 16-register
// paths only the 3x3 kernel has it (8 accumulators, a 6-vector window and a
// weight: 15 registers), which ran the Zen 2's stride-1 112, 56 and 28
// blocks 10-20% faster.
template <class S, int KW>
DepthwiseRuns<S> window_runs(const DwsepShape& s) {
  using Runs = DepthwiseRuns<S>;
  constexpr int kRun = S::kDepthwisePixels, kHalfRun = kRun > 1 ? kRun / 2 : 1;
  if (s.stride_w != 1) return Runs::template of<Window<S, KW, 2>::template K, kRun == 8 ? kHalfRun : kRun>();
  if constexpr (kRun == 8) {
    const bool pairs = s.stride_h == 1 && s.dilation_h == 1;
    if (s.Wo % 7 == 0) {
      return pairs ? Runs::template paired<Window<S, KW, 1>::template K, Window<S, KW, 1, 2>::template K, 7>()
                   : Runs::template of<Window<S, KW, 1>::template K, 7>();
    }
    if (pairs) return Runs::template paired<Window<S, KW, 1>::template K, Window<S, KW, 1, 2>::template K, kRun>();
  }
  if constexpr (kRun == 4 && KW == 3) {
    if (s.stride_h == 1 && s.dilation_h == 1) {
      return Runs::template paired<Window<S, KW, 1>::template K, Window<S, KW, 1, 2>::template K, kRun>();
    }
  }
  return Runs::template of<Window<S, KW, 1>::template K, kRun>();
}

template <class S>
DepthwiseRuns<S> depthwise_runs(const DwsepShape& s) {
  if (s.KH == s.KW && s.dilation_w == 1 && (s.stride_w == 1 || s.stride_w == 2)) {
    switch (s.KW) {
      case 3:
        return window_runs<S, 3>(s);
      case 5:
        return window_runs<S, 5>(s);
      case 7:
        return window_runs<S, 7>(s);
      default:
        break;
    }
  }
  return DepthwiseRuns<S>::template of<Taps<S>::template K>();
}

// The last input row (before clipping to the image) that output row oy reads.
inline int64_t last_input_row(const DwsepShape& s, int64_t oy) {
  return oy * s.stride_h - s.pad_top + (s.KH - 1) * s.dilation_h;
}

// Into L2, the input rows that output row oy + 1 reads and oy does not, over
// the columns that output columns [ox, ox_end) read and (unless `first_run`)
// column ox - 1 did not. Always inlined: as a call, GCC found the function
// free of side effects and dropped it.
[[gnu::always_inline]] inline void prefetch_next_rows(const DwsepShape& s, const float* image, int64_t oy, int64_t ox,
                                                      int64_t ox_end, bool first_run) {
  const int64_t first = last_input_row(s, oy) + 1;
  const int64_t last_read = (ox - 1) * s.stride_w - s.pad_left + (s.KW - 1) * s.dilation_w;
  const int64_t x0 = max64(0, first_run ? ox * s.stride_w - s.pad_left : last_read + 1);
  const int64_t x1 = min64(s.W, (ox_end - 1) * s.stride_w - s.pad_left + (s.KW - 1) * s.dilation_w + 1);
  if (x0 >= x1) return;  // nothing new (a run inside the previous one's reach, or in the padding)
  for (int64_t iy = max64(0, first); iy < min64(s.H, first + s.stride_h); ++iy) {
    const char* line = reinterpret_cast<const char*>(image + (iy * s.W + x0) * s.C);
    const char* end = reinterpret_cast<const char*>(image + (iy * s.W + x1) * s.C);
    for (; line < end; line += 64) __builtin_prefetch(line, 0, /*locality=*/2);
  }
}

// Depthwise outputs of the task's pixels into its tile, one output row's part
// at a time, or two whole rows where the runs have a paired form, in the runs
// depthwise_runs picks (longest first).
template <class S>
void depthwise(const DwsepShape& s, const Packed& pk, const Task& t) {
  const DepthwiseRuns<S> runs = depthwise_runs<S>(s);
  const float* image = t.x + t.b * s.H * s.W * s.C;
  for (int64_t p = t.p_begin; p < t.p_end;) {
    const int64_t oy = p / s.Wo, ox = p % s.Wo;
    const int rows = runs.pair_fns[0] != nullptr && ox == 0 && t.p_end - p >= 2 * s.Wo ? 2 : 1;
    const int64_t run_end = rows == 2 ? s.Wo : min64(t.p_end - p, s.Wo - ox) + ox;  // this row's part of the task
    float* out = t.tile + (p - t.p_begin) * pk.Cp;
    const PixelsFn* fns = rows == 2 ? runs.pair_fns : runs.fns;
    int64_t j = ox;
    for (int i = 0; i < 4; ++i) {
      for (; run_end - j >= runs.sizes[i]; j += runs.sizes[i]) {
        // The next one or two rows' input, a run's columns at a time: issued
        // all at once as a row started, the prefetches filled the miss buffers
        // and the row waited (9% slower with x coming from memory).
        if (t.prefetch_rows) {
          for (int r = 0; r < rows; ++r) prefetch_next_rows(s, image, oy + rows - 1 + r, j, j + runs.sizes[i], j == ox);
        }
        fns[i](s, pk, image, oy, j, out + (j - ox) * pk.Cp);
      }
    }
    p += rows * (run_end - ox);
  }
}

// Cache lines at addresses [next, end) brought into L2 a few at a time
// (`per_step` a step): spread over the 1x1 step of one chunk of rows, they
// fetch the input rows of the next chunk while the FMA units are busy. The
// addresses are integers: stepping a pointer could pass one past the end.
struct LinePrefetch {
  uintptr_t next, end;
  int64_t per_step;
  void step() {
    for (int64_t i = 0; i < per_step && next < end; ++i, next += 64) {
      __builtin_prefetch(reinterpret_cast<const void*>(next), 0, /*locality=*/2);
    }
  }
};

// The epilogue of one vector of outputs o.. of a pixel: + pw_b, act2, + x, store (masked at O).
// Whole vectors take plain loads and stores: AVX2's masked store
// (vmaskmovps) is microcoded on AMD, and with it on every vector the
// (32,112,1,16) block ran 1.19x longer on the Zen 2.
template <class S, Activation kAct2>
inline void finish(const DwsepShape& s, const Packed& pk, typename S::V acc, int64_t o, const float* x, float* y) {
  typename S::V out = activate_as<S, kAct2>(S::add(acc, S::load(pk.pw_b + o)));
  if (s.O - o >= S::kWidth) {
    if (s.residual) out = S::add(out, S::load(x + o));
    S::store(y + o, out);
    return;
  }
  const auto m = S::mask(s.O - o);
  if (s.residual) out = S::add(out, S::load(x + o, m));
  S::store(y + o, out, m);
}

// y for tile pixels [r0, r0 + MR) and output channels [o0, o0 + NV * kWidth),
// plus, when Half is not void, the next Half::kWidth channels in the same
// pass (sharing the broadcast activations: narrow outputs such as O = 24 are
// otherwise bound by one broadcast per fma).
template <class S, int MR, int NV, class Half>
void pointwise_block(const DwsepShape& s, const Packed& pk, const Task& t, int64_t r0, int64_t o0) {
  using V = typename S::V;
  constexpr bool kHalf = !std::is_void_v<Half>;
  using HV = typename std::conditional_t<kHalf, Half, S>::V;
  V acc[MR][NV];
  HV half_acc[MR];
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = S::zero();
    if constexpr (kHalf) half_acc[r] = Half::zero();
  }
  const float* a = t.tile + r0 * pk.Cp;
  const float* w = pk.pw_w + o0;
  for (int64_t c = 0; c < s.C; ++c) {
    V wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = S::load(w + c * pk.Op + v * S::kWidth);
    HV hw;
    if constexpr (kHalf) hw = Half::load(w + c * pk.Op + NV * S::kWidth);
    for (int r = 0; r < MR; ++r) {
      const V av = S::set1(a[r * pk.Cp + c]);
      for (int v = 0; v < NV; ++v) acc[r][v] = S::fma(av, wv[v], acc[r][v]);
      if constexpr (kHalf) half_acc[r] = Half::fma(Half::low(av), hw, half_acc[r]);
    }
  }
  with_activation(s.act2, [&](auto act) {
    constexpr Activation kAct2 = decltype(act)::value;
    for (int r = 0; r < MR; ++r) {
      const int64_t pixel = t.b * s.Ho * s.Wo + t.p_begin + r0 + r;
      float* y = t.y + pixel * s.O;
      const float* x = t.x + pixel * s.C;  // residual: the output grid is the input grid
      for (int v = 0; v < NV; ++v) finish<S, kAct2>(s, pk, acc[r][v], o0 + v * S::kWidth, x, y);
      if constexpr (kHalf) finish<Half, kAct2>(s, pk, half_acc[r], o0 + NV * S::kWidth, x, y);
    }
  });
}

// pointwise_block for 1 <= mr <= MR pixels.
template <class S, int MR, int NV, class Half>
void pointwise_rows(int64_t mr, const DwsepShape& s, const Packed& pk, const Task& t, int64_t r0, int64_t o0) {
  if constexpr (MR > 1) {
    if (mr < MR) return pointwise_rows<S, MR - 1, NV, Half>(mr, s, pk, t, r0, o0);
  }
  pointwise_block<S, MR, NV, Half>(s, pk, t, r0, o0);
}

// One output-channel block for every pixel of the tile: its [C][block]
// weight panel stays in cache while the pixels pass over it. (Passes of 256
// input channels, to keep the panel's part in L1, were 4-8% slower on the
// Zen 2 at batch 1 for C = 384-1152: its L2 feeds the panel fast enough.)
template <class S, int MR, int NV, class Half = void>
void pointwise_pixels(const DwsepShape& s, const Packed& pk, const Task& t, int64_t o0, LinePrefetch* pf = nullptr) {
  const int64_t pixels = t.p_end - t.p_begin;
  for (int64_t r0 = 0; r0 < pixels; r0 += MR) {
    if (pf != nullptr) pf->step();
    pointwise_rows<S, MR, NV, Half>(min64(MR, pixels - r0), s, pk, t, r0, o0);
  }
}

// The 1x1 convolution of the tile's pixels for output channels [o_begin,
// min(o_end, O)): blocks of NV vectors, then (when NV > 2) of 2 vectors; the
// channels left at the end in one vector, or (when the ISA has a narrower
// vector type Half: same float order per output) a half vector or one and a
// half, so that little is computed past O. The narrow blocks take 8 pixels at
// a time: with 12, the 12 tile row pointers did not fit the integer registers
// (GCC moved them through xmm registers), and 8 ran 3-10% faster on the Zen
// 4. The packed weights hold Op >= O columns (a multiple of kPad), so every
// block reads inside them; stores stop at O. pf, if given, steps once per
// pixel block of the first pass.
template <class S, int MR, int NV, class Half = void>
void pointwise_all(const DwsepShape& s, const Packed& pk, const Task& t, LinePrefetch* pf) {
  constexpr int W = S::kWidth;
  const int64_t o_end = min64(t.o_end, s.O);
  int64_t o0 = t.o_begin;
  for (; o_end - o0 >= NV * W; o0 += NV * W, pf = nullptr) pointwise_pixels<S, MR, NV>(s, pk, t, o0, pf);
  if constexpr (NV > 2) {
    for (; o_end - o0 >= 2 * W; o0 += 2 * W, pf = nullptr) pointwise_pixels<S, 8, 2>(s, pk, t, o0, pf);
  }
  for (; o0 < o_end; o0 += W, pf = nullptr) {
    const int64_t left = o_end - o0;
    if constexpr (!std::is_void_v<Half>) {
      if (left <= Half::kWidth) {
        pointwise_pixels<Half, 8, 1>(s, pk, t, o0, pf);
        continue;
      }
      if (left > W && left <= W + Half::kWidth) {
        pointwise_pixels<S, 8, 1, Half>(s, pk, t, o0, pf);
        break;
      }
    }
    pointwise_pixels<S, 8, 1>(s, pk, t, o0, pf);
  }
}

// The input rows that output pixels [done, next_end) read and pixels before
// `done` did not, as cache lines to prefetch over `steps` steps.
inline LinePrefetch rows_to_prefetch(const DwsepShape& s, const float* image, int64_t done, int64_t next_end,
                                     int64_t steps) {
  const int64_t first = max64(0, last_input_row(s, (done - 1) / s.Wo) + 1);
  const int64_t last = min64(s.H - 1, last_input_row(s, (next_end - 1) / s.Wo));
  if (done >= next_end || first > last) return {0, 0, 0};
  const uintptr_t begin = reinterpret_cast<uintptr_t>(image + first * s.W * s.C);
  const uintptr_t end = reinterpret_cast<uintptr_t>(image + (last + 1) * s.W * s.C);
  const int64_t lines = static_cast<int64_t>((end - begin + 63) / 64);
  return {begin, end, (lines + steps - 1) / max64(1, steps)};
}

// Depthwise tile, then (or either one alone) its 1x1 convolution. A chunked
// fused task runs two output rows at a time: the depthwise of a chunk into
// the start of the tile, then its 1x1 while the next chunk's new input rows
// are prefetched, so that the input streams in during the 1x1's arithmetic
// instead of stalling the depthwise step.
template <class S, int MR, int NV, class Half = void>
void run_task(const DwsepShape& s, const Packed& pk, const Task& t) {
  if (t.chunked && t.depthwise && t.pointwise) {
    const float* image = t.x + t.b * s.H * s.W * s.C;
    const int64_t chunk = 2 * s.Wo;
    for (int64_t p = t.p_begin; p < t.p_end;) {
      Task c = t;
      c.p_begin = p;
      c.p_end = min64(t.p_end, (p / chunk + 1) * chunk);
      c.prefetch_rows = false;
      depthwise<S>(s, pk, c);
      const int64_t blocks = (c.p_end - c.p_begin + MR - 1) / MR;
      LinePrefetch pf = rows_to_prefetch(s, image, c.p_end, min64(t.p_end, c.p_end + chunk), blocks);
      pointwise_all<S, MR, NV, Half>(s, pk, c, &pf);
      p = c.p_end;
    }
    return;
  }
  if (t.depthwise) depthwise<S>(s, pk, t);
  if (t.pointwise) pointwise_all<S, MR, NV, Half>(s, pk, t, nullptr);
}

}  // namespace

void task_scalar(const DwsepShape& s, const Packed& pk, const Task& t);
void task_avx2(const DwsepShape& s, const Packed& pk, const Task& t);
void task_avx512(const DwsepShape& s, const Packed& pk, const Task& t);

}  // namespace dwsep_conv2d
}  // namespace slimops
