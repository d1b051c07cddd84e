#include "model/forward_cpu.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/linear.h"

namespace seer {
namespace {

// y = x / sqrt(mean(x²) + eps) * w per row, as Hugging Face's LlamaRMSNorm (sum in double).
void rms_norm(const float* x, int64_t n, int64_t dim, const float* w, double eps, float* y) {
#pragma omp parallel for if (n > 1)
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * dim;
    float* yr = y + t * dim;
    double ss = 0.0;
    for (int64_t c = 0; c < dim; ++c) ss += double(xr[c]) * xr[c];
    const float inv = float(1.0 / std::sqrt(ss / double(dim) + eps));
    for (int64_t c = 0; c < dim; ++c) yr[c] = xr[c] * inv * w[c];
  }
}

void add_bias(float* y, int64_t n, const std::vector<float>& bias, int64_t ld) {
  const int64_t dim = int64_t(bias.size());
#pragma omp parallel for if (n > 1)
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < dim; ++c) y[t * ld + c] += bias[size_t(c)];
}

}  // namespace

LlamaCpu::LlamaCpu(const LlamaWeights& weights, const CpuForwardOptions& options)
    : weights_(weights),
      options_(options),
      capacity_(options.context > 0 ? options.context : weights.config.max_positions),
      rope_(weights.config.rope, weights.config.head_dim),
      attention_(HeadDims{weights.config.q_heads, weights.config.kv_heads, weights.config.head_dim}, capacity_) {
  const LlamaConfig& c = weights.config;
  c.validate();
  SEER_CHECK(options.chunk > 0, "the prefill chunk must be positive, got ", options.chunk);
  SEER_CHECK(int64_t(weights.layers.size()) == c.layers, "weights have ", weights.layers.size(), " layers, the ",
             "configuration ", c.layers);
  if (options.attention == AttentionMethod::seer) {
    SEER_CHECK(int64_t(options.gates.size()) == c.layers, "SeerAttention needs one gate per layer: got ",
               options.gates.size(), " for ", c.layers, " layers");
    for (const GateWeights<float>& g : options.gates) {
      g.validate();
      SEER_CHECK(g.config.heads.q_heads == c.q_heads && g.config.heads.kv_heads == c.kv_heads &&
                     g.config.heads.head_dim == c.head_dim,
                 "gate heads ", g.config.heads.q_heads, "/", g.config.heads.kv_heads, " x ", g.config.heads.head_dim,
                 " do not match the model's ", c.q_heads, "/", c.kv_heads, " x ", c.head_dim);
      SEER_CHECK(g.config.block == CachedAttention::kTile, "gate block ", g.config.block, ", the CPU forward uses ",
                 CachedAttention::kTile);
      gate_ropes_.emplace_back(c.rope, g.config.gate_dim);
    }
    options.selection.validate();
    SEER_CHECK(options.selection.layer_mass.empty() || int64_t(options.selection.layer_mass.size()) == c.layers,
               "SeerAttention: ", options.selection.layer_mass.size(), " per-layer masses for ", c.layers, " layers");
  }
  use_single_threaded_blas();
  const size_t kv = size_t(capacity_) * size_t(c.kv_heads) * size_t(c.head_dim);
  k_cache_.assign(size_t(c.layers), std::vector<float>(kv));
  v_cache_.assign(size_t(c.layers), std::vector<float>(kv));
  logits_.resize(size_t(kLogitRows) * size_t(c.vocab));
  last_.resize(size_t(c.vocab));
  ensure_rows(1);
}

void LlamaCpu::ensure_rows(int64_t rows) {
  if (rows <= rows_) return;
  const LlamaConfig& c = weights_.config;
  const size_t n = size_t(rows), qd = size_t(c.q_heads) * size_t(c.head_dim);
  x_.resize(n * size_t(c.hidden));
  xn_.resize(n * size_t(c.hidden));
  q_.resize(n * qd);
  attn_.resize(n * qd);
  gate_.resize(n * size_t(c.intermediate));
  up_.resize(n * size_t(c.intermediate));
  cos_.resize(n * size_t(c.head_dim / 2));
  sin_.resize(n * size_t(c.head_dim / 2));
  rows_ = rows;
}

void LlamaCpu::set_rope_table(int64_t first, int64_t n) {
  const int half = weights_.config.head_dim / 2;
  const std::vector<double>& inv_freq = rope_.inv_freq();
  const double scaling = rope_.attention_scaling();
  for (int64_t t = 0; t < n; ++t)
    for (int i = 0; i < half; ++i) {
      const double angle = double(first + t) * inv_freq[size_t(i)];
      cos_[size_t(t * half + i)] = float(std::cos(angle) * scaling);
      sin_[size_t(t * half + i)] = float(std::sin(angle) * scaling);
    }
}

// Rotate-half RoPE (gate/rope.h) of x [n, heads, d] at the positions of the table.
void LlamaCpu::rotate(float* x, int64_t n, int heads) const {
  const int d = weights_.config.head_dim, half = d / 2;
#pragma omp parallel for if (n > 1)
  for (int64_t t = 0; t < n; ++t) {
    const float* c = cos_.data() + t * half;
    const float* s = sin_.data() + t * half;
    for (int h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * d;
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

void LlamaCpu::forward(std::span<const int32_t> tokens, int64_t logits_from, const LogitsVisitor& visit) {
  const int64_t n = int64_t(tokens.size());
  SEER_CHECK(position_ + n <= capacity_, "context full: ", position_, " tokens in the cache + ", n,
             " new exceed its capacity of ", capacity_);
  const int32_t vocab = weights_.config.vocab;
  for (const int32_t id : tokens) SEER_CHECK(id >= 0 && id < vocab, "token id ", id, " is outside [0, ", vocab, ")");
  if (n == 0) return;
  if (options_.attention == AttentionMethod::seer && position_ == 0) {
    step(tokens, logits_from, 0, visit, true);
    return;
  }
  for (int64_t begin = 0; begin < n; begin += options_.chunk) {
    const int64_t size = std::min(options_.chunk, n - begin);
    step(tokens.subspan(size_t(begin), size_t(size)), std::max<int64_t>(0, logits_from - begin), begin, visit, false);
  }
}

std::span<const float> LlamaCpu::prefill(std::span<const int32_t> tokens) {
  SEER_CHECK(!tokens.empty(), "prefill needs at least one token");
  forward(tokens, int64_t(tokens.size()) - 1,
          [this](int64_t, std::span<const float> logits) { std::copy(logits.begin(), logits.end(), last_.begin()); });
  return last_;
}

std::span<const float> LlamaCpu::decode(int32_t token) { return prefill(std::span(&token, 1)); }

void LlamaCpu::step(std::span<const int32_t> tokens, int64_t logits_from, int64_t index0, const LogitsVisitor& visit,
                    bool sparse) {
  const LlamaConfig& c = weights_.config;
  const int64_t n = int64_t(tokens.size()), first = position_;
  const int64_t hidden = c.hidden, qd = int64_t(c.q_heads) * c.head_dim, kvd = int64_t(c.kv_heads) * c.head_dim;
  const int64_t inter = c.intermediate;
  ensure_rows(n);
  set_rope_table(first, n);

#pragma omp parallel for if (n > 1)
  for (int64_t t = 0; t < n; ++t)
    std::copy_n(weights_.embed.data() + size_t(tokens[size_t(t)]) * size_t(hidden), hidden, x_.data() + t * hidden);

  const Sequences seqs = Sequences::single(n);
  const BlockLayout layout(seqs, CachedAttention::kTile, c.q_heads);
  if (sparse) gate_logits_.resize(size_t(layout.map_elements()));
  double density_sum = 0.0;
  // Tensor parallelism: see CpuForwardOptions::all_reduce.
  const bool reduce = bool(options_.all_reduce);
  const float residual_beta = reduce && options_.rank != 0 ? 0.0f : 1.0f;
  const std::span<float> residual(x_.data(), size_t(n * hidden));

  for (int l = 0; l < c.layers; ++l) {
    const LlamaLayerWeights& L = weights_.layers[size_t(l)];
    float* k = k_cache_[size_t(l)].data() + first * kvd;
    float* v = v_cache_[size_t(l)].data() + first * kvd;
    rms_norm(x_.data(), n, hidden, L.attn_norm.data(), c.rms_eps, xn_.data());
    const LinearTarget qkv[] = {
        {L.wq.data(), qd, q_.data(), qd}, {L.wk.data(), kvd, k, kvd}, {L.wv.data(), kvd, v, kvd}};
    linear(xn_.data(), n, hidden, qkv, 0.0f);
    if (c.qkv_bias) {
      add_bias(q_.data(), n, L.bq, qd);
      add_bias(k, n, L.bk, kvd);
      add_bias(v, n, L.bv, kvd);
    }
    BlockMask mask;
    if (sparse) {  // the gate reads Q and K before RoPE
      gate_forward<float, float>(std::span<const float>(q_.data(), size_t(n * qd)),
                                 std::span<const float>(k, size_t(n * kvd)), seqs, options_.gates[size_t(l)],
                                 gate_ropes_[size_t(l)], gate_logits_);
      mask = select_blocks(gate_logits_, layout, options_.selection.for_layer(l));
      density_sum += mask_density(mask, layout);
    }
    rotate(q_.data(), n, c.q_heads);
    rotate(k, n, c.kv_heads);
    attention_.run(std::span<const float>(q_.data(), size_t(n * qd)), first, k_cache_[size_t(l)].data(),
                   v_cache_[size_t(l)].data(), sparse ? &mask : nullptr,
                   std::span<float>(attn_.data(), size_t(n * qd)));
    linear(attn_.data(), n, qd, L.wo.data(), hidden, x_.data(), hidden, residual_beta);
    if (reduce) options_.all_reduce(residual);

    rms_norm(x_.data(), n, hidden, L.ffn_norm.data(), c.rms_eps, xn_.data());
    swiglu(xn_.data(), n, hidden, L.w_gate.data(), L.w_up.data(), inter, gate_.data(), up_.data());
    linear(gate_.data(), n, inter, L.w_down.data(), hidden, x_.data(), hidden, residual_beta);
    if (reduce) options_.all_reduce(residual);
  }
  position_ += n;
  last_density_ = sparse ? density_sum / c.layers : 1.0;

  const float* head = weights_.output_matrix().data();
  for (int64_t r0 = logits_from; r0 < n; r0 += kLogitRows) {
    const int64_t rows = std::min(kLogitRows, n - r0);
    rms_norm(x_.data() + r0 * hidden, rows, hidden, weights_.final_norm.data(), c.rms_eps, xn_.data() + r0 * hidden);
    linear(xn_.data() + r0 * hidden, rows, hidden, head, c.vocab, logits_.data(), c.vocab, 0.0f);
    for (int64_t r = 0; r < rows; ++r)
      visit(index0 + r0 + r, std::span<const float>(logits_.data() + r * c.vocab, size_t(c.vocab)));
  }
}

}  // namespace seer
