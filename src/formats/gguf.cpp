#include "formats/gguf.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <utility>

#include "core/error.h"

namespace seer {
namespace {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

// GgufValue and GgufArray rely on the variant index being the type number.
static_assert(std::is_same_v<std::variant_alternative_t<size_t(GgufType::boolean), decltype(GgufValue::value)>, bool>);
static_assert(
    std::is_same_v<std::variant_alternative_t<size_t(GgufType::array), decltype(GgufValue::value)>, GgufArray>);
static_assert(
    std::is_same_v<std::variant_alternative_t<size_t(GgufType::float64), decltype(GgufValue::value)>, double>);
static_assert(std::is_same_v<std::variant_alternative_t<size_t(GgufType::array), decltype(GgufArray::elements)>,
                             std::vector<GgufArray>>);

constexpr uint32_t kLastType = uint32_t(GgufType::float64);
constexpr uint32_t kMaxDims = 4;  // ggml's GGML_MAX_DIMS
// Arrays of arrays recurse; without a bound a few kilobytes of nested headers would exhaust the stack.
constexpr int kMaxArrayDepth = 8;

constexpr std::array<std::string_view, kLastType + 1> kTypeNames = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                                                    "int32",  "float32", "bool",   "string", "array",
                                                                    "uint64", "int64",   "float64"};

// The fewest bytes one value of each type occupies in the file, to bound an array's length by the
// bytes left before allocating anything for it.
constexpr std::array<uint64_t, kLastType + 1> kMinValueBytes = {1, 1, 2, 2, 4, 4, 4, 1, 8, 4 + 8, 8, 8, 8};

bool is_integer(GgufType t) {
  switch (t) {
    case GgufType::uint8:
    case GgufType::int8:
    case GgufType::uint16:
    case GgufType::int16:
    case GgufType::uint32:
    case GgufType::int32:
    case GgufType::uint64:
    case GgufType::int64:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string_view gguf_type_name(GgufType type) {
  const auto number = uint32_t(type);
  return number <= kLastType ? kTypeNames[number] : std::string_view("unknown");
}

size_t GgufArray::size() const {
  return std::visit([](const auto& v) { return v.size(); }, elements);
}

// Reads the header, metadata and tensor descriptions at a cursor that never moves past the end:
// every read first checks that its bytes are there.
class GgufFile::Parser {
 public:
  explicit Parser(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  void parse(GgufFile& file) {
    read_header(file);
    read_metadata(file);
    read_alignment(file);
    read_tensor_infos(file);
    place_data(file);
  }

 private:
  template <typename... Parts>
  [[noreturn]] void error_at(uint64_t offset, const Parts&... parts) const {
    fail("gguf: ", context_, context_.empty() ? "" : ": ", parts..., " (at file offset ", offset, ")");
  }

  uint64_t remaining() const { return bytes_.size() - pos_; }

  void need(uint64_t n, std::string_view what) const {
    if (n > remaining())
      error_at(pos_, "truncated: ", what, " needs ", n, " bytes, ", remaining(), " remain of ", bytes_.size());
  }

  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  std::string read_string(std::string_view what) {
    const uint64_t length = read<uint64_t>(what);
    need(length, what);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), size_t(length));
    pos_ += length;
    return s;
  }

  GgufType read_type(std::string_view what) {
    const uint64_t at = pos_;
    const auto number = read<uint32_t>(what);
    if (number > kLastType) error_at(at, "unknown ", what, " ", number);
    return GgufType(number);
  }

  bool read_bool() {
    const uint64_t at = pos_;
    const auto byte = read<uint8_t>("bool value");
    if (byte > 1) error_at(at, "bool value ", int(byte), " is neither 0 nor 1");
    return byte == 1;
  }

  template <typename T>
  std::vector<T> read_vector(uint64_t count) {
    std::vector<T> v(static_cast<size_t>(count));
    if (count != 0) std::memcpy(v.data(), bytes_.data() + pos_, size_t(count) * sizeof(T));
    pos_ += count * sizeof(T);
    return v;
  }

  GgufArray read_array(int depth) {
    if (depth > kMaxArrayDepth) error_at(pos_, "arrays nested deeper than ", kMaxArrayDepth);
    GgufArray a;
    a.element_type = read_type("array element type");
    const uint64_t at = pos_;
    const auto count = read<uint64_t>("array length");
    const uint64_t min_bytes = kMinValueBytes[size_t(a.element_type)];
    if (count > remaining() / min_bytes)
      error_at(at, "array of ", count, " ", gguf_type_name(a.element_type), " values needs at least ",
               count > std::numeric_limits<uint64_t>::max() / min_bytes ? std::string("more than 2^64")
                                                                        : std::to_string(count * min_bytes),
               " bytes, ", remaining(), " remain");
    switch (a.element_type) {
      case GgufType::uint8:
        a.elements = read_vector<uint8_t>(count);
        break;
      case GgufType::int8:
        a.elements = read_vector<int8_t>(count);
        break;
      case GgufType::uint16:
        a.elements = read_vector<uint16_t>(count);
        break;
      case GgufType::int16:
        a.elements = read_vector<int16_t>(count);
        break;
      case GgufType::uint32:
        a.elements = read_vector<uint32_t>(count);
        break;
      case GgufType::int32:
        a.elements = read_vector<int32_t>(count);
        break;
      case GgufType::float32:
        a.elements = read_vector<float>(count);
        break;
      case GgufType::uint64:
        a.elements = read_vector<uint64_t>(count);
        break;
      case GgufType::int64:
        a.elements = read_vector<int64_t>(count);
        break;
      case GgufType::float64:
        a.elements = read_vector<double>(count);
        break;
      case GgufType::boolean: {
        std::vector<bool> v(static_cast<size_t>(count));
        for (uint64_t i = 0; i < count; ++i) v[size_t(i)] = read_bool();
        a.elements = std::move(v);
        break;
      }
      case GgufType::string: {
        std::vector<std::string> v;
        v.reserve(size_t(count));
        for (uint64_t i = 0; i < count; ++i) v.push_back(read_string("string array element"));
        a.elements = std::move(v);
        break;
      }
      case GgufType::array: {
        std::vector<GgufArray> v;
        v.reserve(size_t(count));
        for (uint64_t i = 0; i < count; ++i) v.push_back(read_array(depth + 1));
        a.elements = std::move(v);
        break;
      }
    }
    return a;
  }

  GgufValue read_value(GgufType type) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufType::uint8:
        v.value = read<uint8_t>("uint8 value");
        break;
      case GgufType::int8:
        v.value = read<int8_t>("int8 value");
        break;
      case GgufType::uint16:
        v.value = read<uint16_t>("uint16 value");
        break;
      case GgufType::int16:
        v.value = read<int16_t>("int16 value");
        break;
      case GgufType::uint32:
        v.value = read<uint32_t>("uint32 value");
        break;
      case GgufType::int32:
        v.value = read<int32_t>("int32 value");
        break;
      case GgufType::float32:
        v.value = read<float>("float32 value");
        break;
      case GgufType::boolean:
        v.value = read_bool();
        break;
      case GgufType::string:
        v.value = read_string("string value");
        break;
      case GgufType::array:
        v.value = read_array(1);
        break;
      case GgufType::uint64:
        v.value = read<uint64_t>("uint64 value");
        break;
      case GgufType::int64:
        v.value = read<int64_t>("int64 value");
        break;
      case GgufType::float64:
        v.value = read<double>("float64 value");
        break;
    }
    return v;
  }

  void read_header(GgufFile& file) {
    need(4, "magic");
    if (std::memcmp(bytes_.data(), "GGUF", 4) != 0) error_at(0, "not a GGUF file (the first 4 bytes are not 'GGUF')");
    pos_ = 4;
    file.version_ = read<uint32_t>("version");
    if (file.version_ == 1)
      error_at(4, "GGUF version 1 (32-bit counts) is not supported; convert the file to version 2 or 3");
    if (file.version_ == 0x02000000u || file.version_ == 0x03000000u)
      error_at(4, "big-endian GGUF files are not supported");
    if (file.version_ != 2 && file.version_ != 3)
      error_at(4, "unsupported GGUF version ", file.version_, " (2 and 3 are supported)");
    tensor_count_ = read<uint64_t>("tensor count");
    kv_count_ = read<uint64_t>("metadata count");
  }

  void read_metadata(GgufFile& file) {
    // A key/value takes at least 8 (key length) + 4 (type) + 1 (smallest value) bytes.
    if (kv_count_ > remaining() / 13) error_at(16, "metadata count ", kv_count_, " does not fit in the file");
    file.metadata_.reserve(size_t(kv_count_));
    for (uint64_t i = 0; i < kv_count_; ++i) {
      context_ = "metadata entry " + std::to_string(i);
      const uint64_t at = pos_;
      std::string key = read_string("key");
      if (key.empty()) error_at(at, "empty key");
      context_ = "key '" + key + "'";
      if (file.metadata_index_.contains(key)) error_at(at, "duplicate key");
      if (key == "general.alignment") alignment_at_ = at;
      const GgufType type = read_type("value type");
      file.metadata_index_.emplace(key, file.metadata_.size());
      file.metadata_.emplace_back(std::move(key), read_value(type));
    }
    context_.clear();
  }

  void read_alignment(GgufFile& file) {
    const GgufValue* value = file.find("general.alignment");
    if (value == nullptr) return;
    context_ = "key 'general.alignment'";
    if (value->type != GgufType::uint32) error_at(alignment_at_, "must be uint32, is ", gguf_type_name(value->type));
    const uint32_t alignment = std::get<uint32_t>(value->value);
    if (alignment == 0 || !std::has_single_bit(alignment))
      error_at(alignment_at_, "alignment ", alignment, " is not a power of two");
    file.alignment_ = alignment;
    context_.clear();
  }

  void read_tensor_infos(GgufFile& file) {
    // A tensor description takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    if (tensor_count_ > remaining() / 24) error_at(pos_, "tensor count ", tensor_count_, " does not fit in the file");
    file.tensors_.reserve(size_t(tensor_count_));
    for (uint64_t i = 0; i < tensor_count_; ++i) {
      context_ = "tensor " + std::to_string(i);
      GgufTensorInfo info;
      const uint64_t name_at = pos_;
      info.name = read_string("tensor name");
      if (info.name.empty()) error_at(name_at, "empty tensor name");
      context_ = "tensor '" + info.name + "'";
      if (file.tensor_index_.contains(info.name)) error_at(name_at, "duplicate tensor name");

      const uint64_t dims_at = pos_;
      const auto n_dims = read<uint32_t>("dimension count");
      if (n_dims > kMaxDims) error_at(dims_at, n_dims, " dimensions, at most ", kMaxDims, " are supported");
      info.elements = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        const uint64_t at = pos_;
        const auto dim = read<uint64_t>("dimension");
        if (dim == 0 || dim > uint64_t(std::numeric_limits<int64_t>::max()))
          error_at(at, "dimension ", d, " is ", dim, ", must be in [1, 2^63)");
        if (__builtin_mul_overflow(info.elements, int64_t(dim), &info.elements))
          error_at(at, "element count overflows 64 bits");
        info.dims.push_back(int64_t(dim));
      }

      const uint64_t type_at = pos_;
      const auto type_number = read<uint32_t>("tensor type");
      const std::optional<GgmlType> type = ggml_type_from_number(type_number);
      if (!type) error_at(type_at, "unknown tensor type ", type_number);
      info.type = *type;
      const GgmlTypeTraits& traits = ggml_traits(info.type);
      const int64_t row = info.dims.empty() ? 1 : info.dims[0];
      if (row % traits.block_size != 0)
        error_at(type_at, "row length ", row, " is not a multiple of the ", traits.name, " block size ",
                 traits.block_size);
      if (__builtin_mul_overflow(uint64_t(info.elements) / traits.block_size, uint64_t(traits.type_size), &info.bytes))
        error_at(type_at, "data size overflows 64 bits");

      const uint64_t offset_at = pos_;
      info.offset = read<uint64_t>("tensor data offset");
      if (info.offset % file.alignment_ != 0)
        error_at(offset_at, "data offset ", info.offset, " is not a multiple of the alignment ", file.alignment_);

      file.tensor_index_.emplace(info.name, file.tensors_.size());
      file.tensors_.push_back(std::move(info));
    }
    context_.clear();
  }

  // The data section starts at the next multiple of the alignment; each tensor must lie inside it
  // and no two may share bytes.
  void place_data(GgufFile& file) {
    file.data_start_ = (pos_ + file.alignment_ - 1) / file.alignment_ * file.alignment_;
    if (file.tensors_.empty()) return;
    if (file.data_start_ > bytes_.size())
      error_at(pos_, "truncated: the data section would start at ", file.data_start_, ", past the end of the ",
               bytes_.size(), "-byte file");
    const uint64_t data_size = bytes_.size() - file.data_start_;
    std::vector<const GgufTensorInfo*> by_offset;
    by_offset.reserve(file.tensors_.size());
    for (const GgufTensorInfo& t : file.tensors_) {
      if (t.offset > data_size || t.bytes > data_size - t.offset)
        fail("gguf: tensor '", t.name, "': data at file offset ", file.data_start_, " + ", t.offset, " (", t.bytes,
             " bytes of ", ggml_type_name(t.type), ") runs past the end of the ", bytes_.size(), "-byte file");
      by_offset.push_back(&t);
    }
    std::sort(by_offset.begin(), by_offset.end(),
              [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      const GgufTensorInfo& prev = *by_offset[i - 1];
      const GgufTensorInfo& next = *by_offset[i];
      if (prev.offset + prev.bytes > next.offset)
        fail("gguf: tensors '", prev.name, "' (data offset ", prev.offset, ", ", prev.bytes, " bytes) and '", next.name,
             "' (data offset ", next.offset, ") overlap");
    }
  }

  std::span<const uint8_t> bytes_;
  uint64_t pos_ = 0;
  uint64_t tensor_count_ = 0;
  uint64_t kv_count_ = 0;
  uint64_t alignment_at_ = 0;  // file offset of the general.alignment entry
  std::string context_;        // what is being read: "key 'general.name'", "tensor 'output.weight'"
};

GgufFile GgufFile::from_memory(std::span<const uint8_t> bytes) {
  GgufFile file;
  file.bytes_ = bytes;
  Parser(bytes).parse(file);
  return file;
}

GgufFile GgufFile::open(const std::string& path) {
  MappedFile map = MappedFile::open(path);
  try {
    GgufFile file = from_memory(map.bytes());
    file.map_ = std::move(map);  // the mapping's address survives the move, so bytes_ stays valid
    return file;
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
}

std::vector<std::string> GgufFile::metadata_keys() const {
  std::vector<std::string> keys;
  keys.reserve(metadata_.size());
  for (const auto& [key, value] : metadata_) keys.push_back(key);
  return keys;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufValue& GgufFile::require(std::string_view key) const {
  const GgufValue* value = find(key);
  SEER_CHECK(value != nullptr, "gguf: missing key '", key, "'");
  return *value;
}

namespace {

[[noreturn]] void wrong_type(std::string_view key, GgufType actual, std::string_view wanted) {
  fail("gguf: key '", key, "' is ", gguf_type_name(actual), ", expected ", wanted);
}

// The array held by `value` (the value of `key`); `wanted` describes the expected type in errors.
const GgufArray& require_array(const GgufValue& value, std::string_view key, std::string_view wanted) {
  if (value.type != GgufType::array) wrong_type(key, value.type, wanted);
  return std::get<GgufArray>(value.value);
}

}  // namespace

std::string GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = require(key);
  if (v.type != GgufType::string) wrong_type(key, v.type, "string");
  return std::get<std::string>(v.value);
}

int64_t GgufFile::get_int(std::string_view key) const {
  const GgufValue& v = require(key);
  if (!is_integer(v.type)) wrong_type(key, v.type, "an integer");
  if (v.type == GgufType::uint64) {
    const uint64_t u = std::get<uint64_t>(v.value);
    SEER_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()), "gguf: key '", key, "' value ", u,
               " does not fit in int64");
    return int64_t(u);
  }
  return std::visit(
      [](const auto& x) -> int64_t {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
          return int64_t(x);
        else
          return 0;  // unreachable: the type was checked above
      },
      v.value);
}

double GgufFile::get_float(std::string_view key) const {
  const GgufValue& v = require(key);
  if (v.type == GgufType::float32) return std::get<float>(v.value);
  if (v.type == GgufType::float64) return std::get<double>(v.value);
  if (is_integer(v.type)) return double(get_int(key));
  wrong_type(key, v.type, "a number");
}

bool GgufFile::get_bool(std::string_view key) const {
  const GgufValue& v = require(key);
  if (v.type != GgufType::boolean) wrong_type(key, v.type, "bool");
  return std::get<bool>(v.value);
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const GgufArray& a = require_array(require(key), key, "array of string");
  if (a.element_type != GgufType::string)
    fail("gguf: key '", key, "' is an array of ", gguf_type_name(a.element_type), ", expected array of string");
  return std::get<std::vector<std::string>>(a.elements);
}

std::vector<float> GgufFile::get_float_array(std::string_view key) const {
  const GgufArray& a = require_array(require(key), key, "array of float32");
  if (a.element_type == GgufType::float32) return std::get<std::vector<float>>(a.elements);
  if (a.element_type == GgufType::float64) {
    const auto& d = std::get<std::vector<double>>(a.elements);
    return std::vector<float>(d.begin(), d.end());
  }
  fail("gguf: key '", key, "' is an array of ", gguf_type_name(a.element_type), ", expected array of float32");
}

std::vector<int32_t> GgufFile::get_int_array(std::string_view key) const {
  const GgufArray& a = require_array(require(key), key, "array of integers");
  if (!is_integer(a.element_type))
    fail("gguf: key '", key, "' is an array of ", gguf_type_name(a.element_type), ", expected array of integers");
  return std::visit(
      [&](const auto& elements) {
        using T = typename std::decay_t<decltype(elements)>::value_type;
        std::vector<int32_t> out;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          out.reserve(elements.size());
          for (size_t i = 0; i < elements.size(); ++i) {
            SEER_CHECK(std::in_range<int32_t>(elements[i]), "gguf: key '", key, "' element ", i, " (", elements[i],
                       ") does not fit in int32");
            out.push_back(int32_t(elements[i]));
          }
        }
        return out;
      },
      a.elements);
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::span<const uint8_t> GgufFile::tensor_data(const GgufTensorInfo& info) const {
  // Looked up again by name so that a description copied from elsewhere cannot point outside the
  // ranges validated when the file was opened.
  const GgufTensorInfo* own = find_tensor(info.name);
  SEER_CHECK(own != nullptr, "gguf: no tensor '", info.name, "' in this file");
  return bytes_.subspan(size_t(data_start_ + own->offset), size_t(own->bytes));
}

std::vector<float> GgufFile::dequantize(const GgufTensorInfo& info) const {
  const std::span<const uint8_t> data = tensor_data(info);
  const GgufTensorInfo& own = *find_tensor(info.name);
  SEER_CHECK(ggml_traits(own.type).dequantizable, "gguf: tensor '", own.name, "': dequantization of ",
             ggml_type_name(own.type), " is not supported");
  std::vector<float> out(size_t(own.elements));
  dequantize_ggml(own.type, data, out);
  return out;
}

}  // namespace seer
