// Head geometry of one attention call and the size checks every operator runs first.
#pragma once
#include <cstdint>
#include <span>

#include "core/error.h"
#include "core/sequences.h"

namespace seer {

// Grouped-query attention: query head h reads KV head h / group(), group() = q_heads / kv_heads.
struct HeadDims {
  int q_heads = 0;
  int kv_heads = 0;
  int head_dim = 0;

  int group() const { return q_heads / kv_heads; }
  void validate() const {
    SEER_CHECK(q_heads > 0 && kv_heads > 0, "head counts must be positive, got H_q=", q_heads, " H_kv=", kv_heads);
    SEER_CHECK(q_heads % kv_heads == 0, "H_q=", q_heads, " is not a multiple of H_kv=", kv_heads);
    SEER_CHECK(head_dim > 0 && head_dim % 2 == 0, "head_dim must be positive and even, got ", head_dim);
  }
};

// Checks that a [tokens, heads, head_dim] buffer has exactly the expected size.
template <typename T>
void check_tokens_heads_dim(std::span<T> buffer, const char* name, int64_t tokens, int heads, int dim) {
  const int64_t expected = tokens * heads * dim;
  SEER_CHECK(int64_t(buffer.size()) == expected, name, " has ", buffer.size(), " elements, expected ", tokens,
             " tokens x ", heads, " heads x ", dim, " = ", expected);
}

template <typename T>
void check_size(std::span<T> buffer, const char* name, int64_t expected) {
  SEER_CHECK(int64_t(buffer.size()) == expected, name, " has ", buffer.size(), " elements, expected ", expected);
}

}  // namespace seer
