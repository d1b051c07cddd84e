// Test inputs on the GPU: fresh random values rounded to the device dtype, the rounded values kept
// as float on the host for the CPU reference.
#pragma once
#include <cuda_fp16.h>

#include <utility>
#include <vector>

#include "core/bf16.h"
#include "cuda/attention_cuda.h"
#include "reference.h"

namespace seer::test {

// Fresh random values (or given ones) rounded to the device dtype; `host` keeps the rounded values
// as float.
struct DeviceTensor {
  std::vector<float> host;
  cuda::DeviceBuffer<uint16_t> device;
  DeviceTensor(size_t n, cuda::DType dtype, float scale) : DeviceTensor(random_values<float>(n, scale), dtype) {}
  DeviceTensor(std::vector<float> values, cuda::DType dtype) : host(std::move(values)) {
    const size_t n = host.size();
    std::vector<uint16_t> bits(n);
    for (size_t e = 0; e < n; ++e) {
      if (dtype == cuda::DType::bf16) {
        bits[e] = bf16(host[e]).bits;
        host[e] = float(bf16(host[e]));
      } else {
        const __half x = __float2half_rn(host[e]);
        bits[e] = __half_raw(x).x;
        host[e] = __half2float(x);
      }
    }
    device = cuda::DeviceBuffer<uint16_t>::upload(bits);
  }
};

// Device 16-bit values back to float.
inline std::vector<float> to_float(const std::vector<uint16_t>& bits, cuda::DType dtype) {
  std::vector<float> out(bits.size());
  for (size_t e = 0; e < bits.size(); ++e) {
    if (dtype == cuda::DType::bf16) {
      bf16 x;
      x.bits = bits[e];
      out[e] = float(x);
    } else {
      __half_raw raw;
      raw.x = bits[e];
      out[e] = __half2float(__half(raw));
    }
  }
  return out;
}


}  // namespace seer::test
