// A block's weight in top-p selection, shared by the CPU selection and the CUDA kernel, which must
// agree on every mask bit for bit.
//
// weight = floor(exp(value - max) * 2^32): the block's probability relative to its row's largest, in
// (0, 1], as an integer in units of 2^-32. Integer weights make every sum of them exact, so the cut
// does not depend on the order of the adds. exp runs in float as fast_exp does (core/fast_exp.h:
// Cody-Waite reduction, then the degree-7 Taylor polynomial, relative error below 3e-7), written with
// explicit fused multiply-adds only, so that each step rounds the same on both sides whatever the
// compilers contract. It replaced exp in double, whose ~50 instructions per call were most of the
// top-p kernel's work (bench/RESULTS.md, "Top-p weights in float").
#pragma once
#include <cmath>
#include <cstdint>
#if !defined(__CUDA_ARCH__)
#include <bit>
#endif

#include "core/host_device.h"

namespace seer {

SEER_HOST_DEVICE inline uint64_t mass_weight(float value, float max_value) {
  const float x = value - max_value;  // <= 0
  if (!(x >= -87.0f)) return 0;       // exp(-87) * 2^32 < 1 (NaN too)
  const float n = floorf(fmaf(x, 1.44269504088896341f, 0.5f));
  float r = fmaf(-n, 0.693145751953125f, x);  // ln2's high part: n * it is exact
  r = fmaf(-n, 1.428606765330187045e-06f, r);  // ln2's low part
  float p = 1.0f / 5040.0f;
  p = fmaf(p, r, 1.0f / 720.0f);
  p = fmaf(p, r, 1.0f / 120.0f);
  p = fmaf(p, r, 1.0f / 24.0f);
  p = fmaf(p, r, 1.0f / 6.0f);
  p = fmaf(p, r, 0.5f);
  p = fmaf(p, r, 1.0f);
  p = fmaf(p, r, 1.0f);
  // 2^(n + 32), a normal float for n in [-126, 0]; the product is exact or below 1 (weight 0).
  const uint32_t scale_bits = uint32_t(int32_t(n) + 32 + 127) << 23;
#if defined(__CUDA_ARCH__)
  const float scale = __uint_as_float(scale_bits);
#else
  const float scale = std::bit_cast<float>(scale_bits);
#endif
  return uint64_t(p * scale);
}

}  // namespace seer
