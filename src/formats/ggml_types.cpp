#include "formats/ggml_types.h"

#include <array>
#include <bit>
#include <cstring>

#include "core/error.h"
#include "formats/half.h"

namespace seer {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF and ggml blocks are little-endian");

constexpr uint32_t kMaxTypeNumber = 41;

// Block geometry of every ggml type (ggml.c's type_traits; the same table as gguf-py's
// GGML_QUANT_SIZES). An empty name marks a retired number.
constexpr std::array<GgmlTypeTraits, kMaxTypeNumber + 1> kTraits = [] {
  std::array<GgmlTypeTraits, kMaxTypeNumber + 1> t{};
  auto set = [&t](GgmlType type, std::string_view name, uint32_t block, uint32_t bytes, bool decoded) {
    t[uint32_t(type)] = GgmlTypeTraits{name, block, bytes, decoded};
  };
  constexpr uint32_t qk_k = 256;  // super-block size of the K, IQ and TQ families
  set(GgmlType::f32, "F32", 1, 4, true);
  set(GgmlType::f16, "F16", 1, 2, true);
  set(GgmlType::q4_0, "Q4_0", 32, 2 + 16, true);
  set(GgmlType::q4_1, "Q4_1", 32, 2 + 2 + 16, true);
  set(GgmlType::q5_0, "Q5_0", 32, 2 + 4 + 16, true);
  set(GgmlType::q5_1, "Q5_1", 32, 2 + 2 + 4 + 16, true);
  set(GgmlType::q8_0, "Q8_0", 32, 2 + 32, true);
  set(GgmlType::q8_1, "Q8_1", 32, 4 + 4 + 32, false);
  set(GgmlType::q2_k, "Q2_K", qk_k, 2 + 2 + qk_k / 16 + qk_k / 4, true);
  set(GgmlType::q3_k, "Q3_K", qk_k, 2 + qk_k / 4 + qk_k / 8 + 12, true);
  set(GgmlType::q4_k, "Q4_K", qk_k, 2 + 2 + qk_k / 2 + 12, true);
  set(GgmlType::q5_k, "Q5_K", qk_k, 2 + 2 + qk_k / 2 + qk_k / 8 + 12, true);
  set(GgmlType::q6_k, "Q6_K", qk_k, 2 + qk_k / 2 + qk_k / 4 + qk_k / 16, true);
  set(GgmlType::q8_k, "Q8_K", qk_k, 4 + qk_k + qk_k / 8, false);
  set(GgmlType::iq2_xxs, "IQ2_XXS", qk_k, 2 + qk_k / 4, false);
  set(GgmlType::iq2_xs, "IQ2_XS", qk_k, 2 + qk_k / 4 + qk_k / 32, false);
  set(GgmlType::iq3_xxs, "IQ3_XXS", qk_k, 2 + qk_k / 4 + qk_k / 8, false);
  set(GgmlType::iq1_s, "IQ1_S", qk_k, 2 + qk_k / 8 + qk_k / 16, false);
  set(GgmlType::iq4_nl, "IQ4_NL", 32, 2 + 16, false);
  set(GgmlType::iq3_s, "IQ3_S", qk_k, 2 + qk_k / 4 + qk_k / 8 + qk_k / 32 + 4, false);
  set(GgmlType::iq2_s, "IQ2_S", qk_k, 2 + qk_k / 4 + qk_k / 16, false);
  set(GgmlType::iq4_xs, "IQ4_XS", qk_k, 2 + 2 + qk_k / 2 + qk_k / 64, false);
  set(GgmlType::i8, "I8", 1, 1, false);
  set(GgmlType::i16, "I16", 1, 2, false);
  set(GgmlType::i32, "I32", 1, 4, false);
  set(GgmlType::i64, "I64", 1, 8, false);
  set(GgmlType::f64, "F64", 1, 8, false);
  set(GgmlType::iq1_m, "IQ1_M", qk_k, qk_k / 8 + qk_k / 16 + qk_k / 32, false);
  set(GgmlType::bf16, "BF16", 1, 2, true);
  set(GgmlType::tq1_0, "TQ1_0", qk_k, 2 + 4 * 13, false);
  set(GgmlType::tq2_0, "TQ2_0", qk_k, 2 + 64, false);
  set(GgmlType::mxfp4, "MXFP4", 32, 1 + 16, false);
  set(GgmlType::nvfp4, "NVFP4", 64, 4 + 32, false);
  set(GgmlType::q1_0, "Q1_0", 128, 2 + 16, false);
  return t;
}();

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
float load_half(const uint8_t* p) { return half_to_float(load_u16(p)); }

// Each decoder turns one block at `b` into block_size floats at `y`. Every product and sum is a
// separate float32 operation in gguf-py's order (numpy rounds each array operation; the library is
// built with -ffp-contract=off so none of them fuse into an FMA).

void decode_f32(const uint8_t* b, float* y) { std::memcpy(y, b, sizeof(float)); }
void decode_f16(const uint8_t* b, float* y) { *y = load_half(b); }
void decode_bf16(const uint8_t* b, float* y) { *y = bf16_bits_to_float(load_u16(b)); }

// d, then 16 bytes of 4-bit quants: byte i holds element i (low nibble) and i + 16 (high nibble).
void decode_q4_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const uint8_t* qs = b + 2;
  for (int i = 0; i < 16; ++i) {
    y[i] = d * float(int(qs[i] & 0x0f) - 8);
    y[i + 16] = d * float(int(qs[i] >> 4) - 8);
  }
}

// d, min, then the Q4_0 nibble layout without the offset of 8.
void decode_q4_1(const uint8_t* b, float* y) {
  const float d = load_half(b), m = load_half(b + 2);
  const uint8_t* qs = b + 4;
  for (int i = 0; i < 16; ++i) {
    y[i] = d * float(qs[i] & 0x0f) + m;
    y[i + 16] = d * float(qs[i] >> 4) + m;
  }
}

// Element i's fifth bit is bit i of the 32-bit qh word; the low four bits are laid out as in Q4_0.
uint32_t five_bit(const uint8_t* qs, uint32_t qh, int i) {
  const uint32_t low = i < 16 ? (qs[i] & 0x0fu) : (qs[i - 16] >> 4);
  return low | (((qh >> i) & 1u) << 4);
}

void decode_q5_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const uint32_t qh = load_u32(b + 2);
  for (int i = 0; i < 32; ++i) y[i] = d * float(int(five_bit(b + 6, qh, i)) - 16);
}

void decode_q5_1(const uint8_t* b, float* y) {
  const float d = load_half(b), m = load_half(b + 2);
  const uint32_t qh = load_u32(b + 4);
  for (int i = 0; i < 32; ++i) y[i] = d * float(five_bit(b + 8, qh, i)) + m;
}

void decode_q8_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  for (int i = 0; i < 32; ++i) y[i] = float(int8_t(b[2 + i])) * d;
}

// The K quants split 256 elements into 16 groups of 16 (Q2_K, Q3_K, Q6_K) or 8 groups of 32
// (Q4_K, Q5_K), each with its own scale. The 2-bit planes of Q2_K and Q3_K: element
// 128 h + 32 j + l is bits 2j..2j+1 of byte 32 h + l.
uint32_t two_bit(const uint8_t* qs, int element) {
  const int h = element / 128, j = (element % 128) / 32, l = element % 32;
  return (qs[32 * h + l] >> (2 * j)) & 3u;
}

// 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit quants, d, dmin.
void decode_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = load_half(b + 80), dmin = load_half(b + 82);
  for (int group = 0; group < 16; ++group) {
    const float dl = d * float(scales[group] & 0x0f);
    const float ml = dmin * float(scales[group] >> 4);
    for (int e = 16 * group; e < 16 * group + 16; ++e) y[e] = dl * float(two_bit(qs, e)) - ml;
  }
}

// 32 bytes of high bits (element 32 k + l: bit k of byte l; a clear bit subtracts 4), 64 bytes of
// 2-bit quants, 12 bytes holding 16 six-bit scales (low nibbles in bytes 0..7, two high bits each
// in bytes 8..11), d.
void decode_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* packed = b + 96;
  const float d = load_half(b + 108);
  for (int group = 0; group < 16; ++group) {
    const uint32_t low = group < 8 ? (packed[group] & 0x0fu) : (packed[group - 8] >> 4);
    const uint32_t high = (packed[8 + group % 4] >> (2 * (group / 4))) & 3u;
    const float dl = d * float(int(low | (high << 4)) - 32);
    for (int e = 16 * group; e < 16 * group + 16; ++e) {
      const bool high_bit = (hmask[e % 32] >> (e / 32)) & 1u;
      y[e] = dl * float(int(two_bit(qs, e)) - (high_bit ? 0 : 4));
    }
  }
}

// Eight 6-bit scales and eight 6-bit mins packed in 12 bytes (Q4_K and Q5_K): groups 0..3 are the
// low 6 bits of bytes 0..3 (scales) and 4..7 (mins); groups 4..7 take their low 4 bits from the
// nibbles of bytes 8..11 and their top 2 bits from the top bits of bytes 0..3 / 4..7.
void unpack_k_scales(const uint8_t* packed, uint32_t scale[8], uint32_t min[8]) {
  for (int g = 0; g < 4; ++g) {
    scale[g] = packed[g] & 0x3fu;
    min[g] = packed[4 + g] & 0x3fu;
    scale[g + 4] = (packed[8 + g] & 0x0fu) | ((packed[g] >> 6) << 4);
    min[g + 4] = (packed[8 + g] >> 4) | ((packed[4 + g] >> 6) << 4);
  }
}

// d, dmin, 12 scale bytes, 128 bytes of nibbles: group 2c is the low nibbles of bytes 32c..32c+31,
// group 2c+1 their high nibbles.
void decode_q4_k(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  uint32_t scale[8], min[8];
  unpack_k_scales(b + 4, scale, min);
  const uint8_t* qs = b + 16;
  for (int group = 0; group < 8; ++group) {
    const float dl = d * float(scale[group]);
    const float ml = dmin * float(min[group]);
    const uint8_t* bytes = qs + 32 * (group / 2);
    const int shift = 4 * (group % 2);
    for (int l = 0; l < 32; ++l) y[32 * group + l] = dl * float((bytes[l] >> shift) & 0x0f) - ml;
  }
}

// Q4_K plus 32 bytes of fifth bits before the nibbles: element l of group g has bit g of byte l.
void decode_q5_k(const uint8_t* b, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  uint32_t scale[8], min[8];
  unpack_k_scales(b + 4, scale, min);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int group = 0; group < 8; ++group) {
    const float dl = d * float(scale[group]);
    const float ml = dmin * float(min[group]);
    const uint8_t* bytes = qs + 32 * (group / 2);
    const int shift = 4 * (group % 2);
    for (int l = 0; l < 32; ++l) {
      const uint32_t q = ((bytes[l] >> shift) & 0x0fu) | (((qh[l] >> group) & 1u) << 4);
      y[32 * group + l] = dl * float(q) - ml;
    }
  }
}

// 128 bytes of low nibbles (element 128 h + 64 n + l: nibble n of byte 64 h + l), 64 bytes of
// 2-bit high parts (laid out as two_bit()), 16 signed 8-bit group scales, d; values are offset by 32.
void decode_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_half(b + 208);
  for (int group = 0; group < 16; ++group) {
    const float dl = d * float(scales[group]);
    for (int e = 16 * group; e < 16 * group + 16; ++e) {
      const int h = e / 128, n = (e % 128) / 64, l = e % 64;
      const uint32_t low = (ql[64 * h + l] >> (4 * n)) & 0x0fu;
      y[e] = dl * float(int(low | (two_bit(qh, e) << 4)) - 32);
    }
  }
}

using BlockDecoder = void (*)(const uint8_t*, float*);

BlockDecoder decoder_for(GgmlType type) {
  switch (type) {
    case GgmlType::f32:
      return decode_f32;
    case GgmlType::f16:
      return decode_f16;
    case GgmlType::bf16:
      return decode_bf16;
    case GgmlType::q4_0:
      return decode_q4_0;
    case GgmlType::q4_1:
      return decode_q4_1;
    case GgmlType::q5_0:
      return decode_q5_0;
    case GgmlType::q5_1:
      return decode_q5_1;
    case GgmlType::q8_0:
      return decode_q8_0;
    case GgmlType::q2_k:
      return decode_q2_k;
    case GgmlType::q3_k:
      return decode_q3_k;
    case GgmlType::q4_k:
      return decode_q4_k;
    case GgmlType::q5_k:
      return decode_q5_k;
    case GgmlType::q6_k:
      return decode_q6_k;
    default:
      return nullptr;
  }
}

}  // namespace

std::optional<GgmlType> ggml_type_from_number(uint32_t number) {
  if (number > kMaxTypeNumber || kTraits[number].name.empty()) return std::nullopt;
  return GgmlType(number);
}

const GgmlTypeTraits& ggml_traits(GgmlType type) {
  const uint32_t number = uint32_t(type);
  SEER_CHECK(number <= kMaxTypeNumber && !kTraits[number].name.empty(), "unknown ggml type ", number);
  return kTraits[number];
}

void dequantize_ggml(GgmlType type, std::span<const uint8_t> src, std::span<float> dst) {
  const GgmlTypeTraits& traits = ggml_traits(type);
  const BlockDecoder decode = decoder_for(type);
  SEER_CHECK(decode != nullptr, "dequantization of ggml type ", traits.name, " is not supported");
  SEER_CHECK(src.size() % traits.type_size == 0, traits.name, ": ", src.size(), " bytes is not a whole number of ",
             traits.type_size, "-byte blocks");
  const size_t blocks = src.size() / traits.type_size;
  SEER_CHECK(dst.size() == blocks * traits.block_size, traits.name, ": ", blocks, " blocks decode to ",
             blocks * traits.block_size, " values, destination holds ", dst.size());
  for (size_t i = 0; i < blocks; ++i) decode(src.data() + i * traits.type_size, dst.data() + i * traits.block_size);
}

}  // namespace seer
