#include "formats/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace seer {
namespace {

// Closes the descriptor on every path out of open(), including throws.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

MappedFile MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  SEER_CHECK(fd >= 0, "cannot open '", path, "': ", std::strerror(errno));
  const FdGuard guard{fd};
  struct stat st {};
  SEER_CHECK(::fstat(fd, &st) == 0, "cannot stat '", path, "': ", std::strerror(errno));
  SEER_CHECK(S_ISREG(st.st_mode), "'", path, "' is not a regular file");

  MappedFile file;
  file.path_ = path;
  file.size_ = size_t(st.st_size);
  if (file.size_ == 0) return file;
  void* data = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
  SEER_CHECK(data != MAP_FAILED, "cannot map '", path, "' (", file.size_, " bytes): ", std::strerror(errno));
  file.data_ = static_cast<const uint8_t*>(data);
  return file;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)), path_(std::move(other.path_)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    path_ = std::move(other.path_);
  }
  return *this;
}

MappedFile::~MappedFile() { release(); }

void MappedFile::release() noexcept {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

std::string read_text_file(const std::string& path, size_t max_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))) {
    // A pipe (`seer perplexity <(zcat book.gz)`) has no size to map: read it to its end.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    SEER_CHECK(fd >= 0, "cannot open '", path, "': ", std::strerror(errno));
    const FdGuard guard{fd};
    std::string text;
    char buffer[1 << 16];
    for (;;) {
      const ssize_t got = ::read(fd, buffer, sizeof buffer);
      if (got < 0 && errno == EINTR) continue;
      SEER_CHECK(got >= 0, "cannot read '", path, "': ", std::strerror(errno));
      if (got == 0) return text;
      SEER_CHECK(text.size() + size_t(got) <= max_bytes, "'", path, "' holds more than the ", max_bytes,
                 " bytes expected of this file");
      text.append(buffer, size_t(got));
    }
  }
  const MappedFile file = MappedFile::open(path);
  SEER_CHECK(file.bytes().size() <= max_bytes, "'", path, "' is ", file.bytes().size(), " bytes, more than the ",
             max_bytes, " expected of this file");
  return std::string(reinterpret_cast<const char*>(file.bytes().data()), file.bytes().size());
}

}  // namespace seer
