#include "cli/device_choice.h"

#include "core/error.h"
#ifdef SEER_HAVE_CUDA
#include "cuda/communicator.h"
#endif

namespace seer::cli {

bool use_gpu(const std::string& device, int gpus) {
  SEER_CHECK(device == "cpu" || device == "cuda" || device == "auto", "--device must be cpu, cuda or auto, got '",
             device, "'");
  SEER_CHECK(gpus >= 1, "--gpus must be positive, got ", gpus);
  SEER_CHECK(gpus == 1 || device != "cpu", "--gpus ", gpus,
             " splits the model over GPUs; --device cpu runs on the CPU");
#ifdef SEER_HAVE_CUDA
  const int count = cuda::device_count();
  const bool present = count > 0;
  SEER_CHECK(device != "cuda" || present, "--device cuda: no CUDA GPU is available");
  SEER_CHECK(gpus == 1 || gpus <= count, "--gpus ", gpus, ": this machine has ", count, count == 1 ? " GPU" : " GPUs");
  return device == "cuda" || (device == "auto" && present);
#else
  SEER_CHECK(device != "cuda", "--device cuda: this build has no CUDA support");
  SEER_CHECK(gpus == 1, "--gpus ", gpus, ": this build has no CUDA support");
  return false;
#endif
}

std::string gpu_label(int gpus) { return gpus > 1 ? std::to_string(gpus) + " GPUs" : "GPU"; }

}  // namespace seer::cli
