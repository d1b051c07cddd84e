#include "model/tensor_shard.h"

#include "core/error.h"

namespace seer {
namespace {

// Rows [r0, r1) of a row-major matrix of `cols` columns (an [out, in] weight's output features).
std::vector<float> row_slice(const std::vector<float>& w, int64_t cols, int64_t r0, int64_t r1) {
  return std::vector<float>(w.begin() + r0 * cols, w.begin() + r1 * cols);
}

// Columns [c0, c1) of a row-major matrix of `cols` columns (an [out, in] weight's input features).
std::vector<float> column_slice(const std::vector<float>& w, int64_t cols, int64_t c0, int64_t c1) {
  const int64_t rows = int64_t(w.size()) / cols;
  std::vector<float> out;
  out.reserve(size_t(rows * (c1 - c0)));
  for (int64_t r = 0; r < rows; ++r) out.insert(out.end(), w.begin() + r * cols + c0, w.begin() + r * cols + c1);
  return out;
}

// Rank r's boundary when `count` units of `unit` elements are split over `ranks` (floor division,
// so the ranks' shares differ by at most one unit).
int boundary(int count, int unit, int rank, int ranks) {
  return int(int64_t(count / unit) * rank / ranks) * unit;
}

}  // namespace

TensorShard tensor_shard(const LlamaConfig& c, int rank, int ranks) {
  c.validate();
  SEER_CHECK(ranks >= 1 && ranks <= c.kv_heads, "the model cannot be split over ", ranks, " GPUs: it has ",
             c.kv_heads, " KV heads and each GPU takes whole ones (1 to ", c.kv_heads, " GPUs)");
  SEER_CHECK(rank >= 0 && rank < ranks, "rank ", rank, " outside [0, ", ranks, ")");
  const int group = c.q_heads / c.kv_heads;
  // 64-feature units when every rank gets at least one; single features otherwise.
  const int unit = c.intermediate % 64 == 0 && c.intermediate / 64 >= ranks ? 64 : 1;
  SEER_CHECK(c.intermediate >= ranks, "the model cannot be split over ", ranks, " GPUs: its MLP has only ",
             c.intermediate, " features");
  TensorShard s;
  s.rank = rank;
  s.ranks = ranks;
  s.kv_begin = boundary(c.kv_heads, 1, rank, ranks);
  s.kv_end = boundary(c.kv_heads, 1, rank + 1, ranks);
  s.q_begin = s.kv_begin * group;
  s.q_end = s.kv_end * group;
  s.inter_begin = boundary(c.intermediate, unit, rank, ranks);
  s.inter_end = rank + 1 == ranks ? c.intermediate : boundary(c.intermediate, unit, rank + 1, ranks);
  return s;
}

void check_shard(const LlamaConfig& c, const TensorShard& s) {
  SEER_CHECK(s.ranks >= 1 && s.q_end <= c.q_heads && s.kv_end <= c.kv_heads && s.inter_end <= c.intermediate,
             "the shard was made for another model shape");
}

LlamaConfig shard_config(const LlamaConfig& config, const TensorShard& s) {
  LlamaConfig c = config;
  c.q_heads = s.q_heads();
  c.kv_heads = s.kv_heads();
  c.intermediate = s.intermediate();
  return c;
}

LlamaWeights shard_weights(const LlamaWeights& w, const TensorShard& s) {
  LlamaWeights out;
  out.config = shard_config(w.config, s);
  out.embed = w.embed;
  out.final_norm = w.final_norm;
  out.lm_head = w.lm_head;
  for (const LlamaLayerWeights& l : w.layers) out.layers.push_back(shard_layer(l, w.config, s));
  return out;
}

LlamaLayerWeights shard_layer(const LlamaLayerWeights& l, const LlamaConfig& c, const TensorShard& s) {
  check_shard(c, s);
  const int64_t d = c.head_dim, hidden = c.hidden;
  LlamaLayerWeights o;
  o.attn_norm = l.attn_norm;
  o.ffn_norm = l.ffn_norm;
  o.wq = row_slice(l.wq, hidden, s.q_begin * d, s.q_end * d);
  o.wk = row_slice(l.wk, hidden, s.kv_begin * d, s.kv_end * d);
  o.wv = row_slice(l.wv, hidden, s.kv_begin * d, s.kv_end * d);
  if (c.qkv_bias) {
    o.bq = row_slice(l.bq, 1, s.q_begin * d, s.q_end * d);
    o.bk = row_slice(l.bk, 1, s.kv_begin * d, s.kv_end * d);
    o.bv = row_slice(l.bv, 1, s.kv_begin * d, s.kv_end * d);
  }
  o.wo = column_slice(l.wo, int64_t(c.q_heads) * d, s.q_begin * d, s.q_end * d);
  o.w_gate = row_slice(l.w_gate, hidden, s.inter_begin, s.inter_end);
  o.w_up = row_slice(l.w_up, hidden, s.inter_begin, s.inter_end);
  o.w_down = column_slice(l.w_down, c.intermediate, s.inter_begin, s.inter_end);
  return o;
}

GateWeights<float> shard_gate(const GateWeights<float>& gate, const TensorShard& s) {
  const GateConfig& g = gate.config;
  SEER_CHECK(s.q_end <= g.heads.q_heads && s.kv_end <= g.heads.kv_heads,
             "the shard was made for a model of other head counts than the gate's (", g.heads.q_heads, "/",
             g.heads.kv_heads, ")");
  GateWeights<float> out;
  out.config = g;
  out.config.heads.q_heads = s.q_heads();
  out.config.heads.kv_heads = s.kv_heads();
  const int64_t k_head = 3 * int64_t(g.heads.head_dim) * g.gate_dim;
  const bool by_kv = g.has_q_proj();  // W_k per KV head (GateConfig::k_proj_heads)
  out.wk = row_slice(gate.wk, k_head, by_kv ? s.kv_begin : s.q_begin, by_kv ? s.kv_end : s.q_end);
  if (!gate.wq.empty()) out.wq = row_slice(gate.wq, int64_t(g.q_in_dim()) * g.gate_dim, s.q_begin, s.q_end);
  if (!gate.bias.empty()) out.bias = row_slice(gate.bias, kBiasColumns, s.q_begin, s.q_end);
  return out;
}

}  // namespace seer
