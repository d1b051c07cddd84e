// Whole-file writes (core/atomic_file.h): the new bytes replace the old at once, and a write that
// fails leaves the old file and no temporary behind.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "test_support.h"

namespace seer {
namespace {

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(AtomicFile, ReplacesTheFileAndLeavesNoTemporary) {
  test::TempDir dir;
  const std::filesystem::path path = dir.path() / "log.csv";
  write_file_atomically(path.string(), "first\n");
  EXPECT_EQ(read_all(path), "first\n");
  write_file_atomically(path.string(), std::string("a\0b", 3));
  EXPECT_EQ(read_all(path), std::string("a\0b", 3));
  write_file_atomically(path.string(), "");
  EXPECT_EQ(read_all(path), "");
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".tmp"));
}

TEST(AtomicFile, AFailedWriteLosesNothing) {
  test::TempDir dir;
  // A missing directory: nothing can be written, and the error names the file.
  try {
    write_file_atomically((dir.path() / "missing" / "x.csv").string(), "data");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
  // A target that cannot be replaced (a non-empty directory): the rename fails, the directory and
  // its contents stay, and the temporary is removed.
  const std::filesystem::path target = dir.path() / "taken";
  std::filesystem::create_directory(target);
  write_file_atomically((target / "inside.txt").string(), "kept");
  EXPECT_THROW(write_file_atomically(target.string(), "new"), Error);
  EXPECT_TRUE(std::filesystem::is_directory(target));
  EXPECT_EQ(read_all(target / "inside.txt"), "kept");
  EXPECT_FALSE(std::filesystem::exists(target.string() + ".tmp"));
}

}  // namespace
}  // namespace seer
