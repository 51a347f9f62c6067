// BSR linear with float32 values for 32 activation rows and more on AVX-512
// (compiled with the avx512_vnni level's flags), when bn % 8 == 0 and
// bk % 16 == 0. The xT kernel does one broadcast and one tile load per FMA,
// and on the AMX Xeon that load rate was the limit (16x16 blocks, 90%, M=128:
// 3.0x dense). Here 8 rows of a block row and 32 activation rows (two xT
// tiles) share each load: per (block, column) 2 tile loads and 8 broadcasts
// feed 16 FMAs.
//
// Same float order as kernel.h: lane l of an output sums, in row order, the
// stored elements j with j % 16 == l, i.e. (bk a multiple of 16) the columns
// kk == l (mod 16) of each block, blocks in order. Each lane is summed on its
// own pass over the block row (the registers hold 8 x 32 outputs of one lane,
// not 16 lanes), kept in a buffer, and the 16 lanes then go through the same
// halving tree and bias. So the bits equal the xT kernel's and the CSR
// kernel's on the same stored elements.
#include <immintrin.h>

#include "kernel.h"

namespace slimops {
namespace sparse_xt {
namespace {

constexpr int kPanelRows = 8;  // output rows a panel (bn % 8 == 0)
constexpr int64_t kTile = 32;  // activation rows an xT tile: two zmm a column, in adjacent lines

// Rows [r0, r0 + 8) of the `count` blocks from b0 of a block row, whose x
// columns start at xt + offsets[i], against the tile of activation rows
// [m0, m0 + 32): y at rows n0.. for the activation rows below M. BK is bk
// when known at compile time (16, the usual block), else 0.
template <int64_t BK>
void panel(const Tiles& t, const BsrWeight& w, const int64_t* offsets, int64_t b0, int64_t count, int64_t n0,
           int64_t r0, int64_t m0) {
  const int64_t bk = BK != 0 ? BK : w.bk, block = w.bn * bk;
  const float* xt = t.xt + (m0 / kTile) * t.K * kTile;
  alignas(64) __m512 lanes[kLanes][kPanelRows][2];
  for (int l = 0; l < kLanes; ++l) {
    __m512 acc[kPanelRows][2];
    for (int r = 0; r < kPanelRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const float* v = w.values.f32 + (b0 * w.bn + r0) * bk + l;
    for (int64_t i = 0; i < count; ++i, v += block) {
      const float* x = xt + offsets[i] + l * kTile;
      for (int64_t kk = 0; kk < bk; kk += kLanes) {  // the block's columns in lane l
        const __m512 x0 = _mm512_load_ps(x + kk * kTile);
        const __m512 x1 = _mm512_load_ps(x + kk * kTile + 16);
        for (int r = 0; r < kPanelRows; ++r) {
          const __m512 vr = _mm512_set1_ps(v[r * bk + kk]);
          acc[r][0] = _mm512_fmadd_ps(vr, x0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(vr, x1, acc[r][1]);
        }
      }
    }
    for (int r = 0; r < kPanelRows; ++r) {
      lanes[l][r][0] = acc[r][0];
      lanes[l][r][1] = acc[r][1];
    }
  }
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int l = 0; l < width; ++l) {
      for (int r = 0; r < kPanelRows; ++r) {
        for (int h = 0; h < 2; ++h) lanes[l][r][h] = _mm512_add_ps(lanes[l][r][h], lanes[l + width][r][h]);
      }
    }
  }
  const int64_t rows = min64(kTile, t.M - m0);
  for (int r = 0; r < kPanelRows; ++r) {
    const int64_t n = n0 + r0 + r;
    alignas(64) float out[kTile];
    for (int h = 0; h < 2; ++h) {
      const __m512 sum = lanes[0][r][h];
      _mm512_store_ps(out + h * 16, t.bias != nullptr ? _mm512_add_ps(sum, _mm512_set1_ps(t.bias[n])) : sum);
    }
    for (int64_t i = 0; i < rows; ++i) t.y[(m0 + i) * t.N + n] = out[i];
  }
}

template <int64_t BK>
bool run_panels(const Tiles& t, const BsrWeight& w, int64_t* offsets) {
  const int64_t br_begin = t.n_begin / w.bn, br_end = (t.n_end + w.bn - 1) / w.bn;
  const int64_t b_begin = read_index(w.block_row_ptr, w.row_ptr_bytes, br_begin);
  const int64_t b_end = read_index(w.block_row_ptr, w.row_ptr_bytes, br_end);
  // Every block column checked and turned into its x offset once.
  for (int64_t b = b_begin; b < b_end; ++b) {
    int64_t c;
    if (!bsr_block_col(w, b, &c)) return false;
    offsets[b - b_begin] = c * w.bk * kTile;
  }
  // Tiles outermost: the task's block rows (a few hundred KiB of weights)
  // then stay in L2 while each tile (512 KiB at K = 4096) passes.
  for (int64_t m0 = 0; m0 < t.M; m0 += kTile) {
    for (int64_t br = br_begin; br < br_end; ++br) {
      const int64_t b0 = read_index(w.block_row_ptr, w.row_ptr_bytes, br);
      const int64_t b1 = read_index(w.block_row_ptr, w.row_ptr_bytes, br + 1);
      for (int64_t r0 = 0; r0 < w.bn; r0 += kPanelRows) {
        panel<BK>(t, w, offsets + (b0 - b_begin), b0, b1 - b0, br * w.bn, r0, m0);
      }
    }
  }
  return true;
}

}  // namespace

bool bsr_panels_avx512(const Tiles& t, const BsrWeight& w, int64_t* offsets) {
  return w.bk == 16 ? run_panels<16>(t, w, offsets) : run_panels<0>(t, w, offsets);
}

}  // namespace sparse_xt
}  // namespace slimops
