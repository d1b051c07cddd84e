// GGUF model files (versions 2 and 3, little-endian): metadata key/values, tensor descriptions and
// tensor data, read from a memory map. Every count, length, size and offset in the file is checked
// before it is used, so a truncated or hostile file throws seer::Error naming the key or tensor and
// the file offset, and nothing is allocated beyond what the file's own bytes can describe.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "formats/ggml_types.h"
#include "formats/mapped_file.h"

namespace seer {

// Metadata value types, numbered as in the file.
enum class GgufType : uint32_t {
  uint8 = 0,
  int8,
  uint16,
  int16,
  uint32,
  int32,
  float32,
  boolean,
  string,
  array,
  uint64,
  int64,
  float64
};
std::string_view gguf_type_name(GgufType type);

// An array value: one typed vector, the alternative whose index equals element_type (arrays of
// arrays hold a vector of GgufArray).
struct GgufArray {
  GgufType element_type = GgufType::uint8;
  std::variant<std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>, std::vector<int16_t>,
               std::vector<uint32_t>, std::vector<int32_t>, std::vector<float>, std::vector<bool>,
               std::vector<std::string>, std::vector<GgufArray>, std::vector<uint64_t>, std::vector<int64_t>,
               std::vector<double>>
      elements;

  size_t size() const;
};

// A metadata value: the alternative whose index equals `type`.
struct GgufValue {
  GgufType type = GgufType::uint8;
  std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string, GgufArray, uint64_t,
               int64_t, double>
      value;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // dims[0] varies fastest (ggml's ne[0]: the row length)
  GgmlType type = GgmlType::f32;
  uint64_t offset = 0;   // from the start of the data section, as stored in the file
  int64_t elements = 0;  // product of dims
  uint64_t bytes = 0;    // size of the data
};

class GgufFile {
 public:
  static GgufFile open(const std::string& path);
  // Parses bytes that the caller keeps alive as long as the GgufFile (tests, fuzzing).
  static GgufFile from_memory(std::span<const uint8_t> bytes);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }

  // Metadata, in file order.
  std::vector<std::string> metadata_keys() const;
  const GgufValue* find(std::string_view key) const;  // nullptr if absent
  // Typed reads; each throws seer::Error naming the key if it is absent or of another type.
  std::string get_string(std::string_view key) const;
  int64_t get_int(std::string_view key) const;   // any integer type; uint64 above INT64_MAX throws
  double get_float(std::string_view key) const;  // float32, float64 or any integer type
  bool get_bool(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<float> get_float_array(std::string_view key) const;  // float32 or float64 elements
  std::vector<int32_t> get_int_array(std::string_view key) const;  // any integer elements that fit

  // Tensors, in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;  // nullptr if absent
  // The tensor's bytes inside the map, exactly `info.bytes` long.
  std::span<const uint8_t> tensor_data(const GgufTensorInfo& info) const;
  // The tensor as float32, dims[0] fastest; bitwise equal to gguf-py's gguf.quants.dequantize.
  std::vector<float> dequantize(const GgufTensorInfo& info) const;

 private:
  class Parser;
  GgufFile() = default;
  const GgufValue& require(std::string_view key) const;

  MappedFile map_;                  // empty for from_memory()
  std::span<const uint8_t> bytes_;  // the whole file
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;  // general.alignment, or the GGUF default
  uint64_t data_start_ = 0;  // file offset of the data section
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t, std::less<>> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace seer
