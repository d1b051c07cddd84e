#include "model/linear.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

#include "core/fast_exp.h"

namespace seer {
namespace {

// Slices of whole 16-feature groups keep each thread's part of y cache-line aligned.
constexpr int64_t kGroup = 16;

// This thread's part [begin, end) of `features`.
void thread_slice(int64_t features, int64_t& begin, int64_t& end) {
  const int64_t groups = (features + kGroup - 1) / kGroup;
  const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
  begin = std::min(features, groups * t / threads * kGroup);
  end = std::min(features, groups * (t + 1) / threads * kGroup);
}

// y[:, begin:end) of one product.
void product(const float* x, int64_t n, int64_t in, const float* w, int64_t begin, int64_t end, float* y, int64_t ldy,
             float beta) {
  if (end <= begin) return;
  const float* ws = w + begin * in;
  if (n == 1)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, int(end - begin), int(in), 1.0f, ws, int(in), x, 1, beta, y + begin, 1);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(end - begin), int(in), 1.0f, x, int(in), ws,
                int(in), beta, y + begin, int(ldy));
}

}  // namespace

void use_single_threaded_blas() { openblas_set_num_threads(1); }

void linear(const float* x, int64_t n, int64_t in, std::span<const LinearTarget> targets, float beta) {
  int64_t total = 0;
  for (const LinearTarget& t : targets) total += t.out;
#pragma omp parallel
  {
    int64_t begin = 0, end = 0;
    thread_slice(total, begin, end);
    int64_t offset = 0;  // of the target in the concatenated features
    for (const LinearTarget& t : targets) {
      product(x, n, in, t.w, std::max(begin - offset, int64_t(0)), std::min(end - offset, t.out), t.y, t.ldy, beta);
      offset += t.out;
    }
  }
}

void swiglu(const float* x, int64_t n, int64_t in, const float* w_gate, const float* w_up, int64_t inter, float* h,
            float* up) {
#pragma omp parallel
  {
    int64_t begin = 0, end = 0;
    thread_slice(inter, begin, end);
    product(x, n, in, w_gate, begin, end, h, inter, 0.0f);
    product(x, n, in, w_up, begin, end, up, inter, 0.0f);
    for (int64_t r = 0; r < n; ++r) {
      float* g = h + r * inter;
      const float* u = up + r * inter;
#pragma omp simd
      for (int64_t c = begin; c < end; ++c) g[c] = g[c] / (1.0f + fast_exp(-g[c])) * u[c];
    }
  }
}

}  // namespace seer
