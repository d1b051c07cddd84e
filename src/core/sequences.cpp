#include "core/sequences.h"

#include "core/error.h"

namespace seer {

Sequences::Sequences(std::vector<int64_t> cu_seqlens) : offsets(std::move(cu_seqlens)) {
  SEER_CHECK(offsets.size() >= 2, "sequence offsets need at least two entries, got ", offsets.size());
  SEER_CHECK(offsets[0] == 0, "sequence offsets must start at 0, got ", offsets[0]);
  for (size_t s = 1; s < offsets.size(); ++s)
    SEER_CHECK(offsets[s] > offsets[s - 1], "sequence ", s - 1, " is empty or has negative length (offsets ",
               offsets[s - 1], " -> ", offsets[s], ")");
}

Sequences Sequences::from_lengths(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> offsets{0};
  for (int64_t n : lengths) offsets.push_back(offsets.back() + n);
  return Sequences(std::move(offsets));
}

BlockLayout::BlockLayout(const Sequences& seqs, int block_size, int n_heads) : block(block_size), heads(n_heads) {
  SEER_CHECK(block > 0, "block size must be positive, got ", block);
  SEER_CHECK(heads > 0, "head count must be positive, got ", heads);
  row_offset.push_back(0);
  map_offset.push_back(0);
  for (int64_t s = 0; s < seqs.count(); ++s) {
    int64_t nb = ceil_div(seqs.length(s), block);
    blocks.push_back(nb);
    row_offset.push_back(row_offset.back() + nb);
    map_offset.push_back(map_offset.back() + int64_t(heads) * nb * nb);
  }
}

int64_t BlockLayout::causal_pairs() const {
  int64_t pairs = 0;
  for (int64_t nb : blocks) pairs += nb * (nb + 1) / 2;
  return pairs * heads;
}

}  // namespace seer
