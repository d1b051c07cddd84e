#include "core/atomic_file.h"

#include <cstdio>
#include <filesystem>
#include <system_error>

#include "core/error.h"

namespace seer {

void write_file_atomically(const std::string& path, std::span<const uint8_t> bytes) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  SEER_CHECK(f != nullptr, "cannot write '", tmp, "'");
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  const bool closed = std::fclose(f) == 0;
  std::error_code error;
  if (ok && closed) std::filesystem::rename(tmp, path, error);
  if (!ok || !closed || error) {
    std::error_code ignored;  // `path` is untouched; the partial temporary goes
    std::filesystem::remove(tmp, ignored);
    SEER_CHECK(ok && closed, "failed writing '", tmp, "'");
    fail("cannot rename '", tmp, "' to '", path, "': ", error.message());
  }
}

}  // namespace seer
