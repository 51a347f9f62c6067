// AVX2 path (compiled with -mavx2 -mfma): tiles of 8 activation rows, one ymm,
// or of 16, two ymm (CSR and BSR with float32 values in lane passes:
// lane_passes.h).
#include "lane_passes.h"
#include "kernel.h"
#include "ymm.h"

namespace slimops {
namespace sparse_xt {

bool csr_avx2(const Tiles& t, const CsrWeight& w) { return run_tiles<Ymm>(t, w); }
bool bsr_avx2(const Tiles& t, const BsrWeight& w) { return run_tiles<Ymm>(t, w); }
bool nm_avx2(const Tiles& t, const NmWeight& w) { return run_tiles<Ymm>(t, w); }
bool csr_avx2_pair(const Tiles& t, const CsrWeight& w) { return run_tiles_in_lane_passes<YmmPair>(t, w); }
bool bsr_avx2_pair(const Tiles& t, const BsrWeight& w) { return run_tiles_in_lane_passes<YmmPair>(t, w); }
bool nm_avx2_pair(const Tiles& t, const NmWeight& w) { return run_tiles<YmmPair>(t, w); }

}  // namespace sparse_xt
}  // namespace slimops
