#include "core/png.h"

#include <algorithm>
#include <cmath>

#include "core/atomic_file.h"
#include "core/error.h"

#include <zlib.h>

namespace seer {
namespace {

void put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(v >> s));
}

void chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  put32(out, uint32_t(data.size()));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  put32(out, uint32_t(::crc32(0, out.data() + start, uInt(out.size() - start))));
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
  // Filter type 0 on every scanline, then zlib's deflate.
  std::vector<uint8_t> raw;
  raw.reserve(size_t(image.height) * (image.width * 3 + 1));
  for (int y = 0; y < image.height; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), image.rgb.begin() + size_t(y) * image.width * 3,
               image.rgb.begin() + size_t(y + 1) * image.width * 3);
  }
  uLongf z_size = compressBound(uLong(raw.size()));
  std::vector<uint8_t> z(z_size);
  SEER_CHECK(compress2(z.data(), &z_size, raw.data(), uLong(raw.size()), 9) == Z_OK, "PNG compression failed");
  z.resize(z_size);
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  std::vector<uint8_t> header;
  put32(header, uint32_t(image.width));
  put32(header, uint32_t(image.height));
  header.insert(header.end(), {8, 2, 0, 0, 0});  // 8-bit RGB, deflate, no filter method, no interlace
  chunk(png, "IHDR", header);
  chunk(png, "IDAT", z);
  chunk(png, "IEND", {});
  write_file_atomically(path, png);
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
