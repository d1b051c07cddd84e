// Attention of a chunk of query tokens over a key/value cache: prefill in chunks and decode.
//
// The chunk holds the tokens at positions [first, first + n) of one sequence; the cache holds the
// keys (RoPE applied) and values of positions [0, first + n), each as [capacity, H_kv, d]. Every
// query attends causally to the cache or, given a block mask (SeerAttention prefill, which scores
// the whole prompt at once: first = 0), to the key blocks that its (head, query block) row selects.
// The result is dense_attention_cpu / block_sparse_attention_cpu of the whole sequence restricted
// to the chunk's rows (tests/model check it); those operators take no query offset, which chunked
// prefill and decode need.
//
// Prefill work is split into (KV head, 64-token query tile) items, the tile's rows being all query heads of
// the group (grouped-query attention reads each key once per group); with a mask, into (query head,
// query block) items, the key list being per head. Each item computes its scores S = Q·Kᵀ over the
// keys it sees with one BLAS product per contiguous key range, exponentiates each row against its
// exact max (the whole row is in memory: at most 64·g rows × the cache capacity, per thread), then
// P·V, normalized by the row sums at the end.
//
// Decode (one query token) is memory-bound and has only H_kv natural items, fewer than threads on
// small models; it splits each head's keys into ranges instead (flash-decoding): every item reads
// its keys and values once for the group's g query heads and keeps a partial softmax (row max,
// sum, unnormalized output), and the partials of a head merge by their maxima.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "attention/block_mask.h"
#include "attention/head_dims.h"

namespace seer {

class CachedAttention {
 public:
  static constexpr int kTile = 64;  // query tokens per item; the block size of masks

  // Scratch for keys up to `capacity`, for every OpenMP thread, allocated once here.
  CachedAttention(const HeadDims& dims, int64_t capacity);

  // q [n, H_q, d] with RoPE applied; out [n, H_q, d]. mask: nullptr for causal attention, else a
  // CSR mask over the whole sequence (first must be 0) with block kTile and H_q heads.
  void run(std::span<const float> q, int64_t first, const float* k_cache, const float* v_cache, const BlockMask* mask,
           std::span<float> out);

  const HeadDims& dims() const { return dims_; }
  int64_t capacity() const { return capacity_; }

 private:
  struct KeyRange {
    int64_t begin, end;  // cache positions
  };
  struct Scratch {
    std::vector<float> q, s, o, inv_sum;  // [rows, d], [rows, keys], [rows, d], [rows]
    std::vector<KeyRange> ranges;
  };
  // One decode item's result for the g query heads of its KV head.
  struct Partial {
    std::vector<float> max, sum, o;  // [g], [g], [g, d]
  };
  static constexpr int64_t kDecodeMinKeys = 256;  // keys per decode item at least: splits pay off

  void decode(std::span<const float> q, int64_t first, const float* k_cache, const float* v_cache,
              std::span<float> out);
  // The partial softmax of the g scaled queries in scratch.q over cache positions [begin, end).
  void decode_keys(Scratch& scratch, Partial& partial, int64_t begin, int64_t end, int kv_head, const float* k_cache,
                   const float* v_cache) const;
  // Rows m < rows of scratch.q (scaled queries, [rows, d]) at positions base + m / per_token attend
  // to the keys of scratch.ranges that are not after them; normalized outputs go to scratch.o.
  void attend(Scratch& scratch, int rows, int64_t base, int per_token, int kv_head, const float* k_cache,
              const float* v_cache) const;

  HeadDims dims_;
  int64_t capacity_;
  std::vector<Scratch> scratch_;   // one per OpenMP thread
  int splits_;                     // decode key ranges per KV head at most
  std::vector<Partial> partials_;  // [H_kv, splits_]
};

}  // namespace seer
