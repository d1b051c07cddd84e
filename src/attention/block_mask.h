// Block-sparse attention mask in CSR form (FlashInfer's layout, per head and query block).
//
// Rows are (sequence s, head h, query block i), numbered row = row_offset[s]*heads + h*nb_s + i,
// i.e. each sequence's rows form an [H, nb] matrix. indices[indptr[row] .. indptr[row+1]) are the
// sorted key blocks j <= i (local to the sequence) that the row attends to.
#pragma once
#include <cstdint>
#include <vector>

#include "core/sequences.h"

namespace seer {

struct BlockMask {
  int block = 64;
  int heads = 0;
  std::vector<int64_t> indptr;   // rows + 1
  std::vector<int32_t> indices;  // nnz

  int64_t rows() const { return int64_t(indptr.size()) - 1; }
  int64_t nnz() const { return int64_t(indices.size()); }
};

inline int64_t mask_row(const BlockLayout& layout, int64_t seq, int h, int64_t i) {
  return layout.row_offset[size_t(seq)] * layout.heads + int64_t(h) * layout.blocks[size_t(seq)] + i;
}

// Throws seer::Error naming the first defect: wrong row count, non-monotonic indptr, key blocks
// out of [0, i], unsorted or repeated, or a block size / head count that does not match.
void validate_block_mask(const BlockMask& mask, const BlockLayout& layout);

// Fraction of causal (i, j <= i) block pairs the mask keeps, over all heads and sequences.
double mask_density(const BlockMask& mask, const BlockLayout& layout);

// The mask that keeps every causal block: block-sparse attention with it equals dense attention.
BlockMask full_causal_mask(const BlockLayout& layout);

// `mask` with the last `n` query blocks of each sequence keeping every causal block, as
// SelectionOptions::dense_last_blocks does for the gate's selections: a prompt that ends in a question
// attends from it densely. For masks built outside the selection (the heuristics').
BlockMask with_dense_last_blocks(const BlockMask& mask, const BlockLayout& layout, int n);

}  // namespace seer
