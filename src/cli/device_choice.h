// --device for the model commands: cpu, cuda, or auto (the GPU when this build has CUDA and the
// machine has a GPU, else the CPU).
#pragma once
#include <string>

namespace seer::cli {

// True for the GPU. Throws for --device cuda in a build without CUDA or on a machine without a GPU,
// and for --gpus N > 1 (the model split over N GPUs, cuda/tensor_parallel.h) anywhere but on a
// machine with N GPUs.
bool use_gpu(const std::string& device, int gpus = 1);

// "GPU", or "N GPUs" for the model split over N: how the commands' summaries name where they ran.
std::string gpu_label(int gpus);

}  // namespace seer::cli
