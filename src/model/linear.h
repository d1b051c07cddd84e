// Matrix products of the forward pass, through OpenBLAS but threaded by OpenMP: one threading
// runtime for the whole program, and BLAS calls made inside OpenMP regions (attention tiles) must
// not start threads of their own. Each function is one parallel region: decoding a token runs
// hundreds of them, and every region's start and end synchronize the threads.
#pragma once
#include <cstdint>
#include <span>

namespace seer {

// Tells OpenBLAS to use one thread (process-wide); the forward pass calls it before any product.
void use_single_threaded_blas();

// One product y[n, out] (rows ldy apart) = x · wᵀ for w row-major [out, in] (nn.Linear's layout).
struct LinearTarget {
  const float* w;
  int64_t out;
  float* y;
  int64_t ldy;
};

// y = x[n, in] · wᵀ + beta · y for every target (products of the same input, e.g. Q, K and V), the
// targets' output features split across the threads as one range. beta = 1 adds a residual.
void linear(const float* x, int64_t n, int64_t in, std::span<const LinearTarget> targets, float beta);

inline void linear(const float* x, int64_t n, int64_t in, const float* w, int64_t out, float* y, int64_t ldy,
                   float beta) {
  const LinearTarget target{w, out, y, ldy};
  linear(x, n, in, std::span(&target, 1), beta);
}

// The SwiGLU hidden layer h[n, inter] = SiLU(x · w_gateᵀ) ⊙ (x · w_upᵀ), `up` [n, inter] scratch.
// Each thread computes whole feature columns of both products, then activates them: no
// synchronization between the products and the activation.
void swiglu(const float* x, int64_t n, int64_t in, const float* w_gate, const float* w_up, int64_t inter, float* h,
            float* up);

}  // namespace seer
