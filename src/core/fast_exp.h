// exp() that the compiler can vectorize (glibc exposes its vector expf only under -ffast-math).
// exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 split in two parts (Cody-Waite), exp(r)
// by its degree-7 Taylor polynomial on |r| <= ln2/2: relative error below 3e-7 (float rounding).
// Arguments below -87 (including -inf, the causal mask) return exactly 0.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace seer {

inline float fast_exp(float x) {
  const bool underflow = x < -87.0f;
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693145751953125f;   // ln2 high part (exact product with small n)
  r = r - n * 1.428606765330187045e-06f;  // ln2 low part
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = std::bit_cast<float>(uint32_t(int32_t(n) + 127) << 23);
  return underflow ? 0.0f : p * scale;
}

}  // namespace seer
