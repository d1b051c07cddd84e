// PNG output (8-bit RGB, deflated by zlib): loss curves and attention heatmaps.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace seer {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // row-major, 3 bytes per pixel

  Image(int w, int h, uint8_t fill = 255) : width(w), height(h), rgb(size_t(w) * h * 3, fill) {}
  void set(int x, int y, uint8_t r, uint8_t g, uint8_t b) {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    uint8_t* p = &rgb[(size_t(y) * width + x) * 3];
    p[0] = r, p[1] = g, p[2] = b;
  }
  void line(int x0, int y0, int x1, int y1, uint8_t r, uint8_t g, uint8_t b);
};

// Writes `image` to `path` (through a temporary file renamed into place). Throws seer::Error.
void write_png(const std::string& path, const Image& image);

// A line chart of `values` (x = index) with axes and light grid lines, y scaled to the data range.
Image plot_series(const std::vector<double>& values, int width = 800, int height = 400);

}  // namespace seer
