// The online softmax's running-max step, shared by the CUDA FlashAttention kernels (dense, ground
// truth, block-sparse) and tested on the CPU (tests/test_online_softmax.cpp), where every corner of
// its float arithmetic can be checked without a GPU.
#pragma once
#include <cmath>

#include "core/host_device.h"

namespace seer {

// Base 2: P up to 2^8 = 256 before O is rescaled, at d = 128 (block-sparse 5% faster at 32k, the
// ground truth 1%, dense 1-3%); at d = 64 the block-sparse kernel ran 4% slower with it
// (bench/RESULTS.md, v21 and v22).
template <int D>
constexpr float kRescaleSlack = D == 128 ? 8.f : 0.f;

// One row's step of the online softmax's running max, given the tile's max (base-2, scaled): the
// new max in row_max, the exponents' base in base_exp, and the factor by which O and the row sum
// must be rescaled as the result. With a slack the max moves only when the tile's exceeds it by
// more than kRescaleSlack: below that, 2^(s·scale - max) stays under 2^kRescaleSlack, which fp32
// sums and 16-bit P hold to the same relative precision, and O and the row sum keep their scale
// (1 is returned), so that the warp's vote before the rescale skips most rescales (conditional
// rescaling, as in FlashAttention-4). From -inf any visible score moves it.
template <int D>
SEER_HOST_DEVICE inline float step_row_max(float tile_max, float& row_max, float& base_exp) {
  float m_new, alpha;
  if constexpr (kRescaleSlack<D> > 0.f) {
    // A difference, not tile_max > row_max + slack: from 2^27 up that sum, rounded to nearest, can
    // land 16 above row_max, which would hold the max back and let fp16's P overflow. -inf - -inf
    // is NaN, which does not move it either. (0.6-1% slower than the unsafe sum in v22, alternated
    // with dense; a sum rounded down, bench/patches/rescale-bound-rd.patch, was within noise of it
    // in v23: bench/RESULTS.md.)
    const bool moves = tile_max - row_max > kRescaleSlack<D>;
    m_new = moves ? tile_max : row_max;
    base_exp = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: 2^-inf = 0, not NaN
    alpha = moves ? exp2f(row_max - base_exp) : 1.f;
  } else {
    m_new = fmaxf(row_max, tile_max);
    base_exp = m_new == -INFINITY ? 0.f : m_new;
    alpha = exp2f(row_max - base_exp);
  }
  row_max = m_new;
  return alpha;
}

}  // namespace seer
