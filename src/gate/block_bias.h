// The gate's block bias: seer's extension of the published AttnGate (`seer train-gates
// --block-bias`). Per query head, one learned number per block distance bucket is added to the
// logit of block pair (i, j), and one more to every pair whose key block is the attention sink:
//   logits[h, i, j] += bias[h, distance_bucket(i - j)] + (j == 0 ? bias[h, kBiasSinkColumn] : 0)
// The published gate scores a pair only through its pooled contents (rotated by RoPE); the prior
// of attention for the nearest blocks and the first one is then learned indirectly, through content
// that merely tends to come with it, and top-k on such gates drops local blocks that the ground
// truth keeps (bench/ACCURACY.md, (a) against (a+)). Buckets: distances 0, 1, 2, 3 exactly, then
// log-spaced as T5's relative positions (4-7, 8-15, 16-31, 32-63), and one for 64 blocks and more,
// which sequences of 8k tokens (128 blocks) train, so that longer contexts use a trained value.
// Stored as model.layers.{i}.self_attn.attn_gate.block_bias [H_q, kBiasColumns]; gates without it
// (every released one) have no bias.
#pragma once
#include <cstdint>

#include "core/host_device.h"

namespace seer {

inline constexpr int kBiasDistanceBuckets = 9;
inline constexpr int kBiasSinkColumn = kBiasDistanceBuckets;
inline constexpr int kBiasColumns = kBiasDistanceBuckets + 1;

// The bucket of block distance `distance` >= 0.
SEER_HOST_DEVICE constexpr int distance_bucket(int64_t distance) {
  if (distance < 4) return int(distance);
  int bucket = 2;  // 4-7 -> 4, 8-15 -> 5, ...: 2 + floor(log2(distance))
  for (int64_t d = distance; d >= 2 && bucket < kBiasDistanceBuckets; d >>= 1) ++bucket;
  return bucket < kBiasDistanceBuckets ? bucket : kBiasDistanceBuckets - 1;
}

// The bias of block pair (i, j <= i) from one head's row of the table.
template <typename Real>
SEER_HOST_DEVICE Real block_bias(const Real* head_bias, int64_t i, int64_t j) {
  return head_bias[distance_bucket(i - j)] + (j == 0 ? head_bias[kBiasSinkColumn] : Real(0));
}

}  // namespace seer
