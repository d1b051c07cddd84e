// FlashAttention on the CPU: one query block of B rows at a time against a list of key blocks,
// with the online softmax (running row max m and sum l, O rescaled by exp(m_old - m_new)).
// Dense attention visits key blocks 0..i, block-sparse the mask's list, the ground-truth variant
// additionally records each row's max score and log-sum-exp per key block.
#include "attention/attention_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "core/bf16.h"
#include "core/fast_exp.h"

namespace seer {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void check_inputs(size_t q, size_t k, size_t v, const Sequences& seqs, const HeadDims& dims) {
  dims.validate();
  const int64_t tokens = seqs.tokens();
  SEER_CHECK(int64_t(q) == tokens * dims.q_heads * dims.head_dim, "q has ", q, " elements, expected ", tokens,
             " tokens x ", dims.q_heads, " heads x ", dims.head_dim);
  SEER_CHECK(int64_t(k) == tokens * dims.kv_heads * dims.head_dim, "k has ", k, " elements, expected ", tokens,
             " tokens x ", dims.kv_heads, " heads x ", dims.head_dim);
  SEER_CHECK(int64_t(v) == int64_t(k), "v has ", v, " elements, k has ", k);
}

// K and V converted to float once and laid out for the tile loops: K transposed per block
// ([kv head][global block][d][B], zero-padded past a sequence's end) so that a score row is a
// sum of d scaled rows of B contiguous floats; V as [kv head][token][d].
struct PackedKV {
  int block = 0, dim = 0;
  int64_t total_blocks = 0, tokens = 0;
  std::vector<float> kt, v;

  const float* k_block(int hk, int64_t global_block) const {
    return kt.data() + (size_t(hk) * size_t(total_blocks) + size_t(global_block)) * size_t(dim) * size_t(block);
  }
  const float* v_row(int hk, int64_t token) const {
    return v.data() + (size_t(hk) * size_t(tokens) + size_t(token)) * size_t(dim);
  }
};

template <typename T>
PackedKV pack_kv(std::span<const T> k, std::span<const T> v, const Sequences& seqs, const BlockLayout& layout,
                 const HeadDims& dims) {
  PackedKV p;
  p.block = layout.block;
  p.dim = dims.head_dim;
  p.total_blocks = layout.total_rows();
  p.tokens = seqs.tokens();
  const int B = p.block, d = p.dim, hkv = dims.kv_heads;
  p.kt.assign(size_t(hkv) * size_t(p.total_blocks) * size_t(d) * size_t(B), 0.0f);
  p.v.resize(size_t(hkv) * size_t(p.tokens) * size_t(d));
#pragma omp parallel for collapse(2) schedule(static)
  for (int hk = 0; hk < hkv; ++hk)
    for (int64_t s = 0; s < seqs.count(); ++s) {
      for (int64_t t = 0; t < seqs.length(s); ++t) {
        const int64_t token = seqs.start(s) + t;
        float* kt = const_cast<float*>(p.k_block(hk, layout.row_offset[size_t(s)] + t / B));
        float* vr = const_cast<float*>(p.v_row(hk, token));
        const T* ks = k.data() + (size_t(token) * size_t(hkv) + size_t(hk)) * size_t(d);
        const T* vs = v.data() + (size_t(token) * size_t(hkv) + size_t(hk)) * size_t(d);
        for (int c = 0; c < d; ++c) {
          kt[size_t(c) * size_t(B) + size_t(t % B)] = to_float(ks[c]);
          vr[c] = to_float(vs[c]);
        }
      }
    }
  return p;
}

// Per-thread scratch for one query block.
struct TileScratch {
  std::vector<float> q, s, acc, m, l, block_max, block_lse;
  TileScratch(int B, int d, int64_t max_nb)
      : q(size_t(B) * d),
        s(size_t(B) * B),
        acc(size_t(B) * d),
        m(B),
        l(B),
        block_max(size_t(B) * max_nb),
        block_lse(size_t(B) * max_nb) {}
};

// One query block (rows [0, rows) at sequence positions i*B + r) of head h against key blocks `keys`.
// Writes the normalized output rows and their lse; with kRecordBlocks also ws.block_max[r][j] and
// ws.block_lse[r][j], the row's max scaled score and log-sum-exp over block j.
template <typename T, bool kRecordBlocks>
void attend_query_block(std::span<const T> q, const PackedKV& kv, const Sequences& seqs, const BlockLayout& layout,
                        const HeadDims& dims, int64_t seq, int h, int64_t i, std::span<const int32_t> keys,
                        TileScratch& ws, std::span<float> out, std::span<float> lse) {
  const int B = layout.block, d = dims.head_dim, hk = h / dims.group();
  const int64_t len = seqs.length(seq), t0 = seqs.start(seq) + i * B, nb = layout.blocks[size_t(seq)];
  const int rows = int(std::min<int64_t>(B, len - i * B));
  const float scale = 1.0f / std::sqrt(float(d));
  float* qt = ws.q.data();
  float* acc = ws.acc.data();
  for (int r = 0; r < rows; ++r) {
    const T* src = q.data() + (size_t(t0 + r) * size_t(dims.q_heads) + size_t(h)) * size_t(d);
    for (int c = 0; c < d; ++c) qt[size_t(r) * d + c] = to_float(src[c]) * scale;
  }
  std::fill(ws.m.begin(), ws.m.end(), kNegInf);
  std::fill(ws.l.begin(), ws.l.end(), 0.0f);
  std::fill(ws.acc.begin(), ws.acc.end(), 0.0f);
  if constexpr (kRecordBlocks) {
    std::fill(ws.block_max.begin(), ws.block_max.begin() + rows * nb, kNegInf);
    std::fill(ws.block_lse.begin(), ws.block_lse.begin() + rows * nb, kNegInf);
  }

  for (const int32_t j : keys) {
    const float* kt = kv.k_block(hk, layout.row_offset[size_t(seq)] + j);
    const int cols = int(std::min<int64_t>(B, len - int64_t(j) * B));
    const bool needs_mask = (j == i) || cols < B;
    for (int r = 0; r < rows; ++r) {
      float* srow = ws.s.data() + size_t(r) * B;
      const float* qr = qt + size_t(r) * d;
      std::fill(srow, srow + B, 0.0f);
      for (int c = 0; c < d; ++c) {
        const float qc = qr[c];
        const float* krow = kt + size_t(c) * B;
#pragma omp simd
        for (int x = 0; x < B; ++x) srow[x] += qc * krow[x];
      }
      if (needs_mask) {
        const int64_t row_pos = i * B + r;
        for (int x = 0; x < B; ++x)
          if (x >= cols || int64_t(j) * B + x > row_pos) srow[x] = kNegInf;
      }
      float block_max = kNegInf;
      for (int x = 0; x < B; ++x) block_max = std::max(block_max, srow[x]);
      if constexpr (kRecordBlocks) ws.block_max[size_t(r) * nb + j] = block_max;
      const float m_new = std::max(ws.m[r], block_max);
      if (m_new == kNegInf) continue;  // nothing visible yet in this row
      const float alpha = fast_exp(ws.m[r] - m_new);
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int x = 0; x < B; ++x) {
        srow[x] = fast_exp(srow[x] - m_new);
        sum += srow[x];
      }
      if constexpr (kRecordBlocks) ws.block_lse[size_t(r) * nb + j] = m_new + std::log(sum);  // log(0): -inf
      ws.l[r] = ws.l[r] * alpha + sum;
      ws.m[r] = m_new;
      float* ar = acc + size_t(r) * d;
      for (int c = 0; c < d; ++c) ar[c] *= alpha;
      for (int x = 0; x < cols; ++x) {
        const float p = srow[x];
        if (p == 0.0f) continue;
        const float* vr = kv.v_row(hk, seqs.start(seq) + int64_t(j) * B + x);
#pragma omp simd
        for (int c = 0; c < d; ++c) ar[c] += p * vr[c];
      }
    }
  }
  for (int r = 0; r < rows; ++r) {
    float* dst = out.data() + (size_t(t0 + r) * size_t(dims.q_heads) + size_t(h)) * size_t(d);
    const float l = ws.l[r];
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int c = 0; c < d; ++c) dst[c] = acc[size_t(r) * d + c] * inv;
    lse[size_t(h) * size_t(seqs.tokens()) + size_t(t0 + r)] = l > 0.0f ? ws.m[r] + std::log(l) : kNegInf;
  }
}

// Runs `task(seq, h, i, scratch)` for every (sequence, query head, query block), largest rows first.
template <typename Task>
void for_each_query_block(const BlockLayout& layout, const HeadDims& dims, Task&& task) {
  struct Item {
    int64_t seq, i;
    int h;
  };
  std::vector<Item> items;
  items.reserve(size_t(layout.total_rows()) * size_t(dims.q_heads));
  for (int64_t s = 0; s < layout.sequences(); ++s)
    for (int64_t i = 0; i < layout.blocks[size_t(s)]; ++i)
      for (int h = 0; h < dims.q_heads; ++h) items.push_back({s, i, h});
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.i > b.i; });
  const int64_t max_nb = layout.blocks.empty() ? 1 : *std::max_element(layout.blocks.begin(), layout.blocks.end());
#pragma omp parallel
  {
    TileScratch ws(layout.block, dims.head_dim, max_nb);
#pragma omp for schedule(dynamic, 1)
    for (size_t n = 0; n < items.size(); ++n) task(items[n].seq, items[n].h, items[n].i, ws);
  }
}

std::vector<int32_t> iota_blocks(int64_t count) {
  std::vector<int32_t> keys(static_cast<size_t>(count));
  std::iota(keys.begin(), keys.end(), 0);
  return keys;
}

}  // namespace

template <typename T>
void dense_attention_cpu(std::span<const T> q, std::span<const T> k, std::span<const T> v, const Sequences& seqs,
                         const HeadDims& dims, std::span<float> out, std::span<float> lse) {
  check_inputs(q.size(), k.size(), v.size(), seqs, dims);
  check_size(out, "out", int64_t(q.size()));
  check_size(lse, "lse", seqs.tokens() * dims.q_heads);
  const BlockLayout layout(seqs, 64, dims.q_heads);
  const PackedKV kv = pack_kv(k, v, seqs, layout, dims);
  const int64_t max_nb = *std::max_element(layout.blocks.begin(), layout.blocks.end());
  const std::vector<int32_t> all_keys = iota_blocks(max_nb);
  for_each_query_block(layout, dims, [&](int64_t s, int h, int64_t i, TileScratch& ws) {
    attend_query_block<T, false>(q, kv, seqs, layout, dims, s, h, i, std::span(all_keys).first(size_t(i) + 1), ws,
                                 out, lse);
  });
}

template <typename T>
void ground_truth_attention_cpu(std::span<const T> q, std::span<const T> k, std::span<const T> v,
                                const Sequences& seqs, const HeadDims& dims, int block, std::span<float> out,
                                std::span<float> lse, std::span<float> gt, GtPooling pooling) {
  check_inputs(q.size(), k.size(), v.size(), seqs, dims);
  const BlockLayout layout(seqs, block, dims.q_heads);
  check_size(out, "out", int64_t(q.size()));
  check_size(lse, "lse", seqs.tokens() * dims.q_heads);
  check_size(gt, "gt", layout.map_elements());
  const PackedKV kv = pack_kv(k, v, seqs, layout, dims);
  const int64_t max_nb = *std::max_element(layout.blocks.begin(), layout.blocks.end());
  const std::vector<int32_t> all_keys = iota_blocks(max_nb);
  for_each_query_block(layout, dims, [&](int64_t s, int h, int64_t i, TileScratch& ws) {
    attend_query_block<T, true>(q, kv, seqs, layout, dims, s, h, i, std::span(all_keys).first(size_t(i) + 1), ws,
                                out, lse);
    const int64_t nb = layout.blocks[size_t(s)];
    const int rows = int(std::min<int64_t>(block, seqs.length(s) - i * block));
    float* gt_row = gt.data() + layout.map_offset[size_t(s)] + (int64_t(h) * nb + i) * nb;
    const float* rec = gt_pooling_uses_mass(pooling) ? ws.block_lse.data() : ws.block_max.data();
    double row_sum = 0.0;
    for (int64_t j = 0; j < nb; ++j) {
      float pooled = 0.0f;  // the rows' max or summed probability in block j (the sum's 1/rows cancels below)
      if (j <= i)
        for (int r = 0; r < rows; ++r) {
          const float p = std::exp(rec[size_t(r) * nb + j] - ws.m[r]) / ws.l[r];
          pooled = gt_pooling_sums_rows(pooling) ? pooled + p : std::max(pooled, p);
        }
      gt_row[j] = pooled;
      row_sum += pooled;
    }
    for (int64_t j = 0; j <= i; ++j) gt_row[j] = float(gt_row[j] / row_sum);
  });
}

template <typename T>
void ground_truth_bruteforce_cpu(std::span<const T> q, std::span<const T> k, const Sequences& seqs,
                                 const HeadDims& dims, int block, std::span<double> gt, GtPooling pooling) {
  check_inputs(q.size(), k.size(), k.size(), seqs, dims);
  const BlockLayout layout(seqs, block, dims.q_heads);
  check_size(gt, "gt", layout.map_elements());
  std::fill(gt.begin(), gt.end(), 0.0);
  const int d = dims.head_dim;
  const double scale = 1.0 / std::sqrt(double(d));
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t s = 0; s < seqs.count(); ++s)
    for (int h = 0; h < dims.q_heads; ++h) {
      const int64_t len = seqs.length(s), t0 = seqs.start(s), nb = layout.blocks[size_t(s)];
      double* map = gt.data() + layout.map_offset[size_t(s)] + int64_t(h) * nb * nb;
      std::vector<double> p(static_cast<size_t>(len)), row_mass;
      for (int64_t r = 0; r < len; ++r) {
        const T* qr = q.data() + (size_t(t0 + r) * dims.q_heads + h) * d;
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t c = 0; c <= r; ++c) {
          const T* kc = k.data() + (size_t(t0 + c) * dims.kv_heads + h / dims.group()) * d;
          double dot = 0.0;
          for (int x = 0; x < d; ++x) dot += to_double(qr[x]) * to_double(kc[x]);
          p[size_t(c)] = dot * scale;
          m = std::max(m, p[size_t(c)]);
        }
        double l = 0.0;
        for (int64_t c = 0; c <= r; ++c) l += (p[size_t(c)] = std::exp(p[size_t(c)] - m));
        double* cells = map + (r / block) * nb;
        if (pooling == GtPooling::max) {
          for (int64_t c = 0; c <= r; ++c) cells[c / block] = std::max(cells[c / block], p[size_t(c)] / l);
        } else {
          row_mass.assign(size_t(r / block) + 1, 0.0);  // this row's share per key block
          for (int64_t c = 0; c <= r; ++c) row_mass[size_t(c / block)] += p[size_t(c)] / l;
          for (size_t j = 0; j < row_mass.size(); ++j)
            cells[j] = pooling == GtPooling::mass ? cells[j] + row_mass[j] : std::max(cells[j], row_mass[j]);
        }
      }
      for (int64_t i = 0; i < nb; ++i) {
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) sum += map[i * nb + j];
        for (int64_t j = 0; j <= i; ++j) map[i * nb + j] /= sum;
      }
    }
}

template <typename T>
void block_sparse_attention_cpu(std::span<const T> q, std::span<const T> k, std::span<const T> v,
                                const Sequences& seqs, const HeadDims& dims, const BlockMask& mask,
                                std::span<float> out, std::span<float> lse) {
  check_inputs(q.size(), k.size(), v.size(), seqs, dims);
  check_size(out, "out", int64_t(q.size()));
  check_size(lse, "lse", seqs.tokens() * dims.q_heads);
  const BlockLayout layout(seqs, mask.block, dims.q_heads);
  validate_block_mask(mask, layout);
  const PackedKV kv = pack_kv(k, v, seqs, layout, dims);
  for_each_query_block(layout, dims, [&](int64_t s, int h, int64_t i, TileScratch& ws) {
    const int64_t row = mask_row(layout, s, h, i);
    const std::span<const int32_t> keys(mask.indices.data() + mask.indptr[size_t(row)],
                                        size_t(mask.indptr[size_t(row) + 1] - mask.indptr[size_t(row)]));
    attend_query_block<T, false>(q, kv, seqs, layout, dims, s, h, i, keys, ws, out, lse);
  });
}

#define SEER_INSTANTIATE(T)                                                                                      \
  template void dense_attention_cpu<T>(std::span<const T>, std::span<const T>, std::span<const T>,             \
                                       const Sequences&, const HeadDims&, std::span<float>, std::span<float>); \
  template void ground_truth_attention_cpu<T>(std::span<const T>, std::span<const T>, std::span<const T>,      \
                                              const Sequences&, const HeadDims&, int, std::span<float>,        \
                                              std::span<float>, std::span<float>, GtPooling);                  \
  template void ground_truth_bruteforce_cpu<T>(std::span<const T>, std::span<const T>, const Sequences&,       \
                                               const HeadDims&, int, std::span<double>, GtPooling);            \
  template void block_sparse_attention_cpu<T>(std::span<const T>, std::span<const T>, std::span<const T>,      \
                                              const Sequences&, const HeadDims&, const BlockMask&,             \
                                              std::span<float>, std::span<float>);
SEER_INSTANTIATE(float)
SEER_INSTANTIATE(bf16)
#undef SEER_INSTANTIATE

}  // namespace seer
