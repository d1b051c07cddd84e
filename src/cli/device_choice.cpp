#include "cli/device_choice.h"

#include "core/error.h"
#ifdef SEER_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace seer::cli {

bool use_gpu(const std::string& device) {
  SEER_CHECK(device == "cpu" || device == "cuda" || device == "auto", "--device must be cpu, cuda or auto, got '",
             device, "'");
#ifdef SEER_HAVE_CUDA
  int count = 0;
  const bool present = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  SEER_CHECK(device != "cuda" || present, "--device cuda: no CUDA GPU is available");
  return device == "cuda" || (device == "auto" && present);
#else
  SEER_CHECK(device != "cuda", "--device cuda: this build has no CUDA support");
  return false;
#endif
}

}  // namespace seer::cli
