// The fused tile of dwsep_conv2d, written once for a vector type S and
// compiled per ISA (scalar.cpp, avx2.cpp, avx512_vnni.cpp). S provides:
//   V, M (a lane mask), kWidth; mask(n): the first n lanes (n may be <= 0 or
//   > kWidth); zero(), set1(f); load(p), load(p, m) (zeros outside m),
//   store(p, v), store(p, v, m); add, sub, mul, div, fma(a, b, c) = a * b + c
//   rounded once; max/min with x86 semantics (see vec_math.h);
//   where_greater(a, b, t, f) = a > b ? t : f per lane; round_even;
//   kDepthwisePixels, the pixels the depthwise step takes at a time;
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
};

namespace {

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Taps k whose input index origin + k * dilation lies in [0, size).
inline void valid_taps(int64_t origin, int64_t dilation, int64_t size, int64_t taps, int64_t* first, int64_t* end) {
  *first = origin >= 0 ? 0 : (-origin + dilation - 1) / dilation;
  *end = origin >= size ? 0 : min64(taps, (size - origin + dilation - 1) / dilation);
  *end = max64(*end, *first);
}

// Depthwise outputs of NP pixels of one output row, NP consecutive columns
// starting at ox, which share the kernel rows [kh0, kh1) and columns
// [kw0, kw1): each weight vector loaded once serves all NP pixels.
template <class S, int NP, bool kMasked>
inline void depthwise_vector(const DwsepShape& s, const Packed& pk, const float* image, int64_t origin, int64_t c,
                             int64_t kh0, int64_t kh1, int64_t kw0, int64_t kw1, float* out) {
  using V = typename S::V;
  const auto m = S::mask(s.C - c);
  V acc[NP];
  for (int q = 0; q < NP; ++q) acc[q] = S::zero();
  for (int64_t kh = kh0; kh < kh1; ++kh) {
    const int64_t row = origin + kh * s.dilation_h * s.W * s.C + c;
    const float* w = pk.dw_w + kh * s.KW * pk.Cp + c;
    for (int64_t kw = kw0; kw < kw1; ++kw) {
      const V wv = S::load(w + kw * pk.Cp);
      const int64_t px = row + kw * s.dilation_w * s.C;
      for (int q = 0; q < NP; ++q) {
        const float* xq = image + (px + q * s.stride_w * s.C);
        acc[q] = S::fma(kMasked ? S::load(xq, m) : S::load(xq), wv, acc[q]);
      }
    }
  }
  const V bias = S::load(pk.dw_b + c);
  for (int q = 0; q < NP; ++q) S::store(out + q * pk.Cp + c, activate<S>(s.act1, S::add(acc[q], bias)));
}

// Depthwise outputs of NP pixels of one output row, NP consecutive columns
// starting at ox, which share the kernel rows [kh0, kh1) and columns
// [kw0, kw1): each weight vector loaded once serves all NP pixels.
template <class S, int NP>
void depthwise_pixels(const DwsepShape& s, const Packed& pk, const float* image, int64_t oy, int64_t ox,
                      int64_t kh0, int64_t kh1, int64_t kw0, int64_t kw1, float* out) {
  const int64_t iy = oy * s.stride_h - s.pad_top, ix = ox * s.stride_w - s.pad_left;
  // Offset of tap (0, 0), possibly outside the image: only the valid taps' offsets become pointers.
  const int64_t origin = (iy * s.W + ix) * s.C;
  const int64_t full = s.C / S::kWidth * S::kWidth;
  for (int64_t c = 0; c < full; c += S::kWidth) depthwise_vector<S, NP, false>(s, pk, image, origin, c, kh0, kh1, kw0, kw1, out);
  for (int64_t c = full; c < pk.Cp; c += S::kWidth) depthwise_vector<S, NP, true>(s, pk, image, origin, c, kh0, kh1, kw0, kw1, out);
}

// The interior fast path for dilation 1 along W and a kernel width and stride
// known at compile time: for each kernel row, the (NP - 1) * SW + KW input
// vectors the NP pixels read are loaded once and reused from registers by
// every (pixel, tap) pair that reads them. Same float order as above.
template <class S, int NP, int KW, int SW, bool kMasked>
inline void depthwise_window_vector(const DwsepShape& s, const Packed& pk, const float* image, int64_t origin,
                                    int64_t c, int64_t kh0, int64_t kh1, float* out) {
  using V = typename S::V;
  constexpr int kSpan = (NP - 1) * SW + KW;
  const auto m = S::mask(s.C - c);
  V acc[NP];
  for (int q = 0; q < NP; ++q) acc[q] = S::zero();
  for (int64_t kh = kh0; kh < kh1; ++kh) {
    const int64_t row = origin + kh * s.dilation_h * s.W * s.C + c;
    V xs[kSpan];
    for (int j = 0; j < kSpan; ++j) {
      const float* xj = image + (row + j * s.C);
      xs[j] = kMasked ? S::load(xj, m) : S::load(xj);
    }
    const float* w = pk.dw_w + kh * KW * pk.Cp + c;
    for (int kw = 0; kw < KW; ++kw) {
      const V wv = S::load(w + kw * pk.Cp);
      for (int q = 0; q < NP; ++q) acc[q] = S::fma(xs[q * SW + kw], wv, acc[q]);
    }
  }
  const V bias = S::load(pk.dw_b + c);
  for (int q = 0; q < NP; ++q) S::store(out + q * pk.Cp + c, activate<S>(s.act1, S::add(acc[q], bias)));
}

template <class S, int NP, int KW, int SW>
void depthwise_window(const DwsepShape& s, const Packed& pk, const float* image, int64_t oy, int64_t ox,
                      int64_t kh0, int64_t kh1, float* out) {
  const int64_t origin = ((oy * s.stride_h - s.pad_top) * s.W + ox * SW - s.pad_left) * s.C;
  const int64_t full = s.C / S::kWidth * S::kWidth;
  for (int64_t c = 0; c < full; c += S::kWidth) {
    depthwise_window_vector<S, NP, KW, SW, false>(s, pk, image, origin, c, kh0, kh1, out);
  }
  for (int64_t c = full; c < pk.Cp; c += S::kWidth) {
    depthwise_window_vector<S, NP, KW, SW, true>(s, pk, image, origin, c, kh0, kh1, out);
  }
}

// The interior runs of NP pixels: the window path when one fits the kernel, else the general one.
template <class S, int NP>
using InteriorFn = void (*)(const DwsepShape&, const Packed&, const float*, int64_t, int64_t, int64_t, int64_t,
                            float*);

template <class S, int NP>
void depthwise_interior(const DwsepShape& s, const Packed& pk, const float* image, int64_t oy, int64_t ox,
                        int64_t kh0, int64_t kh1, float* out) {
  depthwise_pixels<S, NP>(s, pk, image, oy, ox, kh0, kh1, 0, s.KW, out);
}

template <class S, int NP>
InteriorFn<S, NP> interior_for(const DwsepShape& s) {
  if (s.dilation_w == 1 && (s.stride_w == 1 || s.stride_w == 2)) {
    const bool one = s.stride_w == 1;
    switch (s.KW) {
      case 3:
        return one ? depthwise_window<S, NP, 3, 1> : depthwise_window<S, NP, 3, 2>;
      case 5:
        return one ? depthwise_window<S, NP, 5, 1> : depthwise_window<S, NP, 5, 2>;
      case 7:
        return one ? depthwise_window<S, NP, 7, 1> : depthwise_window<S, NP, 7, 2>;
      default:
        break;
    }
  }
  return depthwise_interior<S, NP>;
}

// Depthwise outputs of the task's pixels into its tile, a run of one output
// row at a time: the columns whose kernel window lies inside the input (all
// taps) go S::kDepthwisePixels at a time, the ones at the borders one by one.
template <class S>
void depthwise(const DwsepShape& s, const Packed& pk, const Task& t) {
  constexpr int NP = S::kDepthwisePixels;
  const InteriorFn<S, NP> interior = interior_for<S, NP>(s);
  const float* image = t.x + t.b * s.H * s.W * s.C;
  // Output columns [inner0, inner1) read input columns 0 <= ix + kw * dilation < W for every kw.
  const int64_t span = (s.KW - 1) * s.dilation_w;
  const int64_t inner0 = min64(s.Wo, (s.pad_left + s.stride_w - 1) / s.stride_w);
  const int64_t last = s.W - 1 - span + s.pad_left;  // largest ox * stride_w allowed
  const int64_t inner1 = last < 0 ? inner0 : max64(inner0, min64(s.Wo, last / s.stride_w + 1));
  for (int64_t p = t.p_begin; p < t.p_end;) {
    const int64_t oy = p / s.Wo, ox = p % s.Wo;
    const int64_t run_end = min64(t.p_end - p, s.Wo - ox) + ox;  // this row's part of the task
    int64_t kh0, kh1;
    valid_taps(oy * s.stride_h - s.pad_top, s.dilation_h, s.H, s.KH, &kh0, &kh1);
    float* out = t.tile + (p - t.p_begin) * pk.Cp;
    for (int64_t j = ox; j < run_end;) {
      float* o = out + (j - ox) * pk.Cp;
      if (j >= inner0 && j + NP <= min64(inner1, run_end)) {
        interior(s, pk, image, oy, j, kh0, kh1, o);
        j += NP;
      } else {
        int64_t kw0, kw1;
        valid_taps(j * s.stride_w - s.pad_left, s.dilation_w, s.W, s.KW, &kw0, &kw1);
        depthwise_pixels<S, 1>(s, pk, image, oy, j, kh0, kh1, kw0, kw1, o);
        j += 1;
      }
    }
    p += run_end - ox;
  }
}

// y for tile pixels [r0, r0 + MR) and output channels [o0, o0 + NV * kWidth).
template <class S, int MR, int NV>
void pointwise_block(const DwsepShape& s, const Packed& pk, const Task& t, int64_t r0, int64_t o0) {
  using V = typename S::V;
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = S::zero();
  const float* a = t.tile + r0 * pk.Cp;
  const float* w = pk.pw_w + o0;
  for (int64_t c = 0; c < s.C; ++c) {
    V wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = S::load(w + c * pk.Op + v * S::kWidth);
    for (int r = 0; r < MR; ++r) {
      const V av = S::set1(a[r * pk.Cp + c]);
      for (int v = 0; v < NV; ++v) acc[r][v] = S::fma(av, wv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    const int64_t pixel = t.b * s.Ho * s.Wo + t.p_begin + r0 + r;
    float* y = t.y + pixel * s.O;
    const float* x = t.x + pixel * s.C;  // residual: the output grid is the input grid
    for (int v = 0; v < NV; ++v) {
      const int64_t o = o0 + v * S::kWidth;
      const auto m = S::mask(s.O - o);
      V out = activate<S>(s.act2, S::add(acc[r][v], S::load(pk.pw_b + o)));
      if (s.residual) out = S::add(out, S::load(x + o, m));
      S::store(y + o, out, m);
    }
  }
}

// pointwise_block for 1 <= mr <= MR pixels.
template <class S, int MR, int NV>
void pointwise_rows(int64_t mr, const DwsepShape& s, const Packed& pk, const Task& t, int64_t r0, int64_t o0) {
  if constexpr (MR > 1) {
    if (mr < MR) return pointwise_rows<S, MR - 1, NV>(mr, s, pk, t, r0, o0);
  }
  pointwise_block<S, MR, NV>(s, pk, t, r0, o0);
}

// Depthwise tile, then (or either one alone) the 1x1 convolution of its pixels for output channels
// [o_begin, min(o_end, O)): blocks of NV vectors, then one vector, then (when
// the ISA has a narrower vector type Half, with the same float order per
// output) a half vector, so that little is computed past O.
template <class S, int MR, int NV, class Half = void>
void run_task(const DwsepShape& s, const Packed& pk, const Task& t) {
  if (t.depthwise) depthwise<S>(s, pk, t);
  if (!t.pointwise) return;
  const int64_t pixels = t.p_end - t.p_begin;
  const int64_t o_end = min64(t.o_end, s.O);
  // Output-channel blocks outermost: their [C][block] weight panel stays in
  // cache while every pixel of the tile passes over it.
  for (int64_t o0 = t.o_begin; o0 < o_end;) {
    const int64_t left = o_end - o0;
    for (int64_t r0 = 0; r0 < pixels; r0 += MR) {
      const int64_t mr = min64(MR, pixels - r0);
      if (left >= NV * S::kWidth) {
        pointwise_rows<S, MR, NV>(mr, s, pk, t, r0, o0);
      } else if constexpr (!std::is_void_v<Half>) {
        if (left <= Half::kWidth) {
          pointwise_rows<Half, MR, 1>(mr, s, pk, t, r0, o0);
        } else {
          pointwise_rows<S, MR, 1>(mr, s, pk, t, r0, o0);
        }
      } else {
        pointwise_rows<S, MR, 1>(mr, s, pk, t, r0, o0);
      }
    }
    // The packed weights hold Op >= O columns (a multiple of kPad), so every
    // block above reads inside them; stores stop at O.
    o0 += left >= NV * S::kWidth ? NV * S::kWidth : S::kWidth;
  }
}

}  // namespace

void task_scalar(const DwsepShape& s, const Packed& pk, const Task& t);
void task_avx2(const DwsepShape& s, const Packed& pk, const Task& t);
void task_avx512(const DwsepShape& s, const Packed& pk, const Task& t);

}  // namespace dwsep_conv2d
}  // namespace slimops
