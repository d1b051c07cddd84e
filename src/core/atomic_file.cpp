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
  SEER_CHECK(std::fclose(f) == 0 && ok, "failed writing '", tmp, "'");
  std::error_code error;
  std::filesystem::rename(tmp, path, error);
  SEER_CHECK(!error, "cannot rename '", tmp, "' to '", path, "': ", error.message());
}

}  // namespace seer
