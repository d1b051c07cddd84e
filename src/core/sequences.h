// Several sequences packed along the token axis, described by cumulative offsets
// (cu_seqlens = {0, n0, n0+n1, ...}), and the block-level layouts derived from them.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace seer {

// Token layout of one call: sequence s owns tokens [offsets[s], offsets[s+1]).
struct Sequences {
  std::vector<int64_t> offsets;

  Sequences() = default;
  explicit Sequences(std::vector<int64_t> cu_seqlens);  // validates: starts at 0, each length >= 1
  static Sequences single(int64_t length) { return Sequences({0, length}); }
  static Sequences from_lengths(const std::vector<int64_t>& lengths);

  int64_t count() const { return int64_t(offsets.size()) - 1; }
  int64_t tokens() const { return offsets.back(); }
  int64_t start(int64_t s) const { return offsets[size_t(s)]; }
  int64_t length(int64_t s) const { return offsets[size_t(s) + 1] - offsets[size_t(s)]; }
};

// Blocks of `block` tokens per sequence. Square per-sequence maps [H, nb, nb] are packed one
// sequence after the other (map_offset); block rows of all sequences are numbered globally
// (row_offset) for CSR masks.
struct BlockLayout {
  int block = 64;
  int heads = 0;
  std::vector<int64_t> blocks;      // nb per sequence
  std::vector<int64_t> row_offset;  // cumulative nb, size count+1
  std::vector<int64_t> map_offset;  // cumulative heads*nb*nb, size count+1

  BlockLayout(const Sequences& seqs, int block, int heads);
  int64_t total_rows() const { return row_offset.back(); }
  int64_t map_elements() const { return map_offset.back(); }
  // Number of (query block, key block) pairs with key <= query, over all heads and sequences.
  int64_t causal_pairs() const;
  int64_t sequences() const { return int64_t(blocks.size()); }
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace seer
