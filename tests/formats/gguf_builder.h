// Builds GGUF files in memory for tests: any metadata, any tensor descriptions, and overrides for
// the fields a hostile file would fake (counts, offsets, type numbers).
#pragma once
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "formats/gguf.h"

namespace seer::testing {

using Bytes = std::vector<uint8_t>;

template <typename T>
void append(Bytes& out, T value) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &value, sizeof(T));
}

inline void append(Bytes& out, const Bytes& more) { out.insert(out.end(), more.begin(), more.end()); }

// Value payloads as they follow the type field of a key/value.
template <typename T>
Bytes scalar(T value) {
  Bytes b;
  append(b, value);
  return b;
}

inline Bytes string_value(std::string_view s) {
  Bytes b;
  append(b, uint64_t(s.size()));
  b.insert(b.end(), s.begin(), s.end());
  return b;
}

// `elements` holds `count` encoded elements back to back (nested arrays: their payloads).
inline Bytes array_value(GgufType element_type, uint64_t count, const Bytes& elements) {
  Bytes b;
  append(b, uint32_t(element_type));
  append(b, count);
  append(b, elements);
  return b;
}

template <typename T>
Bytes array_of(GgufType element_type, const std::vector<T>& values) {
  Bytes elements;
  for (const T& v : values) append(elements, v);
  return array_value(element_type, values.size(), elements);
}

inline Bytes string_array(const std::vector<std::string>& values) {
  Bytes elements;
  for (const std::string& s : values) append(elements, string_value(s));
  return array_value(GgufType::string, values.size(), elements);
}

struct GgufBuilder {
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    Bytes data;
    std::optional<uint64_t> offset;  // default: after the previous tensor, aligned
  };

  static constexpr uint64_t kMaxPlacedOffset = 1 << 20;

  uint32_t version = 3;
  uint64_t alignment = 32;                         // layout only; set general.alignment yourself when it is not 32
  std::optional<uint64_t> kv_count, tensor_count;  // default: the real counts
  std::vector<std::pair<std::string, Bytes>> kvs;  // key -> type field + payload
  std::vector<Tensor> tensors;

  GgufBuilder& kv(std::string key, GgufType type, Bytes payload) {
    Bytes b;
    append(b, uint32_t(type));
    append(b, payload);
    kvs.emplace_back(std::move(key), std::move(b));
    return *this;
  }

  GgufBuilder& tensor(std::string name, std::vector<uint64_t> dims, GgmlType type, Bytes data) {
    tensors.push_back({std::move(name), std::move(dims), uint32_t(type), std::move(data), std::nullopt});
    return *this;
  }

  // The file ends right after the last tensor's data (no padding), so that every shorter prefix is
  // missing something.
  Bytes build() const {
    Bytes out = {'G', 'G', 'U', 'F'};
    append(out, version);
    append(out, tensor_count.value_or(tensors.size()));
    append(out, kv_count.value_or(kvs.size()));
    for (const auto& [key, value] : kvs) {
      append(out, string_value(key));
      append(out, value);
    }
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const Tensor& t : tensors) {
      const uint64_t offset = t.offset.value_or(next);
      offsets.push_back(offset);
      next = (offset + t.data.size() + alignment - 1) / alignment * alignment;
      append(out, string_value(t.name));
      append(out, uint32_t(t.dims.size()));
      for (const uint64_t d : t.dims) append(out, d);
      append(out, t.type);
      append(out, offset);
    }
    if (tensors.empty()) return out;
    const size_t data_start = (out.size() + alignment - 1) / alignment * alignment;
    out.resize(data_start);
    for (size_t i = 0; i < tensors.size(); ++i) {
      // A hostile offset far beyond any real file is only described, not backed by bytes.
      if (offsets[i] > kMaxPlacedOffset) continue;
      const size_t end = data_start + offsets[i] + tensors[i].data.size();
      if (out.size() < end) out.resize(end);
      std::memcpy(out.data() + data_start + offsets[i], tensors[i].data.data(), tensors[i].data.size());
    }
    return out;
  }
};

// Deterministic bytes shared with make_gguf_reference.py (splitmix64, little-endian words).
inline Bytes splitmix64_bytes(uint64_t seed, size_t n) {
  Bytes out;
  uint64_t x = seed;
  while (out.size() < n) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    append(out, z);
  }
  out.resize(n);
  return out;
}

}  // namespace seer::testing
