// Whole-file writes that readers never see half done: the bytes go to `path`.tmp, which is then
// renamed over `path` (the safetensors writer keeps its own, fsync'ed, temporary file).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace seer {

// Throws seer::Error naming the file when writing or renaming fails.
void write_file_atomically(const std::string& path, std::span<const uint8_t> bytes);
inline void write_file_atomically(const std::string& path, std::string_view text) {
  write_file_atomically(path, std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

}  // namespace seer
