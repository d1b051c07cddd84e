// GGUF reader: metadata of every type, versions, tensor descriptions, and rejection of truncated,
// corrupted and hostile files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "formats/gguf.h"
#include "gguf_builder.h"
#include "test_support.h"

namespace seer {
namespace {

using test::expect_error;
using testing::array_of;
using testing::array_value;
using testing::Bytes;
using testing::GgufBuilder;
using testing::scalar;
using testing::string_array;
using testing::string_value;

Bytes f32_bytes(const std::vector<float>& values) {
  Bytes b(values.size() * sizeof(float));
  std::memcpy(b.data(), values.data(), b.size());
  return b;
}

// One key of every value type, arrays of every element type, nested arrays, and two tensors.
GgufBuilder every_type_file(uint32_t version) {
  GgufBuilder g;
  g.version = version;
  g.kv("u8", GgufType::uint8, scalar(uint8_t(200)))
      .kv("i8", GgufType::int8, scalar(int8_t(-100)))
      .kv("u16", GgufType::uint16, scalar(uint16_t(60000)))
      .kv("i16", GgufType::int16, scalar(int16_t(-30000)))
      .kv("u32", GgufType::uint32, scalar(uint32_t(4000000000u)))
      .kv("i32", GgufType::int32, scalar(int32_t(-2000000000)))
      .kv("f32", GgufType::float32, scalar(1.5f))
      .kv("bool", GgufType::boolean, scalar(uint8_t(1)))
      .kv("str", GgufType::string, string_value("héllo"))
      .kv("u64", GgufType::uint64, scalar(uint64_t(1) << 40))
      .kv("i64", GgufType::int64, scalar(int64_t(-1) << 40))
      .kv("f64", GgufType::float64, scalar(-2.25))
      .kv("a.u8", GgufType::array, array_of<uint8_t>(GgufType::uint8, {1, 2, 255}))
      .kv("a.i8", GgufType::array, array_of<int8_t>(GgufType::int8, {-1, 2}))
      .kv("a.u16", GgufType::array, array_of<uint16_t>(GgufType::uint16, {65535}))
      .kv("a.i16", GgufType::array, array_of<int16_t>(GgufType::int16, {-32768, 7}))
      .kv("a.u32", GgufType::array, array_of<uint32_t>(GgufType::uint32, {3, 4000000000u}))
      .kv("a.i32", GgufType::array, array_of<int32_t>(GgufType::int32, {-5, 6, 7}))
      .kv("a.f32", GgufType::array, array_of<float>(GgufType::float32, {0.5f, -1.0f}))
      .kv("a.bool", GgufType::array, array_of<uint8_t>(GgufType::boolean, {1, 0, 1}))
      .kv("a.str", GgufType::array, string_array({"a", "", "ccc"}))
      .kv("a.u64", GgufType::array, array_of<uint64_t>(GgufType::uint64, {uint64_t(1) << 63}))
      .kv("a.i64", GgufType::array, array_of<int64_t>(GgufType::int64, {-9, 9}))
      .kv("a.f64", GgufType::array, array_of<double>(GgufType::float64, {0.25, 1e300}))
      .kv("a.empty", GgufType::array, array_value(GgufType::int32, 0, {}));
  // [[ "x", "y" ], [ ]]: an array of two string arrays.
  Bytes nested = string_array({"x", "y"});
  testing::append(nested, string_array({}));
  g.kv("a.nested", GgufType::array, array_value(GgufType::array, 2, nested));
  g.tensor("weight", {4, 2}, GgmlType::f32, f32_bytes({1, 2, 3, 4, 5, 6, 7, 8}));
  g.tensor("bias", {3}, GgmlType::f32, f32_bytes({-1, -2, -3}));
  return g;
}

class GgufVersions : public ::testing::TestWithParam<uint32_t> {};

TEST_P(GgufVersions, ReadsEveryMetadataType) {
  const Bytes bytes = every_type_file(GetParam()).build();
  const GgufFile f = GgufFile::from_memory(bytes);
  EXPECT_EQ(f.version(), GetParam());
  EXPECT_EQ(f.alignment(), 32u);

  EXPECT_EQ(f.get_int("u8"), 200);
  EXPECT_EQ(f.get_int("i8"), -100);
  EXPECT_EQ(f.get_int("u16"), 60000);
  EXPECT_EQ(f.get_int("i16"), -30000);
  EXPECT_EQ(f.get_int("u32"), 4000000000ll);
  EXPECT_EQ(f.get_int("i32"), -2000000000);
  EXPECT_EQ(f.get_float("f32"), 1.5);
  EXPECT_TRUE(f.get_bool("bool"));
  EXPECT_EQ(f.get_string("str"), "héllo");
  EXPECT_EQ(f.get_int("u64"), int64_t(1) << 40);
  EXPECT_EQ(f.get_int("i64"), -(int64_t(1) << 40));
  EXPECT_EQ(f.get_float("f64"), -2.25);
  EXPECT_EQ(f.get_float("i32"), -2000000000.0);

  for (uint32_t t = 0; t <= uint32_t(GgufType::float64); ++t) {
    // Each scalar key holds the variant alternative whose index is its type number.
    const GgufValue* v = f.find(std::vector<std::string>{"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str",
                                                         "a.u8", "u64", "i64", "f64"}[t]);
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(uint32_t(v->type), t);
    EXPECT_EQ(v->value.index(), t);
  }

  const auto array = [&](const char* key) -> const GgufArray& {
    const GgufValue* v = f.find(key);
    EXPECT_EQ(v->type, GgufType::array);
    return std::get<GgufArray>(v->value);
  };
  EXPECT_EQ(std::get<std::vector<uint8_t>>(array("a.u8").elements), (std::vector<uint8_t>{1, 2, 255}));
  EXPECT_EQ(std::get<std::vector<int8_t>>(array("a.i8").elements), (std::vector<int8_t>{-1, 2}));
  EXPECT_EQ(std::get<std::vector<uint16_t>>(array("a.u16").elements), (std::vector<uint16_t>{65535}));
  EXPECT_EQ(std::get<std::vector<int16_t>>(array("a.i16").elements), (std::vector<int16_t>{-32768, 7}));
  EXPECT_EQ(std::get<std::vector<uint32_t>>(array("a.u32").elements), (std::vector<uint32_t>{3, 4000000000u}));
  EXPECT_EQ(std::get<std::vector<bool>>(array("a.bool").elements), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(std::get<std::vector<uint64_t>>(array("a.u64").elements), (std::vector<uint64_t>{uint64_t(1) << 63}));
  EXPECT_EQ(std::get<std::vector<int64_t>>(array("a.i64").elements), (std::vector<int64_t>{-9, 9}));
  EXPECT_EQ(std::get<std::vector<double>>(array("a.f64").elements), (std::vector<double>{0.25, 1e300}));
  EXPECT_EQ(array("a.empty").size(), 0u);
  EXPECT_EQ(array("a.empty").element_type, GgufType::int32);
  for (const char* key : {"a.u8", "a.i8", "a.u16", "a.i16", "a.u32", "a.i32", "a.f32", "a.bool", "a.str", "a.u64",
                          "a.i64", "a.f64", "a.nested"})
    EXPECT_EQ(array(key).elements.index(), size_t(array(key).element_type)) << key;

  EXPECT_EQ(f.get_int_array("a.i32"), (std::vector<int32_t>{-5, 6, 7}));
  EXPECT_EQ(f.get_int_array("a.i16"), (std::vector<int32_t>{-32768, 7}));
  EXPECT_EQ(f.get_float_array("a.f32"), (std::vector<float>{0.5f, -1.0f}));
  EXPECT_EQ(f.get_float_array("a.f64")[0], 0.25f);
  EXPECT_EQ(f.get_string_array("a.str"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_TRUE(f.get_int_array("a.empty").empty());

  const GgufArray& nested = array("a.nested");
  ASSERT_EQ(nested.element_type, GgufType::array);
  const auto& inner = std::get<std::vector<GgufArray>>(nested.elements);
  ASSERT_EQ(inner.size(), 2u);
  EXPECT_EQ(std::get<std::vector<std::string>>(inner[0].elements), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(inner[1].element_type, GgufType::string);
  EXPECT_EQ(inner[1].size(), 0u);

  const std::vector<std::string> keys = f.metadata_keys();
  ASSERT_EQ(keys.size(), 26u);
  EXPECT_EQ(keys.front(), "u8");  // file order
  EXPECT_EQ(keys.back(), "a.nested");
  EXPECT_EQ(f.find("missing"), nullptr);

  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensorInfo* w = f.find_tensor("weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dims, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(w->elements, 8);
  EXPECT_EQ(w->bytes, 32u);
  EXPECT_EQ(w->offset, 0u);
  EXPECT_EQ(f.dequantize(*w), (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}));
  const GgufTensorInfo* b = f.find_tensor("bias");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->offset, 32u);
  EXPECT_EQ(f.dequantize(*b), (std::vector<float>{-1, -2, -3}));
  EXPECT_EQ(f.find_tensor("absent"), nullptr);
}

INSTANTIATE_TEST_SUITE_P(V2AndV3, GgufVersions, ::testing::Values(2u, 3u));

TEST(Gguf, TypedAccessorsNameTheKeyOnMismatch) {
  const Bytes bytes = every_type_file(3).build();
  const GgufFile f = GgufFile::from_memory(bytes);
  expect_error([&] { f.get_string("u32"); }, {"'u32'", "uint32", "expected string"});
  expect_error([&] { f.get_int("str"); }, {"'str'", "string"});
  expect_error([&] { f.get_int("f32"); }, {"'f32'"});
  expect_error([&] { f.get_float("str"); }, {"'str'"});
  expect_error([&] { f.get_bool("u8"); }, {"'u8'"});
  expect_error([&] { f.get_string("nope"); }, {"missing key 'nope'"});
  expect_error([&] { f.get_string_array("a.i32"); }, {"'a.i32'", "int32"});
  expect_error([&] { f.get_float_array("a.i32"); }, {"'a.i32'"});
  expect_error([&] { f.get_int_array("a.f32"); }, {"'a.f32'"});
  expect_error([&] { f.get_int_array("str"); }, {"'str'"});
  expect_error([&] { f.get_int_array("a.u32"); }, {"'a.u32'", "4000000000", "int32"});
  expect_error([&] { f.get_int_array("a.u64"); }, {"'a.u64'"});

  GgufBuilder big;
  big.kv("huge", GgufType::uint64, scalar(std::numeric_limits<uint64_t>::max()));
  const Bytes big_bytes = big.build();
  const GgufFile g = GgufFile::from_memory(big_bytes);
  expect_error([&] { g.get_int("huge"); }, {"'huge'", "int64"});
}

TEST(Gguf, RejectsOtherVersionsAndMagic) {
  GgufBuilder g = every_type_file(1);
  expect_error([&] { GgufFile::from_memory(g.build()); }, {"version 1", "offset 4"});
  g.version = 4;
  expect_error([&] { GgufFile::from_memory(g.build()); }, {"version 4"});
  g.version = 0x03000000;
  expect_error([&] { GgufFile::from_memory(g.build()); }, {"big-endian"});
  Bytes bytes = every_type_file(3).build();
  bytes[0] = 'X';
  expect_error([&] { GgufFile::from_memory(bytes); }, {"not a GGUF file"});
  expect_error([&] { GgufFile::from_memory({}); }, {"truncated", "magic"});
}

TEST(Gguf, HonoursGeneralAlignment) {
  GgufBuilder g;
  g.alignment = 64;
  g.kv("general.alignment", GgufType::uint32, scalar(uint32_t(64)));
  g.tensor("a", {3}, GgmlType::f32, f32_bytes({1, 2, 3}));
  g.tensor("b", {2}, GgmlType::f32, f32_bytes({4, 5}));
  const Bytes bytes = g.build();
  const GgufFile f = GgufFile::from_memory(bytes);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.find_tensor("b")->offset, 64u);
  EXPECT_EQ(f.dequantize(*f.find_tensor("b")), (std::vector<float>{4, 5}));

  GgufBuilder odd;
  odd.kv("general.alignment", GgufType::uint32, scalar(uint32_t(48)));
  expect_error([&] { GgufFile::from_memory(odd.build()); }, {"general.alignment", "48", "power of two"});
  GgufBuilder zero;
  zero.kv("general.alignment", GgufType::uint32, scalar(uint32_t(0)));
  expect_error([&] { GgufFile::from_memory(zero.build()); }, {"general.alignment"});
  GgufBuilder typed;
  typed.kv("general.alignment", GgufType::uint64, scalar(uint64_t(32)));
  expect_error([&] { GgufFile::from_memory(typed.build()); }, {"general.alignment", "uint32"});

  GgufBuilder misaligned;
  misaligned.tensor("t", {2}, GgmlType::f32, f32_bytes({1, 2}));
  misaligned.tensors[0].offset = 8;
  expect_error([&] { GgufFile::from_memory(misaligned.build()); }, {"'t'", "offset 8", "alignment 32"});
}

// A file with one tensor "t" of the given description and 64 bytes of data.
Bytes one_tensor(std::vector<uint64_t> dims, uint32_t type, std::optional<uint64_t> offset = std::nullopt) {
  GgufBuilder g;
  g.tensors.push_back({"t", std::move(dims), type, Bytes(64), offset});
  return g.build();
}

TEST(Gguf, ValidatesTensorDescriptions) {
  expect_error([&] { GgufFile::from_memory(one_tensor({1, 1, 1, 1, 1}, 0)); }, {"'t'", "5 dimensions"});
  expect_error([&] { GgufFile::from_memory(one_tensor({4, 0}, 0)); }, {"'t'", "dimension 1 is 0"});
  expect_error([&] { GgufFile::from_memory(one_tensor({uint64_t(1) << 63}, 0)); }, {"'t'", "dimension 0"});
  expect_error([&] { GgufFile::from_memory(one_tensor({uint64_t(1) << 62, 4}, 0)); }, {"'t'", "overflow"});
  expect_error([&] { GgufFile::from_memory(one_tensor({16}, 4)); }, {"'t'", "unknown tensor type 4"});
  expect_error([&] { GgufFile::from_memory(one_tensor({16}, 1000)); }, {"unknown tensor type 1000"});
  expect_error([&] { GgufFile::from_memory(one_tensor({16}, uint32_t(GgmlType::q4_0))); },
               {"'t'", "row length 16", "Q4_0", "32"});
  expect_error([&] { GgufFile::from_memory(one_tensor({17}, 0)); }, {"'t'", "runs past the end"});
  expect_error([&] { GgufFile::from_memory(one_tensor({2}, 0, uint64_t(1) << 62)); }, {"'t'", "runs past the end"});
  expect_error([&] { GgufFile::from_memory(one_tensor({2}, 0, std::numeric_limits<uint64_t>::max() - 31)); },
               {"'t'", "runs past the end"});

  // A scalar (no dimensions) is one element.
  const Bytes scalar_bytes = one_tensor({}, 0);
  EXPECT_EQ(GgufFile::from_memory(scalar_bytes).find_tensor("t")->elements, 1);

  GgufBuilder overlap;
  overlap.tensor("a", {16}, GgmlType::f32, Bytes(64));
  overlap.tensor("b", {16}, GgmlType::f32, Bytes(64));
  overlap.tensors[1].offset = 32;
  expect_error([&] { GgufFile::from_memory(overlap.build()); }, {"'a'", "'b'", "overlap"});

  GgufBuilder twice;
  twice.tensor("same", {1}, GgmlType::f32, Bytes(4));
  twice.tensor("same", {1}, GgmlType::f32, Bytes(4));
  expect_error([&] { GgufFile::from_memory(twice.build()); }, {"'same'", "duplicate tensor name"});

  GgufBuilder unnamed;
  unnamed.tensor("", {1}, GgmlType::f32, Bytes(4));
  expect_error([&] { GgufFile::from_memory(unnamed.build()); }, {"empty tensor name"});
}

TEST(Gguf, ValidatesMetadata) {
  GgufBuilder dup;
  dup.kv("k", GgufType::uint8, scalar(uint8_t(1))).kv("k", GgufType::uint8, scalar(uint8_t(2)));
  expect_error([&] { GgufFile::from_memory(dup.build()); }, {"key 'k'", "duplicate key"});
  GgufBuilder empty;
  empty.kv("", GgufType::uint8, scalar(uint8_t(1)));
  expect_error([&] { GgufFile::from_memory(empty.build()); }, {"empty key"});
  GgufBuilder type13;
  type13.kv("k", GgufType(13), scalar(uint8_t(1)));
  expect_error([&] { GgufFile::from_memory(type13.build()); }, {"key 'k'", "unknown value type 13"});
  GgufBuilder element13;
  element13.kv("k", GgufType::array, array_value(GgufType(13), 1, scalar(uint8_t(1))));
  expect_error([&] { GgufFile::from_memory(element13.build()); }, {"key 'k'", "unknown array element type 13"});
  GgufBuilder bad_bool;
  bad_bool.kv("flag", GgufType::boolean, scalar(uint8_t(2)));
  expect_error([&] { GgufFile::from_memory(bad_bool.build()); }, {"key 'flag'", "bool value 2"});
}

// Counts and lengths claiming far more than the file holds must fail before anything of that size
// is allocated (ASan aborts on allocations over its limit, so this test would crash, not fail).
TEST(Gguf, RejectsHostileCountsWithoutAllocating) {
  const uint64_t huge = uint64_t(1) << 62;
  GgufBuilder kvs;
  kvs.kv_count = huge;
  expect_error([&] { GgufFile::from_memory(kvs.build()); }, {"metadata count"});
  GgufBuilder tensors;
  tensors.tensor_count = huge;
  expect_error([&] { GgufFile::from_memory(tensors.build()); }, {"tensor count"});
  for (const GgufType element : {GgufType::uint8, GgufType::float64, GgufType::string, GgufType::array}) {
    GgufBuilder array;
    array.kv("tokens", GgufType::array, array_value(element, huge, {}));
    expect_error([&] { GgufFile::from_memory(array.build()); }, {"key 'tokens'", "array of"});
  }
  GgufBuilder maximum;
  maximum.kv("k", GgufType::array, array_value(GgufType::float64, std::numeric_limits<uint64_t>::max(), {}));
  expect_error([&] { GgufFile::from_memory(maximum.build()); }, {"key 'k'", "more than 2^64"});
  GgufBuilder string;
  string.kv("name", GgufType::string, scalar(huge));
  expect_error([&] { GgufFile::from_memory(string.build()); }, {"key 'name'", "truncated", "string value"});
  GgufBuilder name;
  name.tensors.push_back({"", {1}, 0, Bytes(4), std::nullopt});
  Bytes bytes = name.build();
  const uint64_t at = 24;  // the tensor name length follows the 24-byte header
  std::memcpy(bytes.data() + at, &huge, sizeof huge);
  expect_error([&] { GgufFile::from_memory(bytes); }, {"tensor 0", "truncated", "tensor name"});
}

TEST(Gguf, RejectsDeeplyNestedArrays) {
  // Each level costs 12 bytes, so a small file could nest deep enough to overflow the stack if the
  // reader followed it.
  Bytes nested = array_value(GgufType::uint8, 0, {});
  for (int i = 0; i < 1000; ++i) nested = array_value(GgufType::array, 1, nested);
  GgufBuilder g;
  g.kv("deep", GgufType::array, nested);
  expect_error([&] { GgufFile::from_memory(g.build()); }, {"key 'deep'", "nested deeper"});
}

TEST(Gguf, EveryTruncationThrows) {
  for (const uint32_t version : {2u, 3u}) {
    const Bytes bytes = every_type_file(version).build();
    ASSERT_NO_THROW(GgufFile::from_memory(bytes));
    for (size_t n = 0; n < bytes.size(); ++n) {
      // A fresh allocation of exactly n bytes, so ASan catches any read past the prefix.
      const Bytes prefix(bytes.begin(), bytes.begin() + ptrdiff_t(n));
      EXPECT_THROW(GgufFile::from_memory(prefix), Error) << "prefix of " << n << " bytes";
    }
  }
}

TEST(Gguf, CorruptedBytesThrowOrParse) {
  const Bytes bytes = every_type_file(3).build();
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (const uint8_t pattern : {uint8_t(0xff), uint8_t(0x01), uint8_t(0x80)}) {
      Bytes corrupt = bytes;
      corrupt[i] ^= pattern;
      try {
        const GgufFile f = GgufFile::from_memory(corrupt);
        for (const GgufTensorInfo& t : f.tensors()) (void)f.dequantize(t);
      } catch (const Error&) {
        // Rejected with a message: fine. Anything else (a crash, another exception) fails the test.
      }
    }
  }
}

TEST(Gguf, OpensFilesAndSurvivesMoves) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("seer_gguf_test_" + std::to_string(::getpid()) + ".gguf");
  const Bytes bytes = every_type_file(3).build();
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  {
    GgufFile opened = GgufFile::open(path.string());
    const GgufFile moved = std::move(opened);
    EXPECT_EQ(moved.get_string("str"), "héllo");
    EXPECT_EQ(moved.dequantize(*moved.find_tensor("bias")), (std::vector<float>{-1, -2, -3}));
  }
  std::filesystem::resize_file(path, bytes.size() - 1);
  expect_error([&] { GgufFile::open(path.string()); }, {path.string(), "'bias'", "runs past the end"});
  std::filesystem::remove(path);
  expect_error([&] { GgufFile::open(path.string()); }, {"cannot open", path.string()});
  expect_error([&] { GgufFile::open(std::filesystem::temp_directory_path().string()); }, {"not a regular file"});
}

TEST(Gguf, TensorsFromElsewhereAndUndecodedTypes) {
  GgufBuilder g;
  g.tensor("iq", {256}, GgmlType::iq2_xxs, Bytes(66));
  const Bytes bytes = g.build();
  const GgufFile f = GgufFile::from_memory(bytes);
  const GgufTensorInfo& iq = f.tensors()[0];
  EXPECT_EQ(iq.bytes, 66u);
  EXPECT_EQ(f.tensor_data(iq).size(), 66u);
  expect_error([&] { f.dequantize(iq); }, {"'iq'", "IQ2_XXS", "not supported"});
  GgufTensorInfo foreign = iq;
  foreign.name = "elsewhere";
  expect_error([&] { f.tensor_data(foreign); }, {"no tensor 'elsewhere'"});
}

}  // namespace
}  // namespace seer
