// A read-only memory map of a whole file: model weights are read in place, never copied whole.
#pragma once
#include <cstdint>
#include <span>
#include <string>

namespace seer {

class MappedFile {
 public:
  // Maps `path` read-only; throws seer::Error naming the path and the system error. An empty file
  // maps to an empty span (mmap refuses zero lengths), so parsers report it as truncated.
  static MappedFile open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  // Stays valid while this object (or the one it is moved into) lives: moving keeps the mapping.
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  void release() noexcept;

  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// The whole of a text file (config.json, an index, a book), refusing files over `max_bytes` so that a
// wrong path (a weights file, a device) does not read gigabytes into memory. Pipes are read to their
// end; directories and the like are refused.
std::string read_text_file(const std::string& path, size_t max_bytes);

}  // namespace seer
