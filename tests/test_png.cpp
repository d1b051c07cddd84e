// PNG output read back: chunk layout, CRCs, and the deflated pixels.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "core/png.h"

namespace seer {
namespace {

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t(b[at]) << 24 | uint32_t(b[at + 1]) << 16 | uint32_t(b[at + 2]) << 8 | b[at + 3];
}

TEST(Png, RoundTripsPixels) {
  Image img(37, 11);
  for (int y = 0; y < 11; ++y)
    for (int x = 0; x < 37; ++x) img.set(x, y, uint8_t(x * 7), uint8_t(y * 23), uint8_t(x ^ y));
  img.line(0, 0, 36, 10, 1, 2, 3);
  const std::string path = (std::filesystem::temp_directory_path() / "seer_png_test.png").string();
  write_png(path, img);
  std::ifstream in(path, std::ios::binary);
  const std::vector<uint8_t> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(b.size(), 8u);
  EXPECT_EQ(std::vector<uint8_t>(b.begin(), b.begin() + 8), (std::vector<uint8_t>{0x89, 'P', 'N', 'G', 13, 10, 26, 10}));
  std::vector<uint8_t> idat;
  for (size_t at = 8; at + 12 <= b.size();) {
    const uint32_t len = be32(b, at);
    const std::string type(b.begin() + long(at) + 4, b.begin() + long(at) + 8);
    EXPECT_EQ(be32(b, at + 8 + len), uint32_t(crc32(0, b.data() + at + 4, len + 4))) << type;
    if (type == "IHDR") {
      EXPECT_EQ(be32(b, at + 8), 37u);
      EXPECT_EQ(be32(b, at + 12), 11u);
    }
    if (type == "IDAT") idat.insert(idat.end(), b.begin() + long(at) + 8, b.begin() + long(at) + 8 + len);
    at += 12 + len;
  }
  std::vector<uint8_t> raw(11 * (37 * 3 + 1));
  uLongf raw_size = uLongf(raw.size());
  ASSERT_EQ(uncompress(raw.data(), &raw_size, idat.data(), uLong(idat.size())), Z_OK);
  ASSERT_EQ(raw_size, raw.size());
  for (int y = 0; y < 11; ++y) {
    EXPECT_EQ(raw[size_t(y) * (37 * 3 + 1)], 0);  // filter type 0
    for (int x = 0; x < 37 * 3; ++x)
      ASSERT_EQ(raw[size_t(y) * (37 * 3 + 1) + 1 + size_t(x)], img.rgb[size_t(y) * 37 * 3 + size_t(x)]);
  }
  std::filesystem::remove(path);
  EXPECT_THROW(write_png("/nonexistent-dir/x.png", img), Error);
}

}  // namespace
}  // namespace seer
