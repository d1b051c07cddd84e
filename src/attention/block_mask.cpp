#include "attention/block_mask.h"

#include "core/error.h"

namespace seer {

void validate_block_mask(const BlockMask& mask, const BlockLayout& layout) {
  SEER_CHECK(mask.block == layout.block, "mask block size ", mask.block, " != attention block size ", layout.block);
  SEER_CHECK(mask.heads == layout.heads, "mask has ", mask.heads, " heads, attention has ", layout.heads);
  const int64_t rows = layout.total_rows() * layout.heads;
  SEER_CHECK(int64_t(mask.indptr.size()) == rows + 1, "mask indptr has ", mask.indptr.size(), " entries, expected ",
             rows + 1, " (rows + 1)");
  SEER_CHECK(mask.indptr[0] == 0, "mask indptr must start at 0, got ", mask.indptr[0]);
  SEER_CHECK(mask.indptr.back() == mask.nnz(), "mask indptr ends at ", mask.indptr.back(), " but there are ",
             mask.nnz(), " indices");
  for (int64_t s = 0; s < layout.sequences(); ++s) {
    const int64_t nb = layout.blocks[size_t(s)];
    for (int h = 0; h < layout.heads; ++h) {
      for (int64_t i = 0; i < nb; ++i) {
        const int64_t row = mask_row(layout, s, h, i);
        const int64_t begin = mask.indptr[size_t(row)], end = mask.indptr[size_t(row) + 1];
        SEER_CHECK(begin <= end && end <= mask.nnz(), "mask indptr is not non-decreasing at row ", row);
        for (int64_t e = begin; e < end; ++e) {
          const int32_t j = mask.indices[size_t(e)];
          SEER_CHECK(j >= 0 && j <= i, "mask row (seq ", s, ", head ", h, ", query block ", i, ") lists key block ", j,
                     ", outside the causal range [0, ", i, "]");
          SEER_CHECK(e == begin || j > mask.indices[size_t(e) - 1], "mask row (seq ", s, ", head ", h,
                     ", query block ", i, ") is not strictly increasing at key block ", j);
        }
      }
    }
  }
}

double mask_density(const BlockMask& mask, const BlockLayout& layout) {
  const int64_t pairs = layout.causal_pairs();
  return pairs == 0 ? 0.0 : double(mask.nnz()) / double(pairs);
}

BlockMask full_causal_mask(const BlockLayout& layout) {
  BlockMask mask;
  mask.block = layout.block;
  mask.heads = layout.heads;
  mask.indptr.assign(size_t(layout.total_rows() * layout.heads + 1), 0);
  for (int64_t s = 0; s < layout.sequences(); ++s)
    for (int h = 0; h < layout.heads; ++h)
      for (int64_t i = 0; i < layout.blocks[size_t(s)]; ++i) {
        for (int32_t j = 0; j <= i; ++j) mask.indices.push_back(j);
        mask.indptr[size_t(mask_row(layout, s, h, i)) + 1] = int64_t(i) + 1;
      }
  for (size_t r = 1; r < mask.indptr.size(); ++r) mask.indptr[r] += mask.indptr[r - 1];
  return mask;
}

BlockMask with_dense_last_blocks(const BlockMask& mask, const BlockLayout& layout, int n) {
  validate_block_mask(mask, layout);
  SEER_CHECK(n >= 0, "dense last blocks must be >= 0, got ", n);
  BlockMask out{mask.block, mask.heads, std::vector<int64_t>(mask.indptr.size(), 0), {}};
  out.indices.reserve(mask.indices.size());
  for (int64_t s = 0; s < layout.sequences(); ++s) {
    const int64_t nb = layout.blocks[size_t(s)];
    for (int h = 0; h < layout.heads; ++h)
      for (int64_t i = 0; i < nb; ++i) {
        const size_t row = size_t(mask_row(layout, s, h, i));
        if (i >= nb - n)
          for (int32_t j = 0; j <= i; ++j) out.indices.push_back(j);
        else
          out.indices.insert(out.indices.end(), mask.indices.begin() + mask.indptr[row],
                             mask.indices.begin() + mask.indptr[row + 1]);
        out.indptr[row + 1] = int64_t(out.indices.size());
      }
  }
  return out;
}

}  // namespace seer
