// bfloat16 storage type: the top 16 bits of an IEEE float32, rounded to nearest even.
#pragma once
#include <bit>
#include <cstdint>

namespace seer {

struct bf16 {
  uint16_t bits = 0;

  bf16() = default;
  explicit bf16(float value) : bits(round_from_float(value)) {}
  explicit operator float() const { return std::bit_cast<float>(uint32_t(bits) << 16); }

  static uint16_t round_from_float(float value) {
    uint32_t u = std::bit_cast<uint32_t>(value);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round half to even
    return uint16_t(u >> 16);
  }
};

inline float to_float(float x) { return x; }
inline float to_float(bf16 x) { return float(x); }
inline double to_double(float x) { return x; }
inline double to_double(double x) { return x; }
inline double to_double(bf16 x) { return float(x); }

}  // namespace seer
