// AdamW on the device against the CPU update (train/adamw.h), on fresh random tensors: the same
// bits, subnormal moments included.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "cuda/adamw.h"
#include "reference.h"

namespace seer {
namespace {

using cuda::DeviceBuffer;

TEST(CudaAdamW, MatchesTheCpuUpdate) {
  // Sizes below one block, one block and a ragged tail, and more than the grid covers in one
  // stride (1024 blocks × 256 threads); per tensor a learning-rate scale as the block bias has.
  const std::vector<int64_t> sizes = {1, 37, 256, 1000, 300000};
  const std::vector<double> lr_scales = {1.0, 10.0, 1.0, 0.5, 1.0};
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const double weight_decay : {0.0, 0.01}) {
    for (const int64_t n : {int64_t(1), int64_t(20)}) {  // the first step, and a later one
      const AdamWStep s{.lr = 7e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = weight_decay,
                        .correction1 = 1 - std::pow(0.9, double(n)), .correction2 = 1 - std::pow(0.999, double(n))};
      struct Host {
        std::vector<float> w, g, m, v;
      };
      std::vector<Host> host;
      std::vector<std::array<DeviceBuffer<float>, 4>> device;
      std::vector<cuda::AdamWTensor> tensors;
      for (size_t t = 0; t < sizes.size(); ++t) {
        Host h;
        for (auto* values : {&h.w, &h.g, &h.m, &h.v}) values->resize(size_t(sizes[t]));
        for (size_t e = 0; e < h.w.size(); ++e) {
          h.w[e] = 0.05f * normal(test::rng());
          // Some gradients zero, and some so small that g² is subnormal in float (the second moment).
          h.g[e] = 1e-3f * normal(test::rng()) * (e % 97 == 5 ? 0.0f : e % 89 == 7 ? 1e-17f : 1.0f);
          h.m[e] = n == 1 ? 0.0f : 1e-3f * normal(test::rng());
          h.v[e] = n == 1 ? 0.0f : 1e-6f * std::abs(normal(test::rng()));
        }
        std::array<DeviceBuffer<float>, 4> d{DeviceBuffer<float>::upload(h.w), DeviceBuffer<float>::upload(h.g),
                                            DeviceBuffer<float>::upload(h.m), DeviceBuffer<float>::upload(h.v)};
        tensors.push_back({d[0].data(), d[1].data(), d[2].data(), d[3].data(), sizes[t], lr_scales[t]});
        host.push_back(std::move(h));
        device.push_back(std::move(d));
      }
      cuda::DeviceAdamW(tensors).step(s, nullptr);
      for (size_t t = 0; t < sizes.size(); ++t) {
        Host& h = host[t];
        const std::vector<float> w = device[t][0].download(), g = device[t][1].download(),
                                 m = device[t][2].download(), v = device[t][3].download();
        const Host before = h;
        for (size_t e = 0; e < h.w.size(); ++e) adamw_update(h.w[e], h.g[e], h.m[e], h.v[e], s, s.lr * lr_scales[t]);
        int64_t off = 0, moved = 0;
        for (size_t e = 0; e < h.w.size(); ++e) {
          off += w[e] != h.w[e] || m[e] != h.m[e] || v[e] != h.v[e] || g[e] != 0.0f;
          moved += w[e] != before.w[e];
        }
        EXPECT_EQ(off, 0) << "tensor " << t << " of " << sizes[t] << ", step " << n << ", decay " << weight_decay;
        EXPECT_GT(moved, int64_t(h.w.size()) * 9 / 10) << "tensor " << t;  // the update did something
      }
    }
  }
}

TEST(CudaAdamW, RejectsEmptyTensors) {
  DeviceBuffer<float> x(4);
  EXPECT_THROW(cuda::DeviceAdamW(std::vector<cuda::AdamWTensor>{}), Error);
  EXPECT_THROW(cuda::DeviceAdamW(std::vector<cuda::AdamWTensor>{{x.data(), x.data(), x.data(), x.data(), 0, 1.0}}),
               Error);
}

}  // namespace
}  // namespace seer
