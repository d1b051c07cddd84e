// Dequantization: every decoded type against an element-by-element reference decoder written from
// the block layouts, against gguf-py's numbers (gguf_reference.json, from make_gguf_reference.py),
// and on every tensor of the built-in model.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/ggml_types.h"
#include "formats/gguf.h"
#include "formats/half.h"
#include "gguf_builder.h"

namespace seer {
namespace {

using testing::Bytes;
using testing::GgufBuilder;

const std::filesystem::path kReferencePath = std::filesystem::path(SEER_FORMATS_TEST_DIR) / "gguf_reference.json";
const std::filesystem::path kModelPath =
    std::filesystem::path(SEER_SOURCE_DIR) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";

const GgmlType kDecodedTypes[] = {GgmlType::f32,  GgmlType::f16,  GgmlType::bf16, GgmlType::q4_0, GgmlType::q4_1,
                                  GgmlType::q5_0, GgmlType::q5_1, GgmlType::q8_0, GgmlType::q2_k, GgmlType::q3_k,
                                  GgmlType::q4_k, GgmlType::q5_k, GgmlType::q6_k};

// binary16 from its definition, computed in double (exact) and narrowed (exact as well).
float reference_half(uint16_t bits) {
  const int exponent = (bits >> 10) & 31, mantissa = bits & 1023;
  double magnitude;
  if (exponent == 31)
    magnitude = mantissa != 0 ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (exponent == 0)
    magnitude = std::ldexp(double(mantissa), -24);
  else
    magnitude = std::ldexp(double(1024 + mantissa), exponent - 25);
  return float((bits & 0x8000) != 0 ? -magnitude : magnitude);
}

TEST(Half, EveryBitPatternConvertsExactly) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const float got = half_to_float(uint16_t(bits));
    const float want = reference_half(uint16_t(bits));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << bits;
      // The payload and sign are kept, not replaced by a canonical NaN.
      EXPECT_EQ(std::bit_cast<uint32_t>(got), ((bits & 0x8000u) << 16) | 0x7f800000u | ((bits & 0x3ffu) << 13));
    } else {
      ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want)) << "half bits " << bits;
    }
  }
  EXPECT_EQ(bf16_bits_to_float(0x3f80), 1.0f);
  EXPECT_EQ(std::bit_cast<uint32_t>(bf16_bits_to_float(0xff81)), 0xff810000u);
}

uint16_t u16_at(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Element e (< 32) of the 32-element nibble layout: low nibbles hold 0..15, high nibbles 16..31.
uint32_t nibble32(const uint8_t* q, int e) { return e < 16 ? q[e] & 15u : q[e - 16] >> 4; }
// Element e (< 256) of a K-quant 2-bit plane: 128-element halves, 32 bytes each, 4 shifts per byte.
uint32_t crumb(const uint8_t* q, int e) { return (q[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3u; }
// Scale and min of 32-element group g of Q4_K / Q5_K from their 12 packed bytes.
std::pair<uint32_t, uint32_t> k_scale_min(const uint8_t* p, int g) {
  if (g < 4) return {p[g] & 63u, p[g + 4] & 63u};
  return {(p[g + 4] & 15u) | ((p[g - 4] >> 6) << 4), (p[g + 4] >> 4) | ((p[g] >> 6) << 4)};
}

// Element e of one block, computed on its own from the layout (operation order as in gguf-py).
float reference_element(GgmlType type, const uint8_t* b, int e) {
  const auto half = [b](int offset) { return reference_half(u16_at(b + offset)); };
  switch (type) {
    case GgmlType::f32: {
      float v;
      std::memcpy(&v, b, 4);
      return v;
    }
    case GgmlType::f16:
      return half(0);
    case GgmlType::bf16:
      return std::bit_cast<float>(uint32_t(u16_at(b)) << 16);
    case GgmlType::q4_0:
      return half(0) * float(int(nibble32(b + 2, e)) - 8);
    case GgmlType::q4_1:
      return half(0) * float(nibble32(b + 4, e)) + half(2);
    case GgmlType::q5_0: {
      const uint32_t q = nibble32(b + 6, e) | (((u32_at(b + 2) >> e) & 1u) << 4);
      return half(0) * float(int(q) - 16);
    }
    case GgmlType::q5_1: {
      const uint32_t q = nibble32(b + 8, e) | (((u32_at(b + 4) >> e) & 1u) << 4);
      return half(0) * float(q) + half(2);
    }
    case GgmlType::q8_0:
      return float(int8_t(b[2 + e])) * half(0);
    case GgmlType::q2_k: {
      const uint8_t sc = b[e / 16];
      return half(80) * float(sc & 15) * float(crumb(b + 16, e)) - half(82) * float(sc >> 4);
    }
    case GgmlType::q3_k: {
      const int s = e / 16;
      const uint32_t low = s < 8 ? b[96 + s] & 15u : b[96 + s - 8] >> 4u;
      const uint32_t high = (b[104 + s % 4] >> (2 * (s / 4))) & 3u;
      const bool high_bit = (b[e % 32] >> (e / 32)) & 1u;
      return half(108) * float(int(low | (high << 4)) - 32) * float(int(crumb(b + 32, e)) - (high_bit ? 0 : 4));
    }
    case GgmlType::q4_k: {
      const int g = e / 32;
      const auto [sc, mn] = k_scale_min(b + 4, g);
      const uint32_t q = (b[16 + 32 * (g / 2) + e % 32] >> (4 * (g % 2))) & 15u;
      return half(0) * float(sc) * float(q) - half(2) * float(mn);
    }
    case GgmlType::q5_k: {
      const int g = e / 32;
      const auto [sc, mn] = k_scale_min(b + 4, g);
      const uint32_t q = ((b[48 + 32 * (g / 2) + e % 32] >> (4 * (g % 2))) & 15u) | (((b[16 + e % 32] >> g) & 1u) << 4);
      return half(0) * float(sc) * float(q) - half(2) * float(mn);
    }
    case GgmlType::q6_k: {
      const uint32_t low = (b[64 * (e / 128) + e % 64] >> (4 * ((e % 128) / 64))) & 15u;
      const int q = int(low | (crumb(b + 128, e) << 4)) - 32;
      return half(208) * float(int8_t(b[192 + e / 16])) * float(q);
    }
    default:
      ADD_FAILURE() << "no reference decoder for " << ggml_type_name(type);
      return 0;
  }
}

uint32_t canonical_bits(float v) { return std::isnan(v) ? 0x7fc00000u : std::bit_cast<uint32_t>(v); }

// A GGUF file holding one `rows` x `blocks_per_row` blocks tensor "t" of `type` with bytes from
// splitmix64(seed), as make_gguf_reference.py generates them.
Bytes synthetic_file(GgmlType type, uint64_t seed, int rows, int blocks_per_row) {
  const GgmlTypeTraits& traits = ggml_traits(type);
  GgufBuilder g;
  g.tensor("t", {uint64_t(blocks_per_row) * traits.block_size, uint64_t(rows)}, type,
           testing::splitmix64_bytes(seed, size_t(rows) * size_t(blocks_per_row) * traits.type_size));
  return g.build();
}

TEST(Dequantize, EveryTypeMatchesTheReferenceDecoderThroughAFile) {
  for (const GgmlType type : kDecodedTypes) {
    const GgmlTypeTraits& traits = ggml_traits(type);
    // Random bytes make every bit pattern of quants and scales appear, including inf and NaN scales.
    const Bytes bytes = synthetic_file(type, 42 + uint32_t(type), 3, 5);
    const GgufFile file = GgufFile::from_memory(bytes);
    const GgufTensorInfo& t = file.tensors()[0];
    const std::vector<float> got = file.dequantize(t);
    ASSERT_EQ(got.size(), size_t(15 * traits.block_size));
    const std::span<const uint8_t> data = file.tensor_data(t);
    for (size_t i = 0; i < got.size(); ++i) {
      const float want =
          reference_element(type, data.data() + i / traits.block_size * traits.type_size, int(i % traits.block_size));
      ASSERT_EQ(canonical_bits(got[i]), canonical_bits(want)) << traits.name << " element " << i;
    }
  }
}

TEST(Dequantize, RejectsMismatchedSizesAndUndecodedTypes) {
  std::vector<float> out(32);
  const Bytes block(34);
  EXPECT_NO_THROW(dequantize_ggml(GgmlType::q8_0, block, out));
  EXPECT_THROW(dequantize_ggml(GgmlType::q8_0, std::span(block).first(33), out), Error);
  EXPECT_THROW(dequantize_ggml(GgmlType::q8_0, block, std::span(out).first(31)), Error);
  EXPECT_THROW(dequantize_ggml(GgmlType::iq4_nl, Bytes(18), out), Error);
  EXPECT_THROW(ggml_traits(GgmlType(4)), Error);
  EXPECT_FALSE(ggml_type_from_number(4).has_value());
  EXPECT_FALSE(ggml_type_from_number(100).has_value());
  EXPECT_EQ(ggml_type_from_number(39), GgmlType::mxfp4);
}

struct Checksums {
  uint64_t sum = 0;
  uint64_t weighted = 0;
};

// The checksums make_gguf_reference.py computes (unsigned arithmetic wraps modulo 2^64 as numpy's).
Checksums checksums(const std::vector<float>& values, bool canonical_nan) {
  Checksums c;
  for (size_t i = 0; i < values.size(); ++i) {
    const uint64_t bits = canonical_nan ? canonical_bits(values[i]) : std::bit_cast<uint32_t>(values[i]);
    c.sum += bits;
    c.weighted += bits * (2 * uint64_t(i) + 1);
  }
  return c;
}

void expect_matches_reference(const std::vector<float>& values, const nlohmann::json& want, bool canonical_nan,
                              const std::string& what) {
  ASSERT_EQ(values.size(), want["elements"].get<size_t>()) << what;
  for (const auto& sample : want["samples"]) {
    const size_t i = sample[0].get<size_t>();
    const uint32_t bits = canonical_nan ? canonical_bits(values[i]) : std::bit_cast<uint32_t>(values[i]);
    EXPECT_EQ(bits, sample[1].get<uint32_t>()) << what << " element " << i << " = " << values[i];
  }
  const Checksums got = checksums(values, canonical_nan);
  EXPECT_EQ(got.sum, want["sum"].get<uint64_t>()) << what;
  EXPECT_EQ(got.weighted, want["weighted"].get<uint64_t>()) << what;
}

nlohmann::json load_reference() {
  std::ifstream in(kReferencePath);
  EXPECT_TRUE(in.good()) << "cannot read " << kReferencePath;
  return nlohmann::json::parse(in);
}

TEST(Dequantize, BitwiseEqualToGgufPyOnSyntheticBlocks) {
  const nlohmann::json synthetic = load_reference()["synthetic"];
  const int rows = synthetic["rows"].get<int>(), blocks = synthetic["blocks_per_row"].get<int>();
  const uint64_t seed_base = synthetic["seed_base"].get<uint64_t>();
  ASSERT_EQ(synthetic["types"].size(), std::size(kDecodedTypes));
  for (const auto& [name, want] : synthetic["types"].items()) {
    const GgmlType type = GgmlType(want["number"].get<uint32_t>());
    ASSERT_EQ(ggml_type_name(type), name);
    const Bytes bytes = synthetic_file(type, seed_base + uint32_t(type), rows, blocks);
    const GgufFile file = GgufFile::from_memory(bytes);
    expect_matches_reference(file.dequantize(file.tensors()[0]), want, true, name);
  }
}

TEST(BuiltInModel, EveryTensorBitwiseEqualToGgufPy) {
  if (!std::filesystem::exists(kModelPath)) GTEST_SKIP() << kModelPath << " is absent: run scripts/fetch_model.sh";
  const nlohmann::json model = load_reference()["model"];
  const GgufFile file = GgufFile::open(kModelPath.string());
  ASSERT_EQ(file.tensors().size(), model["tensors"].size());
  for (const auto& [name, want] : model["tensors"].items()) {
    const GgufTensorInfo* t = file.find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(ggml_type_name(t->type), want["type"].get<std::string>()) << name;
    EXPECT_EQ(t->dims, want["dims"].get<std::vector<int64_t>>()) << name;
    expect_matches_reference(file.dequantize(*t), want, false, name);
  }
}

TEST(BuiltInModel, MetadataDescribesSmolLM2) {
  if (!std::filesystem::exists(kModelPath)) GTEST_SKIP() << kModelPath << " is absent: run scripts/fetch_model.sh";
  const GgufFile f = GgufFile::open(kModelPath.string());
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("llama.block_count"), 30);
  EXPECT_EQ(f.get_int("llama.embedding_length"), 576);
  EXPECT_EQ(f.get_int("llama.attention.head_count"), 9);
  EXPECT_EQ(f.get_int("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(f.get_float("llama.rope.freq_base"), 100000.0);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  const std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 49152u);
  EXPECT_EQ(tokens[1], "<|im_start|>");
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.merges").size(), 48900u);
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type").size(), 49152u);
  std::map<std::string_view, int> by_type;
  for (const GgufTensorInfo& t : f.tensors()) ++by_type[ggml_type_name(t.type)];
  EXPECT_EQ(by_type, (std::map<std::string_view, int>{{"F32", 61}, {"Q4_1", 210}, {"Q8_0", 1}}));
}

}  // namespace
}  // namespace seer
