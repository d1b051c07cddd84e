#include "core/png.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/error.h"

namespace seer {
namespace {

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(v >> s));
}

void chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  put32(out, uint32_t(data.size()));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  put32(out, crc32(out.data() + start, out.size() - start));
}

}  // namespace

void Image::line(int x0, int y0, int x1, int y1, uint8_t r, uint8_t g, uint8_t b) {
  const int steps = std::max(std::abs(x1 - x0), std::abs(y1 - y0));
  for (int s = 0; s <= steps; ++s) {
    const double t = steps == 0 ? 0.0 : double(s) / steps;
    set(int(std::lround(x0 + t * (x1 - x0))), int(std::lround(y0 + t * (y1 - y0))), r, g, b);
  }
}

void write_png(const std::string& path, const Image& image) {
  SEER_CHECK(image.width > 0 && image.height > 0, "cannot write an empty image");
  // zlib stream of stored (uncompressed) deflate blocks over the filtered scanlines (filter 0).
  std::vector<uint8_t> raw;
  raw.reserve(size_t(image.height) * (image.width * 3 + 1));
  for (int y = 0; y < image.height; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), image.rgb.begin() + size_t(y) * image.width * 3,
               image.rgb.begin() + size_t(y + 1) * image.width * 3);
  }
  std::vector<uint8_t> z = {0x78, 0x01};
  for (size_t pos = 0; pos < raw.size() || pos == 0;) {
    const size_t n = std::min<size_t>(65535, raw.size() - pos);
    z.push_back(pos + n == raw.size() ? 1 : 0);
    z.push_back(uint8_t(n)), z.push_back(uint8_t(n >> 8));
    z.push_back(uint8_t(~n)), z.push_back(uint8_t(~n >> 8));
    z.insert(z.end(), raw.begin() + pos, raw.begin() + pos + n);
    pos += n;
    if (n == 0) break;
  }
  uint32_t a = 1, b = 0;  // Adler-32 of the uncompressed data
  for (uint8_t c : raw) a = (a + c) % 65521, b = (b + a) % 65521;
  put32(z, (b << 16) | a);
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  std::vector<uint8_t> header;
  put32(header, uint32_t(image.width));
  put32(header, uint32_t(image.height));
  header.insert(header.end(), {8, 2, 0, 0, 0});  // 8-bit RGB, deflate, no filter method, no interlace
  chunk(png, "IHDR", header);
  chunk(png, "IDAT", z);
  chunk(png, "IEND", {});
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  SEER_CHECK(f != nullptr, "cannot write '", tmp, "'");
  const bool ok = std::fwrite(png.data(), 1, png.size(), f) == png.size();
  SEER_CHECK(std::fclose(f) == 0 && ok, "failed writing '", tmp, "'");
  std::filesystem::rename(tmp, path);
}

Image plot_series(const std::vector<double>& values, int width, int height) {
  Image img(width, height);
  const int left = 40, right = width - 20, top = 20, bottom = height - 30;
  for (int k = 0; k <= 4; ++k) {  // grid
    const int y = top + (bottom - top) * k / 4;
    img.line(left, y, right, y, 225, 225, 225);
  }
  img.line(left, top, left, bottom, 0, 0, 0);
  img.line(left, bottom, right, bottom, 0, 0, 0);
  if (values.empty()) return img;
  double lo = values[0], hi = values[0];
  for (double v : values)
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (hi <= lo) hi = lo + 1;
  const auto px = [&](size_t i) { return left + int((right - left) * (values.size() == 1 ? 0.0 : double(i) / double(values.size() - 1))); };
  const auto py = [&](double v) { return bottom - int((bottom - top) * (v - lo) / (hi - lo)); };
  for (size_t i = 1; i < values.size(); ++i) img.line(px(i - 1), py(values[i - 1]), px(i), py(values[i]), 31, 119, 180);
  return img;
}

}  // namespace seer
