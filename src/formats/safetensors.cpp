#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "core/error.h"
#include "formats/half.h"

namespace seer {
namespace {

using nlohmann::json;

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

// The reference implementation's limit; a larger length field is corruption, not a real header.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Headers nest three levels (tensor object, shape array); deeper input is rejected while parsing.
constexpr int kMaxHeaderDepth = 4;
constexpr size_t kMaxIndexBytes = 64u << 20;

struct DtypeInfo {
  SafetensorsDtype dtype;
  std::string_view name;
  size_t size;
};

constexpr std::array<DtypeInfo, 15> kDtypes = {{
    {SafetensorsDtype::boolean, "BOOL", 1},
    {SafetensorsDtype::u8, "U8", 1},
    {SafetensorsDtype::i8, "I8", 1},
    {SafetensorsDtype::u16, "U16", 2},
    {SafetensorsDtype::i16, "I16", 2},
    {SafetensorsDtype::f16, "F16", 2},
    {SafetensorsDtype::bf16, "BF16", 2},
    {SafetensorsDtype::u32, "U32", 4},
    {SafetensorsDtype::i32, "I32", 4},
    {SafetensorsDtype::f32, "F32", 4},
    {SafetensorsDtype::u64, "U64", 8},
    {SafetensorsDtype::i64, "I64", 8},
    {SafetensorsDtype::f64, "F64", 8},
    {SafetensorsDtype::f8_e4m3, "F8_E4M3", 1},
    {SafetensorsDtype::f8_e5m2, "F8_E5M2", 1},
}};

const DtypeInfo& dtype_info(SafetensorsDtype dtype) {
  const auto it = std::find_if(kDtypes.begin(), kDtypes.end(), [&](const DtypeInfo& d) { return d.dtype == dtype; });
  SEER_CHECK(it != kDtypes.end(), "safetensors: invalid dtype ", int(dtype));
  return *it;
}

// Parses JSON text, rejecting duplicate keys in any object (nlohmann would silently keep the last,
// so two readers could disagree about a tensor) and nesting deeper than `max_depth`.
json parse_json_strict(std::string_view text, int max_depth, std::string_view what) {
  std::vector<std::set<std::string>> open_objects;
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        SEER_CHECK(depth < max_depth, what, ": JSON nested deeper than ", max_depth, " levels");
        if (event == json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case json::parse_event_t::key:
        SEER_CHECK(open_objects.back().insert(parsed.get<std::string>()).second, what, ": duplicate key '",
                   parsed.get<std::string>(), "'");
        break;
      case json::parse_event_t::object_end:
        open_objects.pop_back();
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), check);
  } catch (const json::exception& e) {
    fail(what, ": invalid JSON: ", e.what());
  }
}

// A JSON number that is a non-negative integer fitting in int64 (shapes, offsets).
uint64_t json_count(const json& j, std::string_view tensor, std::string_view field) {
  SEER_CHECK(j.is_number_unsigned() && j.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()),
             "safetensors: tensor '", tensor, "': ", field, " must be a non-negative integer below 2^63, got ",
             j.dump());
  return j.get<uint64_t>();
}

SafetensorsTensor parse_tensor_entry(const std::string& name, const json& entry, uint64_t data_size) {
  SEER_CHECK(!name.empty(), "safetensors: empty tensor name");
  SEER_CHECK(entry.is_object(), "safetensors: tensor '", name, "': entry must be an object");
  for (const auto& [field, value] : entry.items())
    SEER_CHECK(field == "dtype" || field == "shape" || field == "data_offsets", "safetensors: tensor '", name,
               "': unknown field '", field, "'");
  SEER_CHECK(entry.contains("dtype") && entry.contains("shape") && entry.contains("data_offsets"),
             "safetensors: tensor '", name, "': needs dtype, shape and data_offsets");

  SafetensorsTensor t;
  t.name = name;
  const json& dtype = entry["dtype"];
  SEER_CHECK(dtype.is_string(), "safetensors: tensor '", name, "': dtype must be a string");
  const auto known = std::find_if(kDtypes.begin(), kDtypes.end(),
                                  [&](const DtypeInfo& d) { return d.name == dtype.get<std::string>(); });
  SEER_CHECK(known != kDtypes.end(), "safetensors: tensor '", name, "': unknown dtype '", dtype.get<std::string>(),
             "'");
  t.dtype = known->dtype;

  const json& shape = entry["shape"];
  SEER_CHECK(shape.is_array(), "safetensors: tensor '", name, "': shape must be an array");
  t.elements = 1;
  for (const json& dim : shape) {
    const auto d = int64_t(json_count(dim, name, "shape dimension"));
    SEER_CHECK(!__builtin_mul_overflow(t.elements, d, &t.elements), "safetensors: tensor '", name,
               "': element count overflows 64 bits");
    t.shape.push_back(d);
  }
  uint64_t bytes = 0;
  SEER_CHECK(!__builtin_mul_overflow(uint64_t(t.elements), uint64_t(known->size), &bytes), "safetensors: tensor '",
             name, "': byte size overflows 64 bits");

  const json& offsets = entry["data_offsets"];
  SEER_CHECK(offsets.is_array() && offsets.size() == 2, "safetensors: tensor '", name,
             "': data_offsets must be [begin, end]");
  t.begin = json_count(offsets[0], name, "data_offsets[0]");
  t.end = json_count(offsets[1], name, "data_offsets[1]");
  SEER_CHECK(t.begin <= t.end && t.end <= data_size, "safetensors: tensor '", name, "': data_offsets [", t.begin, ", ",
             t.end, ") are not inside the ", data_size, "-byte data section");
  SEER_CHECK(t.end - t.begin == bytes, "safetensors: tensor '", name, "': data_offsets span ", t.end - t.begin,
             " bytes, but ", known->name, " with ", t.elements, " elements needs ", bytes);
  return t;
}

std::map<std::string, std::string> parse_metadata(const json& j) {
  SEER_CHECK(j.is_object(), "safetensors: __metadata__ must be an object of strings");
  std::map<std::string, std::string> metadata;
  for (const auto& [key, value] : j.items()) {
    SEER_CHECK(value.is_string(), "safetensors: __metadata__ value of '", key, "' must be a string");
    metadata.emplace(key, value.get<std::string>());
  }
  return metadata;
}

template <typename Out, typename Convert>
std::vector<float> convert_elements(std::span<const uint8_t> bytes, Convert convert) {
  std::vector<float> out(bytes.size() / sizeof(Out));
  for (size_t i = 0; i < out.size(); ++i) {
    Out raw;  // the data section is not necessarily aligned for Out
    std::memcpy(&raw, bytes.data() + i * sizeof(Out), sizeof(Out));
    out[i] = convert(raw);
  }
  return out;
}

}  // namespace

std::string_view safetensors_dtype_name(SafetensorsDtype dtype) { return dtype_info(dtype).name; }
size_t safetensors_dtype_size(SafetensorsDtype dtype) { return dtype_info(dtype).size; }

SafetensorsFile SafetensorsFile::from_memory(std::span<const uint8_t> bytes) {
  SEER_CHECK(bytes.size() >= 8, "safetensors: truncated: the file has ", bytes.size(),
             " bytes, the header length alone needs 8");
  uint64_t header_bytes;
  std::memcpy(&header_bytes, bytes.data(), sizeof header_bytes);
  SEER_CHECK(header_bytes <= kMaxHeaderBytes, "safetensors: header length ", header_bytes, " exceeds the ",
             kMaxHeaderBytes, "-byte limit (corrupt length field?)");
  SEER_CHECK(header_bytes <= bytes.size() - 8, "safetensors: truncated: the header needs ", header_bytes,
             " bytes at offset 8, the file has ", bytes.size());
  const std::string_view text(reinterpret_cast<const char*>(bytes.data() + 8), size_t(header_bytes));
  const json header = parse_json_strict(text, kMaxHeaderDepth, "safetensors header");
  SEER_CHECK(header.is_object(), "safetensors: the header must be a JSON object");

  SafetensorsFile file;
  file.data_ = bytes.subspan(size_t(8 + header_bytes));
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__")
      file.metadata_ = parse_metadata(entry);
    else
      file.tensors_.push_back(parse_tensor_entry(name, entry, file.data_.size()));
  }
  // nlohmann's object is a std::map, so tensors_ is already sorted by name (find() relies on it).
  std::vector<const SafetensorsTensor*> by_offset;
  for (const SafetensorsTensor& t : file.tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const SafetensorsTensor* a, const SafetensorsTensor* b) {
    return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
  });
  for (size_t i = 1; i < by_offset.size(); ++i)
    SEER_CHECK(by_offset[i - 1]->end <= by_offset[i]->begin, "safetensors: tensors '", by_offset[i - 1]->name,
               "' and '", by_offset[i]->name, "' overlap in the data section");
  return file;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  MappedFile map = MappedFile::open(path);
  try {
    SafetensorsFile file = from_memory(map.bytes());
    file.map_ = std::move(map);  // the mapping's address survives the move, so data_ stays valid
    return file;
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  const auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                                   [](const SafetensorsTensor& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

const SafetensorsTensor& SafetensorsFile::require(std::string_view name) const {
  const SafetensorsTensor* t = find(name);
  SEER_CHECK(t != nullptr, "safetensors: no tensor '", name, "'");
  return *t;
}

std::span<const uint8_t> SafetensorsFile::data(std::string_view name) const {
  const SafetensorsTensor& t = require(name);
  return data_.subspan(size_t(t.begin), size_t(t.end - t.begin));
}

std::vector<float> SafetensorsFile::to_float(std::string_view name) const {
  const SafetensorsTensor& t = require(name);
  const std::span<const uint8_t> bytes = data(name);
  switch (t.dtype) {
    case SafetensorsDtype::f32:
      return convert_elements<float>(bytes, [](float x) { return x; });
    case SafetensorsDtype::f16:
      return convert_elements<uint16_t>(bytes, half_to_float);
    case SafetensorsDtype::bf16:
      return convert_elements<uint16_t>(bytes, bf16_bits_to_float);
    default:
      fail("safetensors: tensor '", name, "' is ", safetensors_dtype_name(t.dtype),
           "; to_float reads F32, F16 and BF16 (use data() for raw bytes)");
  }
}

SafetensorsModel SafetensorsModel::open(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  SafetensorsModel model;
  model.config_ = read_hf_config((root / "config.json").string());

  const fs::path single = root / "model.safetensors";
  const fs::path index = root / "model.safetensors.index.json";
  if (fs::exists(single)) {
    model.shards_.push_back(SafetensorsFile::open(single.string()));
    for (const SafetensorsTensor& t : model.shards_[0].tensors()) model.shard_index_.emplace(t.name, 0);
    return model;
  }
  SEER_CHECK(fs::exists(index), "'", dir, "' has neither model.safetensors nor model.safetensors.index.json");

  const std::string where = index.string();
  const json j = parse_json_strict(read_text_file(where, kMaxIndexBytes), 8, where);
  SEER_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), where,
             ": needs an object \"weight_map\"");
  std::map<std::string, size_t> shard_by_file;
  for (const auto& [name, file] : j["weight_map"].items()) {
    SEER_CHECK(file.is_string(), where, ": weight_map entry '", name, "' must be a file name");
    const std::string shard_name = file.get<std::string>();
    // Shards live beside the index: a path elsewhere (absolute, "..", a subdirectory) is refused.
    SEER_CHECK(
        !shard_name.empty() && shard_name.find('/') == std::string::npos && shard_name != "." && shard_name != "..",
        where, ": weight_map entry '", name, "' names '", shard_name, "', not a file in the same directory");
    auto [it, inserted] = shard_by_file.emplace(shard_name, model.shards_.size());
    if (inserted) model.shards_.push_back(SafetensorsFile::open((root / shard_name).string()));
    SEER_CHECK(model.shards_[it->second].find(name) != nullptr, where, ": tensor '", name, "' is not in ", shard_name);
    model.shard_index_.emplace(name, it->second);
  }
  SEER_CHECK(!model.shards_.empty(), where, ": weight_map is empty");
  return model;
}

std::vector<std::string> SafetensorsModel::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(shard_index_.size());
  for (const auto& [name, shard] : shard_index_) names.push_back(name);
  return names;
}

const SafetensorsFile& SafetensorsModel::shard_of(std::string_view name) const {
  const auto it = shard_index_.find(name);
  SEER_CHECK(it != shard_index_.end(), "safetensors model: no tensor '", name, "'");
  return shards_[it->second];
}

const SafetensorsTensor* SafetensorsModel::find(std::string_view name) const {
  const auto it = shard_index_.find(name);
  return it == shard_index_.end() ? nullptr : shards_[it->second].find(name);
}

std::span<const uint8_t> SafetensorsModel::data(std::string_view name) const { return shard_of(name).data(name); }

std::vector<float> SafetensorsModel::to_float(std::string_view name) const { return shard_of(name).to_float(name); }

namespace {

// Owns the temporary file until it is renamed into place; removes it on any earlier exit.
class TempFile {
 public:
  explicit TempFile(const std::string& target) : path_(target + ".tmp.XXXXXX") {
    fd_ = ::mkstemp(path_.data());
    SEER_CHECK(fd_ >= 0, "cannot create a temporary file beside '", target, "': ", std::strerror(errno));
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }

  void write(std::span<const uint8_t> bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::write(fd_, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      SEER_CHECK(n > 0, "cannot write '", path_, "': ", std::strerror(errno));
      bytes = bytes.subspan(size_t(n));
    }
  }

  void commit(const std::string& target) {
    // mkstemp creates 0600; a checkpoint should be as readable as any other file.
    SEER_CHECK(::fchmod(fd_, 0644) == 0, "cannot chmod '", path_, "': ", std::strerror(errno));
    SEER_CHECK(::fsync(fd_) == 0, "cannot fsync '", path_, "': ", std::strerror(errno));
    const int fd = std::exchange(fd_, -1);
    SEER_CHECK(::close(fd) == 0, "cannot close '", path_, "': ", std::strerror(errno));
    SEER_CHECK(::rename(path_.c_str(), target.c_str()) == 0, "cannot rename '", path_, "' to '", target,
               "': ", std::strerror(errno));
    committed_ = true;
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

// Makes a rename durable: the directory entry is only on disk once the directory is synced.
void sync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  SEER_CHECK(fd >= 0, "cannot open directory '", dir.string(), "': ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  SEER_CHECK(rc == 0, "cannot fsync directory '", dir.string(), "': ", std::strerror(saved));
}

}  // namespace

void write_safetensors(const std::string& path, std::span<const SafetensorsWriteTensor> tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const SafetensorsWriteTensor& t : tensors) {
    SEER_CHECK(!t.name.empty() && t.name != "__metadata__", "write_safetensors: invalid tensor name '", t.name, "'");
    SEER_CHECK(!header.contains(t.name), "write_safetensors: duplicate tensor '", t.name, "'");
    int64_t elements = 1;
    for (const int64_t d : t.shape) {
      SEER_CHECK(d >= 0, "write_safetensors: tensor '", t.name, "' has negative dimension ", d);
      SEER_CHECK(!__builtin_mul_overflow(elements, d, &elements), "write_safetensors: tensor '", t.name,
                 "' element count overflows");
    }
    const uint64_t bytes = uint64_t(elements) * safetensors_dtype_size(t.dtype);
    SEER_CHECK(t.bytes.size() == bytes, "write_safetensors: tensor '", t.name, "' has ", t.bytes.size(),
               " bytes, its shape and dtype need ", bytes);
    header[t.name] = {
        {"dtype", safetensors_dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_bytes = text.size();

  TempFile file(path);
  file.write({reinterpret_cast<const uint8_t*>(&header_bytes), sizeof header_bytes});
  file.write({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  for (const SafetensorsWriteTensor& t : tensors) file.write(t.bytes);
  file.commit(path);
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  sync_directory(parent.empty() ? std::filesystem::path(".") : parent);
}

}  // namespace seer
