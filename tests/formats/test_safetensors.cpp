// safetensors: write -> read round trips, sharded model directories, config.json, and rejection of
// bad headers, truncated and corrupted files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/bf16.h"
#include "core/error.h"
#include "formats/safetensors.h"
#include "test_support.h"

namespace seer {
namespace {

namespace fs = std::filesystem;
using test::expect_error;
using test::TempDir;
using Bytes = std::vector<uint8_t>;


template <typename T>
std::span<const uint8_t> bytes_of(const std::vector<T>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)};
}

void write_text(const fs::path& path, std::string_view text) {
  std::ofstream(path, std::ios::binary).write(text.data(), std::streamsize(text.size()));
}

Bytes read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

// A file from a literal header and `data_size` zero bytes of data.
Bytes raw_file(std::string_view header, size_t data_size = 0) {
  Bytes b(8 + header.size() + data_size);
  const uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  return b;
}

// Tensors of several dtypes and shapes, including a scalar and an empty tensor.
struct Sample {
  std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-40f};
  std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x7c00, 0x0001};  // 1, -2, inf, smallest subnormal
  std::vector<uint16_t> brain = {bf16(1.0f).bits, bf16(-3.5f).bits, bf16(1e30f).bits};
  std::vector<int32_t> i32 = {-7, 8};
  std::vector<int64_t> i64 = {int64_t(1) << 40};
  std::vector<uint8_t> u8 = {1, 2, 3};
  std::vector<float> scalar = {42.0f};

  std::vector<SafetensorsWriteTensor> tensors() const {
    return {
        {"model.layers.0.weight", SafetensorsDtype::f32, {2, 3}, bytes_of(f32)},
        {"half", SafetensorsDtype::f16, {4}, bytes_of(f16)},
        {"brain", SafetensorsDtype::bf16, {3, 1}, bytes_of(brain)},
        {"ints", SafetensorsDtype::i32, {2}, bytes_of(i32)},
        {"longs", SafetensorsDtype::i64, {1}, bytes_of(i64)},
        {"bytes", SafetensorsDtype::u8, {3}, bytes_of(u8)},
        {"scalar", SafetensorsDtype::f32, {}, bytes_of(scalar)},
        {"empty", SafetensorsDtype::f32, {0, 5}, {}},
    };
  }
};

TEST(Safetensors, WriteThenReadRoundTrips) {
  TempDir dir;
  const fs::path path = dir.path() / "x.safetensors";
  const Sample s;
  write_safetensors(path.string(), s.tensors(), {{"format", "pt"}, {"step", "12"}});

  const SafetensorsFile f = SafetensorsFile::open(path.string());
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"step", "12"}}));
  ASSERT_EQ(f.tensors().size(), 8u);
  EXPECT_TRUE(std::is_sorted(f.tensors().begin(), f.tensors().end(),
                             [](const auto& a, const auto& b) { return a.name < b.name; }));
  const SafetensorsTensor* w = f.find("model.layers.0.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, SafetensorsDtype::f32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w->elements, 6);
  EXPECT_EQ(w->begin, 0u);  // data in the order written
  const std::vector<float> f32 = f.to_float("model.layers.0.weight");
  ASSERT_EQ(f32.size(), s.f32.size());
  for (size_t i = 0; i < f32.size(); ++i) EXPECT_EQ(std::bit_cast<uint32_t>(f32[i]), std::bit_cast<uint32_t>(s.f32[i]));
  const std::vector<float> half = f.to_float("half");
  EXPECT_EQ(half[0], 1.0f);
  EXPECT_EQ(half[1], -2.0f);
  EXPECT_TRUE(std::isinf(half[2]));
  EXPECT_EQ(half[3], 0x1p-24f);
  EXPECT_EQ(f.to_float("brain"), (std::vector<float>{1.0f, -3.5f, float(bf16(1e30f))}));
  EXPECT_EQ(f.to_float("scalar"), (std::vector<float>{42.0f}));
  EXPECT_EQ(f.find("scalar")->elements, 1);
  EXPECT_TRUE(f.to_float("empty").empty());
  EXPECT_EQ(f.find("empty")->elements, 0);

  const std::span<const uint8_t> ints = f.data("ints");
  ASSERT_EQ(ints.size(), 8u);
  EXPECT_EQ(0, std::memcmp(ints.data(), s.i32.data(), 8));
  EXPECT_EQ(0, std::memcmp(f.data("longs").data(), s.i64.data(), 8));
  EXPECT_EQ(0, std::memcmp(f.data("bytes").data(), s.u8.data(), 3));
  expect_error([&] { f.to_float("ints"); }, {"'ints'", "I32", "data()"});
  expect_error([&] { f.data("nope"); }, {"no tensor 'nope'"});
  EXPECT_EQ(f.find("nope"), nullptr);

  // The header is padded so that the data section starts 8-byte aligned.
  const Bytes raw = read_bytes(path);
  uint64_t header_bytes;
  std::memcpy(&header_bytes, raw.data(), 8);
  EXPECT_EQ((8 + header_bytes) % 8, 0u);
}

TEST(Safetensors, WriteReplacesAtomicallyAndCleansUp) {
  TempDir dir;
  const fs::path path = dir.path() / "ckpt.safetensors";
  const std::vector<float> first = {1, 2}, second = {3, 4, 5};
  write_safetensors(path.string(),
                    std::vector<SafetensorsWriteTensor>{{"w", SafetensorsDtype::f32, {2}, bytes_of(first)}});
  write_safetensors(path.string(),
                    std::vector<SafetensorsWriteTensor>{{"w", SafetensorsDtype::f32, {3}, bytes_of(second)}});
  EXPECT_EQ(SafetensorsFile::open(path.string()).to_float("w"), second);

  // A rejected write leaves the previous file untouched and no temporary file behind.
  expect_error(
      [&] {
        write_safetensors(path.string(),
                          std::vector<SafetensorsWriteTensor>{{"w", SafetensorsDtype::f32, {4}, bytes_of(first)}});
      },
      {"'w'", "8 bytes", "need 16"});
  expect_error(
      [&] {
        write_safetensors(path.string(),
                          std::vector<SafetensorsWriteTensor>{{"a", SafetensorsDtype::f32, {2}, bytes_of(first)},
                                                              {"a", SafetensorsDtype::f32, {2}, bytes_of(first)}});
      },
      {"duplicate tensor 'a'"});
  expect_error(
      [&] {
        write_safetensors(path.string(),
                          std::vector<SafetensorsWriteTensor>{{"__metadata__", SafetensorsDtype::u8, {0}, {}}});
      },
      {"invalid tensor name"});
  expect_error(
      [&] {
        write_safetensors((dir.path() / "missing" / "x.safetensors").string(), std::vector<SafetensorsWriteTensor>{});
      },
      {"temporary file"});
  EXPECT_EQ(SafetensorsFile::open(path.string()).to_float("w"), second);
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    ++files;
    EXPECT_EQ(entry.path().filename(), "ckpt.safetensors");
  }
  EXPECT_EQ(files, 1u);
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::others_read, fs::perms::others_read);
}

TEST(Safetensors, RejectsBadHeaders) {
  const auto rejects = [](std::string_view header, size_t data, std::initializer_list<std::string_view> parts) {
    const Bytes file = raw_file(header, data);
    expect_error([&] { SafetensorsFile::from_memory(file); }, parts);
  };
  const auto ok = [](std::string_view header, size_t data) {
    const Bytes file = raw_file(header, data);
    EXPECT_NO_THROW(SafetensorsFile::from_memory(file)) << header;
  };
  ok(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
  ok(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}      )", 8);  // space padding
  ok("{}", 0);
  rejects("{", 0, {"invalid JSON"});
  rejects("[1]", 0, {"must be a JSON object"});
  rejects(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8, {"'a'", "unknown dtype 'F33'"});
  rejects(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, {"'a'", "shape dimension"});
  rejects(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8, {"'a'", "shape dimension"});
  rejects(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8, {"'a'", "shape must be an array"});
  rejects(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, {"'a'", "not inside"});
  rejects(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8, {"'a'", "[0, 16)", "8-byte data section"});
  rejects(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, {"'a'", "span 8 bytes", "needs 12"});
  rejects(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8, {"'a'", "[begin, end]"});
  rejects(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", 8, {"'a'", "unknown field 'extra'"});
  rejects(R"({"a":{"dtype":"F32","shape":[2]}})", 8, {"'a'", "needs dtype"});
  rejects(R"({"a":[1]})", 8, {"'a'", "must be an object"});
  rejects(R"({"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0, {"empty tensor name"});
  rejects(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8, {"'a'", "overflow"});
  rejects(R"({"a":{"dtype":"F64","shape":[2147483648,2147483648],"data_offsets":[0,8]}})", 8, {"'a'", "overflow"});
  rejects(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      12, {"'a'", "'b'", "overlap"});
  rejects(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
      8, {"duplicate key 'a'"});
  rejects(R"({"a":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}})", 8, {"duplicate key 'dtype'"});
  rejects(R"({"__metadata__":{"k":1}})", 0, {"__metadata__", "'k'"});
  rejects(R"({"__metadata__":[]})", 0, {"__metadata__"});
  rejects(R"({"a":{"dtype":"F32","shape":[[[[[1]]]]],"data_offsets":[0,4]}})", 4, {"nested deeper"});
  rejects("{\"a\xff\":1}", 0, {"invalid JSON"});

  Bytes huge = raw_file("{}");
  const uint64_t length = uint64_t(1) << 40;
  std::memcpy(huge.data(), &length, 8);
  expect_error([&] { SafetensorsFile::from_memory(huge); }, {"header length", "limit"});
  Bytes longer = raw_file("{}");
  const uint64_t three = 3;
  std::memcpy(longer.data(), &three, 8);
  expect_error([&] { SafetensorsFile::from_memory(longer); }, {"truncated", "header needs 3"});
}

Bytes sample_file_bytes() {
  TempDir dir;
  const fs::path path = dir.path() / "s.safetensors";
  write_safetensors(path.string(), Sample().tensors(), {{"k", "v"}});
  return read_bytes(path);
}

TEST(Safetensors, EveryTruncationThrows) {
  Bytes bytes = sample_file_bytes();
  // The sample ends with a zero-byte tensor at the end of the data; drop trailing bytes that no
  // tensor covers so that every shorter prefix really is missing something.
  const SafetensorsFile full = SafetensorsFile::from_memory(bytes);
  uint64_t header_bytes;
  std::memcpy(&header_bytes, bytes.data(), 8);
  uint64_t end = 0;
  for (const SafetensorsTensor& t : full.tensors()) end = std::max(end, t.end);
  ASSERT_EQ(bytes.size(), 8 + header_bytes + end);
  for (size_t n = 0; n < bytes.size(); ++n) {
    const Bytes prefix(bytes.begin(), bytes.begin() + ptrdiff_t(n));
    EXPECT_THROW(SafetensorsFile::from_memory(prefix), Error) << "prefix of " << n << " bytes";
  }
}

TEST(Safetensors, CorruptedBytesThrowOrParse) {
  const Bytes bytes = sample_file_bytes();
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (const uint8_t pattern : {uint8_t(0xff), uint8_t(0x01), uint8_t(0x20)}) {
      Bytes corrupt = bytes;
      corrupt[i] ^= pattern;
      try {
        const SafetensorsFile f = SafetensorsFile::from_memory(corrupt);
        for (const SafetensorsTensor& t : f.tensors()) {
          (void)f.data(t.name);
          if (t.dtype == SafetensorsDtype::f32 || t.dtype == SafetensorsDtype::f16 || t.dtype == SafetensorsDtype::bf16)
            (void)f.to_float(t.name);
        }
      } catch (const Error&) {
        // Rejected with a message: fine. Anything else (a crash, another exception) fails the test.
      }
    }
  }
}

constexpr std::string_view kLlamaConfig = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
  "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
  "head_dim": 64, "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}
})";

TEST(HfConfig, ReadsLlama3WithRopeScaling) {
  const HfConfig c = parse_hf_config(kLlamaConfig);
  EXPECT_EQ(c.architecture, HfConfig::Architecture::llama);
  EXPECT_EQ(architecture_name(c.architecture), "llama");
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.num_layers, 16);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.intermediate_size, 8192);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope.theta, 500000.0);
  EXPECT_EQ(c.rope.scaling, RopeConfig::Scaling::llama3);
  EXPECT_EQ(c.rope.factor, 32.0);
  EXPECT_EQ(c.rope.low_freq_factor, 1.0);
  EXPECT_EQ(c.rope.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope.original_max_positions, 8192.0);
}

TEST(HfConfig, ReadsQwen2YarnAndDefaults) {
  const HfConfig q = parse_hf_config(R"({
    "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "rope_theta": 1000000.0,
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-06,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}})");
  EXPECT_EQ(q.architecture, HfConfig::Architecture::qwen2);
  EXPECT_EQ(q.head_dim, 64);  // hidden_size / num_attention_heads
  EXPECT_FALSE(q.tie_word_embeddings);
  EXPECT_EQ(q.rope.scaling, RopeConfig::Scaling::yarn);
  EXPECT_EQ(q.rope.factor, 4.0);
  EXPECT_EQ(q.rope.beta_fast, 32.0);
  EXPECT_EQ(q.rope.beta_slow, 1.0);
  EXPECT_EQ(q.rope.yarn_attention_factor, 0.0);

  const HfConfig m = parse_hf_config(R"({
    "architectures": ["MistralForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32768, "head_dim": null,
    "rope_scaling": null})");
  EXPECT_EQ(m.architecture, HfConfig::Architecture::mistral);
  EXPECT_EQ(m.num_kv_heads, 32);
  EXPECT_EQ(m.head_dim, 128);
  EXPECT_EQ(m.max_position_embeddings, 4096 * 32);
  EXPECT_EQ(m.rope.theta, 10000.0);
  EXPECT_EQ(m.rope.scaling, RopeConfig::Scaling::none);

  // transformers 5 moves rope_theta and the scaling into rope_parameters.
  const HfConfig v5 = parse_hf_config(R"({
    "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
    "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}})");
  EXPECT_EQ(v5.rope.theta, 100000.0);
  EXPECT_EQ(v5.rope.scaling, RopeConfig::Scaling::none);
  EXPECT_EQ(v5.head_dim, 64);
}

TEST(HfConfig, RejectsUnsupportedOrInconsistentConfigs) {
  const std::string base = R"("hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "vocab_size": 100)";
  const auto config = [&](std::string_view extra) { return "{" + base + ", " + std::string(extra) + "}"; };
  expect_error([&] { parse_hf_config(config(R"("model_type": "gemma")")); }, {"unsupported architecture 'gemma'"});
  expect_error([&] { parse_hf_config(config(R"("architectures": ["GPT2LMHeadModel"])")); },
               {"unsupported architecture 'GPT2LMHeadModel'"});
  expect_error([&] { parse_hf_config("{" + base + "}"); }, {"model_type"});
  expect_error([&] { parse_hf_config(config(R"("model_type": "llama", "num_key_value_heads": 3)")); },
               {"num_key_value_heads (3)"});
  expect_error([&] { parse_hf_config(config(R"("model_type": "llama", "hidden_size": 0)")); }, {"'hidden_size'"});
  expect_error([&] { parse_hf_config(config(R"("model_type": "llama", "head_dim": 7)")); }, {"head_dim 7"});
  expect_error([&] { parse_hf_config(config(R"("model_type": "llama", "vocab_size": "big")")); }, {"'vocab_size'"});
  expect_error([&] { parse_hf_config(R"({"model_type": "llama", "hidden_size": 64})"); },
               {"missing 'num_hidden_layers'"});
  expect_error(
      [&] { parse_hf_config(config(R"("model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2})")); },
      {"unsupported RoPE scaling type 'linear'"});
  expect_error(
      [&] {
        parse_hf_config(config(R"("model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8})"));
      },
      {"llama3", "low_freq_factor"});
  expect_error(
      [&] {
        parse_hf_config(config(R"("model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 0.5})"));
      },
      {"factor"});
  expect_error(
      [&] {
        parse_hf_config(
            config(R"("model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4, "mscale": 1})"));
      },
      {"mscale"});
  expect_error([&] { parse_hf_config("not json"); }, {"invalid JSON"});
}

// A model directory: config.json and two shards listed by an index.
void write_sharded_model(const fs::path& dir, const std::vector<float>& a, const std::vector<float>& b) {
  write_text(dir / "config.json", kLlamaConfig);
  write_safetensors((dir / "model-00001-of-00002.safetensors").string(),
                    std::vector<SafetensorsWriteTensor>{{"a", SafetensorsDtype::f32, {2}, bytes_of(a)}});
  write_safetensors((dir / "model-00002-of-00002.safetensors").string(),
                    std::vector<SafetensorsWriteTensor>{{"b", SafetensorsDtype::f32, {3}, bytes_of(b)}});
  write_text(dir / "model.safetensors.index.json", R"({"metadata": {"total_size": 20}, "weight_map": {
    "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})");
}

TEST(SafetensorsModel, OpensShardedDirectories) {
  TempDir dir;
  const std::vector<float> a = {1, 2}, b = {3, 4, 5};
  write_sharded_model(dir.path(), a, b);
  const SafetensorsModel m = SafetensorsModel::open(dir.path().string());
  EXPECT_EQ(m.shard_count(), 2u);
  EXPECT_EQ(m.config().num_layers, 16);
  EXPECT_EQ(m.tensor_names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(m.to_float("a"), a);
  EXPECT_EQ(m.to_float("b"), b);
  EXPECT_EQ(m.find("b")->shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(m.data("b").size(), 12u);
  EXPECT_EQ(m.find("c"), nullptr);
  expect_error([&] { m.to_float("c"); }, {"no tensor 'c'"});
}

TEST(SafetensorsModel, RejectsInconsistentIndexes) {
  TempDir dir;
  write_sharded_model(dir.path(), {1, 2}, {3, 4, 5});
  const fs::path index = dir.path() / "model.safetensors.index.json";
  const std::string root = dir.path().string();

  write_text(index, R"({"weight_map": {"a": "model-00002-of-00002.safetensors"}})");
  expect_error([&] { SafetensorsModel::open(root); }, {"tensor 'a' is not in model-00002-of-00002.safetensors"});
  write_text(index, R"({"weight_map": {"a": "../model-00001-of-00002.safetensors"}})");
  expect_error([&] { SafetensorsModel::open(root); }, {"not a file in the same directory"});
  write_text(index, R"({"weight_map": {"a": "missing.safetensors"}})");
  expect_error([&] { SafetensorsModel::open(root); }, {"missing.safetensors"});
  write_text(index, R"({"weight_map": {}})");
  expect_error([&] { SafetensorsModel::open(root); }, {"weight_map is empty"});
  write_text(index, R"({"weight_map": {"a": 1}})");
  expect_error([&] { SafetensorsModel::open(root); }, {"'a'", "file name"});
  write_text(index, R"({"metadata": {}})");
  expect_error([&] { SafetensorsModel::open(root); }, {"weight_map"});
  fs::remove(index);
  expect_error([&] { SafetensorsModel::open(root); }, {"neither model.safetensors nor"});
  fs::remove(dir.path() / "config.json");
  expect_error([&] { SafetensorsModel::open(root); }, {"config.json"});
}

TEST(SafetensorsModel, OpensSingleFileDirectories) {
  TempDir dir;
  write_text(dir.path() / "config.json", kLlamaConfig);
  const std::vector<float> w = {7, 8, 9};
  write_safetensors((dir.path() / "model.safetensors").string(),
                    std::vector<SafetensorsWriteTensor>{{"w", SafetensorsDtype::f32, {3}, bytes_of(w)}});
  const SafetensorsModel m = SafetensorsModel::open(dir.path().string());
  EXPECT_EQ(m.shard_count(), 1u);
  EXPECT_EQ(m.to_float("w"), w);
  EXPECT_EQ(m.config().rope.scaling, RopeConfig::Scaling::llama3);
}

}  // namespace
}  // namespace seer
