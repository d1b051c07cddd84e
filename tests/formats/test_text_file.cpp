// read_text_file: regular files through the map, pipes read to their end, the size limit on both,
// and what is neither refused with the path in the message.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "formats/mapped_file.h"
#include "test_support.h"

namespace seer {
namespace {

using test::expect_error;
using test::TempDir;

// Text longer than the pipe reader's 64 KB buffer, so that it takes several reads.
std::string sample_text() {
  std::string text;
  for (int i = 0; text.size() < 200000; ++i)
    text += "line " + std::to_string(i) + ": It is a truth universally acknowledged.\n";
  return text;
}

TEST(TextFile, ReadsARegularFileWhole) {
  TempDir dir;
  const std::string text = sample_text(), path = (dir.path() / "book.txt").string();
  std::ofstream(path, std::ios::binary) << text;
  EXPECT_EQ(read_text_file(path, text.size()), text);
  expect_error([&] { read_text_file(path, text.size() - 1); }, {"book.txt", "more than"});
}

// read_text_file on a FIFO that another thread writes `text` into. The writer's open waits for a
// reader; should the read fail before opening the FIFO, a reader opened here releases it. A writer
// left without a reader gets EPIPE (SIGPIPE is ignored) instead of killing the test.
std::string read_fifo(const std::string& path, const std::string& text, size_t max_bytes) {
  std::signal(SIGPIPE, SIG_IGN);
  std::thread writer([&] { std::ofstream(path, std::ios::binary) << text; });
  try {
    std::string got = read_text_file(path, max_bytes);
    writer.join();
    return got;
  } catch (...) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK);
    if (fd >= 0) ::close(fd);
    writer.join();
    throw;
  }
}

// A FIFO, as `seer perplexity <(zcat book.gz)` passes: no size to map, read until the writer closes.
TEST(TextFile, ReadsAPipeToItsEnd) {
  TempDir dir;
  const std::string text = sample_text(), path = (dir.path() / "pipe").string();
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  EXPECT_EQ(read_fifo(path, text, text.size()), text);
  expect_error([&] { read_fifo(path, text, 1000); }, {"pipe", "more than the 1000 bytes"});
}

TEST(TextFile, RefusesWhatIsNeitherFileNorPipe) {
  TempDir dir;
  expect_error([&] { read_text_file(dir.path().string(), 1000); }, {"not a regular file"});
  expect_error([&] { read_text_file((dir.path() / "missing.txt").string(), 1000); }, {"missing.txt", "cannot open"});
}

}  // namespace
}  // namespace seer
