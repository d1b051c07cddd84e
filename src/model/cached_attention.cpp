#include "model/cached_attention.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/fast_exp.h"

namespace seer {

CachedAttention::CachedAttention(const HeadDims& dims, int64_t capacity) : dims_(dims), capacity_(capacity) {
  dims.validate();
  SEER_CHECK(capacity > 0, "attention cache capacity must be positive, got ", capacity);
  const size_t rows = size_t(kTile) * size_t(dims.group()), d = size_t(dims.head_dim);
  scratch_.resize(size_t(omp_get_max_threads()));
  for (Scratch& s : scratch_) {
    s.q.resize(rows * d);
    s.o.resize(rows * d);
    s.inv_sum.resize(rows);
    s.s.resize(rows * size_t(capacity));
    s.ranges.reserve(size_t((capacity + kTile - 1) / kTile));
  }
  // Two items per thread over all heads balance the split sizes.
  splits_ = std::max(1, (2 * omp_get_max_threads() + dims.kv_heads - 1) / dims.kv_heads);
  partials_.resize(size_t(dims.kv_heads) * size_t(splits_));
  for (Partial& p : partials_) {
    p.max.resize(size_t(dims.group()));
    p.sum.resize(size_t(dims.group()));
    p.o.resize(size_t(dims.group()) * d);
  }
}

void CachedAttention::decode(std::span<const float> q, int64_t first, const float* k_cache, const float* v_cache,
                             std::span<float> out) {
  const int g = dims_.group(), d = dims_.head_dim, hkv = dims_.kv_heads;
  const int64_t keys = first + 1;  // the token sees the whole cache, itself included
  const int splits = int(std::clamp<int64_t>(keys / kDecodeMinKeys, 1, splits_));
  const float scale = 1.0f / std::sqrt(float(d));
#pragma omp parallel for schedule(static) if (keys >= kDecodeMinKeys)
  for (int item = 0; item < hkv * splits; ++item) {
    const int hk = item / splits, split = item % splits;
    const int64_t begin = keys * split / splits, end = keys * (split + 1) / splits;
    Scratch& sc = scratch_[size_t(omp_get_thread_num())];
    for (int m = 0; m < g; ++m)
      for (int c = 0; c < d; ++c) sc.q[size_t(m * d + c)] = q[size_t((hk * g + m) * d + c)] * scale;
    decode_keys(sc, partials_[size_t(hk) * size_t(splits_) + size_t(split)], begin, end, hk, k_cache, v_cache);
  }
  for (int hk = 0; hk < hkv; ++hk)
    for (int m = 0; m < g; ++m) {
      float max = -std::numeric_limits<float>::infinity();
      for (int split = 0; split < splits; ++split)
        max = std::max(max, partials_[size_t(hk) * size_t(splits_) + size_t(split)].max[size_t(m)]);
      float* o = out.data() + size_t((hk * g + m) * d);
      std::fill_n(o, d, 0.0f);
      float sum = 0.0f;
      for (int split = 0; split < splits; ++split) {
        const Partial& part = partials_[size_t(hk) * size_t(splits_) + size_t(split)];
        const float w = fast_exp(part.max[size_t(m)] - max);
        sum += w * part.sum[size_t(m)];
        for (int c = 0; c < d; ++c) o[c] += w * part.o[size_t(m * d + c)];
      }
      for (int c = 0; c < d; ++c) o[c] /= sum;
    }
}

void CachedAttention::decode_keys(Scratch& sc, Partial& part, int64_t begin, int64_t end, int kv_head,
                                  const float* k_cache, const float* v_cache) const {
  const int g = dims_.group(), d = dims_.head_dim;
  const int64_t ld = int64_t(dims_.kv_heads) * d, len = end - begin;
  const float* k = k_cache + begin * ld + kv_head * d;
  const float* v = v_cache + begin * ld + kv_head * d;
  const float* qs = sc.q.data();
  float* s = sc.s.data();
  // Scores [g, len]: each key row is read once for the whole group, four keys at a time so that
  // four independent sums hide the latency of the additions.
  int64_t key = 0;
  for (; key + 4 <= len; key += 4) {
    const float *k0 = k + key * ld, *k1 = k0 + ld, *k2 = k1 + ld, *k3 = k2 + ld;
    for (int m = 0; m < g; ++m) {
      const float* qm = qs + m * d;
      float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
      for (int c = 0; c < d; ++c) {
        d0 += qm[c] * k0[c];
        d1 += qm[c] * k1[c];
        d2 += qm[c] * k2[c];
        d3 += qm[c] * k3[c];
      }
      float* sm = s + m * len + key;
      sm[0] = d0, sm[1] = d1, sm[2] = d2, sm[3] = d3;
    }
  }
  for (; key < len; ++key)
    for (int m = 0; m < g; ++m) {
      const float *qm = qs + m * d, *kr = k + key * ld;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < d; ++c) dot += qm[c] * kr[c];
      s[m * len + key] = dot;
    }
  for (int m = 0; m < g; ++m) {
    float* row = s + m * len;
    float max = row[0];
#pragma omp simd reduction(max : max)
    for (int64_t c = 1; c < len; ++c) max = std::max(max, row[c]);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < len; ++c) {
      row[c] = fast_exp(row[c] - max);
      sum += row[c];
    }
    part.max[size_t(m)] = max;
    part.sum[size_t(m)] = sum;
  }
  std::fill(part.o.begin(), part.o.end(), 0.0f);
  for (int64_t c = 0; c < len; ++c) {
    const float* vr = v + c * ld;
    for (int m = 0; m < g; ++m) {
      const float p = s[m * len + c];
      float* o = part.o.data() + m * d;
#pragma omp simd
      for (int x = 0; x < d; ++x) o[x] += p * vr[x];
    }
  }
}

void CachedAttention::attend(Scratch& sc, int rows, int64_t base, int per_token, int kv_head, const float* k_cache,
                             const float* v_cache) const {
  const int d = dims_.head_dim;
  const int ld = dims_.kv_heads * d;  // cache row stride: one token
  const float* k = k_cache + size_t(kv_head) * size_t(d);
  const float* v = v_cache + size_t(kv_head) * size_t(d);
  int64_t keys = 0;
  for (const KeyRange& r : sc.ranges) keys += r.end - r.begin;
  float* s = sc.s.data();

  int64_t col = 0;
  for (const KeyRange& r : sc.ranges) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, int(r.end - r.begin), d, 1.0f, sc.q.data(), d,
                k + size_t(r.begin) * size_t(ld), ld, 0.0f, s + col, int(keys));
    col += r.end - r.begin;
  }
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int m = 0; m < rows; ++m) {
    float* row = s + size_t(m) * size_t(keys);
    const int64_t pos = base + m / per_token;
    col = 0;
    for (const KeyRange& r : sc.ranges) {
      for (int64_t key = std::max(r.begin, pos + 1); key < r.end; ++key) row[col + key - r.begin] = kNegInf;
      col += r.end - r.begin;
    }
    float max = kNegInf;
#pragma omp simd reduction(max : max)
    for (int64_t c = 0; c < keys; ++c) max = std::max(max, row[c]);
    if (max == kNegInf) {  // sees no key: a zero output, as the foundation operators give
      std::fill(row, row + keys, 0.0f);
      sc.inv_sum[size_t(m)] = 0.0f;
      continue;
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < keys; ++c) {
      row[c] = fast_exp(row[c] - max);
      sum += row[c];
    }
    sc.inv_sum[size_t(m)] = 1.0f / sum;
  }
  col = 0;
  for (size_t n = 0; n < sc.ranges.size(); ++n) {
    const KeyRange& r = sc.ranges[n];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d, int(r.end - r.begin), 1.0f, s + col, int(keys),
                v + size_t(r.begin) * size_t(ld), ld, n == 0 ? 0.0f : 1.0f, sc.o.data(), d);
    col += r.end - r.begin;
  }
  for (int m = 0; m < rows; ++m) {
    float* o = sc.o.data() + size_t(m) * size_t(d);
    for (int c = 0; c < d; ++c) o[c] *= sc.inv_sum[size_t(m)];
  }
}

void CachedAttention::run(std::span<const float> q, int64_t first, const float* k_cache, const float* v_cache,
                          const BlockMask* mask, std::span<float> out) {
  const int hq = dims_.q_heads, g = dims_.group(), d = dims_.head_dim;
  const size_t token_stride = size_t(hq) * size_t(d);
  SEER_CHECK(q.size() % token_stride == 0 && !q.empty(), "attention: q has ", q.size(),
             " elements, not a positive multiple of ", hq, " heads x ", d);
  const int64_t n = int64_t(q.size() / token_stride);
  check_size(out, "attention output", int64_t(q.size()));
  SEER_CHECK(first >= 0 && first + n <= capacity_, "attention: positions [", first, ", ", first + n,
             ") exceed the cache capacity ", capacity_);
  if (n == 1 && mask == nullptr) {
    decode(q, first, k_cache, v_cache, out);
    return;
  }
  const int64_t tiles = (n + kTile - 1) / kTile;
  const float scale = 1.0f / std::sqrt(float(d));

  if (mask == nullptr) {
    // Items (kv head, tile), the longest key ranges (last tiles) first.
    const int64_t items = int64_t(dims_.kv_heads) * tiles;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      Scratch& sc = scratch_[size_t(omp_get_thread_num())];
      const int64_t tile = tiles - 1 - item / dims_.kv_heads;
      const int hk = int(item % dims_.kv_heads);
      const int64_t t0 = tile * kTile, t1 = std::min(n, t0 + kTile);
      const int tokens = int(t1 - t0);
      for (int r = 0; r < tokens; ++r)
        for (int gi = 0; gi < g; ++gi) {
          const float* src = q.data() + size_t(t0 + r) * token_stride + size_t(hk * g + gi) * size_t(d);
          float* dst = sc.q.data() + size_t(r * g + gi) * size_t(d);
          for (int c = 0; c < d; ++c) dst[c] = src[c] * scale;
        }
      sc.ranges.assign(1, KeyRange{0, first + t1});
      attend(sc, tokens * g, first + t0, g, hk, k_cache, v_cache);
      for (int r = 0; r < tokens; ++r)
        std::copy_n(sc.o.data() + size_t(r * g) * size_t(d), size_t(g) * size_t(d),
                    out.data() + size_t(t0 + r) * token_stride + size_t(hk * g) * size_t(d));
    }
    return;
  }

  SEER_CHECK(first == 0, "attention: a block mask covers a whole sequence; the chunk starts at ", first);
  SEER_CHECK(mask->block == kTile, "attention: mask block ", mask->block, ", expected ", kTile);
  const BlockLayout layout(Sequences::single(n), kTile, hq);
  validate_block_mask(*mask, layout);
  const int64_t items = int64_t(hq) * tiles;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t item = 0; item < items; ++item) {
    Scratch& sc = scratch_[size_t(omp_get_thread_num())];
    const int64_t i = tiles - 1 - item / hq;
    const int h = int(item % hq);
    const int64_t t0 = i * kTile, t1 = std::min(n, t0 + kTile);
    const int tokens = int(t1 - t0);
    for (int r = 0; r < tokens; ++r) {
      const float* src = q.data() + size_t(t0 + r) * token_stride + size_t(h) * size_t(d);
      for (int c = 0; c < d; ++c) sc.q[size_t(r) * size_t(d) + size_t(c)] = src[c] * scale;
    }
    // Consecutive selected blocks form one key range: one product each.
    sc.ranges.clear();
    const int64_t row = mask_row(layout, 0, h, i);
    for (int64_t e = mask->indptr[size_t(row)]; e < mask->indptr[size_t(row) + 1]; ++e) {
      const int64_t begin = int64_t(mask->indices[size_t(e)]) * kTile, end = std::min(n, begin + kTile);
      if (!sc.ranges.empty() && sc.ranges.back().end == begin)
        sc.ranges.back().end = end;
      else
        sc.ranges.push_back({begin, end});
    }
    if (sc.ranges.empty()) {  // a row that selects nothing attends to nothing
      for (int r = 0; r < tokens; ++r)
        std::fill_n(out.data() + size_t(t0 + r) * token_stride + size_t(h) * size_t(d), d, 0.0f);
      continue;
    }
    attend(sc, tokens, t0, 1, h / g, k_cache, v_cache);
    for (int r = 0; r < tokens; ++r)
      std::copy_n(sc.o.data() + size_t(r) * size_t(d), d,
                  out.data() + size_t(t0 + r) * token_stride + size_t(h) * size_t(d));
  }
}

}  // namespace seer
