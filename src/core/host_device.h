// SEER_HOST_DEVICE marks the small functions that the CPU code and the CUDA kernels share, so that
// both sides compute them from one definition.
#pragma once

#if defined(__CUDACC__)
#define SEER_HOST_DEVICE __host__ __device__
#else
#define SEER_HOST_DEVICE
#endif
