// safetensors files: an 8-byte little-endian header length, a JSON header describing each tensor
// (dtype, shape, byte range) plus an optional "__metadata__" string map, then the data. Read from a
// memory map with every field validated; sharded checkpoints are read through their
// model.safetensors.index.json. The writer replaces its target atomically.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "formats/hf_config.h"
#include "formats/mapped_file.h"

namespace seer {

enum class SafetensorsDtype { boolean, u8, i8, u16, i16, f16, bf16, u32, i32, f32, u64, i64, f64, f8_e4m3, f8_e5m2 };
std::string_view safetensors_dtype_name(SafetensorsDtype dtype);  // as in the header: "BF16"
size_t safetensors_dtype_size(SafetensorsDtype dtype);

struct SafetensorsTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::f32;
  std::vector<int64_t> shape;  // row-major: the last dimension varies fastest
  uint64_t begin = 0;          // byte range [begin, end) in the data section
  uint64_t end = 0;
  int64_t elements = 0;  // product of shape (1 for a scalar, 0 if any dimension is 0)
};

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);
  // Parses bytes that the caller keeps alive as long as the SafetensorsFile (tests, fuzzing).
  static SafetensorsFile from_memory(std::span<const uint8_t> bytes);

  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }  // sorted by name
  const SafetensorsTensor* find(std::string_view name) const;                 // nullptr if absent
  // The tensor's raw little-endian bytes; throws if absent.
  std::span<const uint8_t> data(std::string_view name) const;
  // F32, F16 or BF16 as float32 (exact conversions); other dtypes throw, read them with data().
  std::vector<float> to_float(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  const SafetensorsTensor& require(std::string_view name) const;

  MappedFile map_;                 // empty for from_memory()
  std::span<const uint8_t> data_;  // the data section
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A Hugging Face model directory: config.json plus either model.safetensors or shards listed by
// model.safetensors.index.json ("weight_map": tensor name -> shard file in the same directory).
class SafetensorsModel {
 public:
  static SafetensorsModel open(const std::string& dir);

  const HfConfig& config() const { return config_; }
  size_t shard_count() const { return shards_.size(); }
  std::vector<std::string> tensor_names() const;               // sorted
  const SafetensorsTensor* find(std::string_view name) const;  // nullptr if absent
  std::span<const uint8_t> data(std::string_view name) const;
  std::vector<float> to_float(std::string_view name) const;

 private:
  SafetensorsModel() = default;
  const SafetensorsFile& shard_of(std::string_view name) const;

  HfConfig config_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, size_t, std::less<>> shard_index_;  // tensor name -> index into shards_
};

struct SafetensorsWriteTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::f32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;  // little-endian, row-major, product(shape) * dtype size bytes
};

// Writes the tensors (data in the given order) and metadata to `path`: through a temporary file in
// the same directory that is fsynced and renamed over `path`, so a crash leaves either the old file
// or the complete new one. The header is padded with spaces so the data starts 8-byte aligned.
void write_safetensors(const std::string& path, std::span<const SafetensorsWriteTensor> tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace seer
