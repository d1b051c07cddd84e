// --device for the model commands: cpu, cuda, or auto (the GPU when this build has CUDA and the
// machine has a GPU, else the CPU).
#pragma once
#include <string>

namespace seer::cli {

// True for the GPU. Throws for --device cuda in a build without CUDA or on a machine without a GPU.
bool use_gpu(const std::string& device);

}  // namespace seer::cli
