// The tensor element types of ggml, numbered as GGUF files store them, their block geometry, and
// dequantization of whole blocks to float32.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace seer {

// Numbers missing from the sequence were retired by ggml and are rejected as unknown.
enum class GgmlType : uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  iq2_xxs = 16,
  iq2_xs = 17,
  iq3_xxs = 18,
  iq1_s = 19,
  iq4_nl = 20,
  iq3_s = 21,
  iq2_s = 22,
  iq4_xs = 23,
  i8 = 24,
  i16 = 25,
  i32 = 26,
  i64 = 27,
  f64 = 28,
  iq1_m = 29,
  bf16 = 30,
  tq1_0 = 34,
  tq2_0 = 35,
  mxfp4 = 39,
  nvfp4 = 40,
  q1_0 = 41,
};

// A row of a tensor is stored as whole blocks: `block_size` elements in `type_size` bytes.
struct GgmlTypeTraits {
  std::string_view name;  // as ggml and gguf-py print it: "Q4_1", "BF16"
  uint32_t block_size;
  uint32_t type_size;
  bool dequantizable;  // whether dequantize_ggml() decodes it
};

// nullopt for numbers that are not a ggml type.
std::optional<GgmlType> ggml_type_from_number(uint32_t number);
const GgmlTypeTraits& ggml_traits(GgmlType type);
inline std::string_view ggml_type_name(GgmlType type) { return ggml_traits(type).name; }

// Decodes whole blocks of `type` from `src` into `dst` (block_size floats per type_size bytes), with
// the float32 operations in the order gguf-py's numpy code uses, so the results are bitwise equal
// to gguf.quants.dequantize. Throws seer::Error for a type it does not decode or mismatched sizes.
void dequantize_ggml(GgmlType type, std::span<const uint8_t> src, std::span<float> dst);

}  // namespace seer
