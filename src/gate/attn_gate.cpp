#include "gate/attn_gate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "core/bf16.h"
#include "core/error.h"

namespace seer {
namespace {

// Block-pooled inputs of one sequence: q [nb][H_q][q_in] (mean; or max, min, mean), k [nb][H_kv][3d]
// (max, min, mean).
template <typename Real>
struct PooledBlocks {
  int64_t nb = 0;
  std::vector<Real> q, k;
};

// The `count` token vectors of one head starting at src (stride apart) pooled into dst: their mean
// (pools = 1), or concat(max, min, mean) (pools = 3).
template <typename Real, typename T>
void pool_tokens(const T* src, int64_t stride, int64_t count, int d, int pools, Real* dst) {
  Real* mean = dst + (pools - 1) * d;
  for (int c = 0; c < d; ++c) {
    mean[c] = Real(0);
    if (pools == 3) {
      dst[c] = -std::numeric_limits<Real>::infinity();
      dst[d + c] = std::numeric_limits<Real>::infinity();
    }
  }
  for (int64_t t = 0; t < count; ++t)
    for (int c = 0; c < d; ++c) {
      const Real x = Real(to_double(src[t * stride + c]));
      mean[c] += x;
      if (pools == 3) {
        dst[c] = std::max(dst[c], x);
        dst[d + c] = std::min(dst[d + c], x);
      }
    }
  for (int c = 0; c < d; ++c) mean[c] /= Real(count);
}

template <typename Real, typename T>
PooledBlocks<Real> pool_sequence(std::span<const T> q_pre, std::span<const T> k_pre, const Sequences& seqs,
                                 int64_t s, const GateConfig& cfg) {
  const int B = cfg.block, d = cfg.heads.head_dim, hq = cfg.heads.q_heads, hkv = cfg.heads.kv_heads;
  const int q_in = cfg.q_in_dim();
  const int64_t len = seqs.length(s), t0 = seqs.start(s);
  PooledBlocks<Real> p;
  p.nb = ceil_div(len, B);
  p.q.assign(size_t(p.nb * hq * q_in), Real(0));
  p.k.assign(size_t(p.nb * hkv * 3 * d), Real(0));
  for (int64_t i = 0; i < p.nb; ++i) {
    const int64_t first = t0 + i * B, count = std::min<int64_t>(B, len - i * B);
    for (int h = 0; h < hq; ++h)
      pool_tokens(q_pre.data() + (first * hq + h) * d, int64_t(hq) * d, count, d, cfg.q_pools,
                  p.q.data() + (i * hq + h) * q_in);
    for (int h = 0; h < hkv; ++h)
      pool_tokens(k_pre.data() + (first * hkv + h) * d, int64_t(hkv) * d, count, d, 3,
                  p.k.data() + (i * hkv + h) * 3 * d);
  }
  return p;
}

// Gate vectors of one query head before and after RoPE: [nb][d_g] each.
template <typename Real>
struct HeadVectors {
  std::vector<Real> qg, kg, qr, kr;
};

template <typename Real>
HeadVectors<Real> project_head(const PooledBlocks<Real>& p, const GateWeights<Real>& w, const Rope& rope, int h) {
  const GateConfig& cfg = w.config;
  const int d = cfg.heads.head_dim, dg = cfg.gate_dim, hq = cfg.heads.q_heads, hkv = cfg.heads.kv_heads;
  const int q_in = cfg.q_in_dim();
  const int kvh = h / cfg.heads.group();
  const size_t n = size_t(p.nb) * dg;
  HeadVectors<Real> v{std::vector<Real>(n, Real(0)), std::vector<Real>(n, Real(0)), {}, {}};
  const Real* wk = w.wk.data() + int64_t(cfg.k_proj_head(h)) * 3 * d * dg;
  for (int64_t i = 0; i < p.nb; ++i) {
    const Real* qp = p.q.data() + (i * hq + h) * q_in;
    Real* qg = v.qg.data() + i * dg;
    if (cfg.has_q_proj()) {
      const Real* wq = w.wq.data() + int64_t(h) * q_in * dg;
      for (int c = 0; c < q_in; ++c)
        for (int x = 0; x < dg; ++x) qg[x] += qp[c] * wq[c * dg + x];
    } else {
      std::copy(qp, qp + d, qg);
    }
    const Real* kp = p.k.data() + (i * hkv + kvh) * 3 * d;
    Real* kg = v.kg.data() + i * dg;
    for (int c = 0; c < 3 * d; ++c)
      for (int x = 0; x < dg; ++x) kg[x] += kp[c] * wk[c * dg + x];
  }
  v.qr = v.qg;
  v.kr = v.kg;
  for (int64_t i = 0; i < p.nb; ++i) {
    const double pos = double(i * cfg.block);
    rope.apply(std::span(v.qr).subspan(size_t(i * dg), size_t(dg)), pos);
    rope.apply(std::span(v.kr).subspan(size_t(i * dg), size_t(dg)), pos);
  }
  return v;
}

template <typename Real, typename T>
void check_gate_inputs(std::span<const T> q_pre, std::span<const T> k_pre, const Sequences& seqs,
                       const GateWeights<Real>& w, const Rope& rope) {
  w.validate();
  const HeadDims& hd = w.config.heads;
  check_tokens_heads_dim(q_pre, "gate q", seqs.tokens(), hd.q_heads, hd.head_dim);
  check_tokens_heads_dim(k_pre, "gate k", seqs.tokens(), hd.kv_heads, hd.head_dim);
  SEER_CHECK(rope.dim() == w.config.gate_dim, "gate RoPE dimension ", rope.dim(), " != gate dim ", w.config.gate_dim);
}

}  // namespace

void GateConfig::validate() const {
  heads.validate();
  SEER_CHECK(gate_dim > 0 && gate_dim % 2 == 0, "gate dim must be positive and even, got ", gate_dim);
  SEER_CHECK(block > 0, "gate block size must be positive, got ", block);
  SEER_CHECK(q_pools == 1 || q_pools == 3, "the gate pools q by mean (1) or max, min and mean (3), not ", q_pools);
}

namespace {
constexpr int kQPoolings[] = {1, 3};  // GateConfig::q_pools
const char* q_pools_type_name(int q_pools) { return q_pools == 3 ? "Qmaxminavg_Kmaxminavg" : "Qavg_Kmaxminavg"; }
}  // namespace

const char* gate_type_name(const GateConfig& config) { return q_pools_type_name(config.q_pools); }

std::vector<std::string> gate_type_names() {
  std::vector<std::string> names;
  for (const int pools : kQPoolings) names.emplace_back(q_pools_type_name(pools));
  return names;
}

int parse_gate_type(const std::string& name) {
  for (const int pools : kQPoolings)
    if (name == q_pools_type_name(pools)) return pools;
  fail("gate type '", name, "' is not supported (Qavg_Kmaxminavg, Qmaxminavg_Kmaxminavg)");
}

template <typename Real>
GateWeights<Real> GateWeights<Real>::zeros(const GateConfig& config) {
  config.validate();
  return GateWeights{config, std::vector<Real>(size_t(config.wk_size()), Real(0)),
                     std::vector<Real>(size_t(config.wq_size()), Real(0)),
                     std::vector<Real>(size_t(config.bias_size()), Real(0))};
}

template <typename Real>
GateWeights<Real> GateWeights<Real>::random(const GateConfig& config, uint64_t seed, double std) {
  GateWeights w = zeros(config);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, std);
  for (Real& x : w.wk) x = Real(normal(rng));
  for (Real& x : w.wq) x = Real(normal(rng));
  return w;
}

template <typename Real>
void GateWeights<Real>::validate() const {
  config.validate();
  check_size(std::span(wk), "gate W_k", config.wk_size());
  check_size(std::span(wq), "gate W_q", config.wq_size());
  check_size(std::span(bias), "gate block bias", config.bias_size());
}

template <typename Real, typename T>
void gate_forward(std::span<const T> q_pre, std::span<const T> k_pre, const Sequences& seqs,
                  const GateWeights<Real>& weights, const Rope& rope, std::span<Real> logits) {
  check_gate_inputs(q_pre, k_pre, seqs, weights, rope);
  const GateConfig& cfg = weights.config;
  const BlockLayout layout(seqs, cfg.block, cfg.heads.q_heads);
  check_size(logits, "gate logits", layout.map_elements());
  const int dg = cfg.gate_dim;
  const Real scale = Real(1.0 / std::sqrt(double(dg)));
  for (int64_t s = 0; s < seqs.count(); ++s) {
    const PooledBlocks<Real> pooled = pool_sequence<Real>(q_pre, k_pre, seqs, s, cfg);
    const int64_t nb = pooled.nb;
#pragma omp parallel for schedule(dynamic)
    for (int h = 0; h < cfg.heads.q_heads; ++h) {
      const HeadVectors<Real> v = project_head(pooled, weights, rope, h);
      Real* map = logits.data() + layout.map_offset[size_t(s)] + int64_t(h) * nb * nb;
      const Real* bias = cfg.has_block_bias ? weights.bias.data() + int64_t(h) * kBiasColumns : nullptr;
      for (int64_t i = 0; i < nb; ++i)
        for (int64_t j = 0; j < nb; ++j) {
          if (j > i) {
            map[i * nb + j] = -std::numeric_limits<Real>::infinity();
            continue;
          }
          Real dot = 0;
          for (int x = 0; x < dg; ++x) dot += v.qr[size_t(i * dg + x)] * v.kr[size_t(j * dg + x)];
          map[i * nb + j] = dot * scale + (bias ? block_bias(bias, i, j) : Real(0));
        }
    }
  }
}

void TailKl::validate() const {
  SEER_CHECK(weight >= 0 && std::isfinite(weight), "tail KL weight must be >= 0, got ", weight);
  SEER_CHECK(local_blocks >= 1, "the tail must leave out at least the diagonal block, got ", local_blocks,
             " local blocks");
}

template <typename Real>
Real gate_kl_loss(std::span<const Real> logits, std::span<const Real> gt, const BlockLayout& layout,
                  double skip_fraction, std::span<Real> dlogits, const TailKl& tail) {
  SEER_CHECK(skip_fraction >= 0.0 && skip_fraction < 1.0, "skip fraction must be in [0, 1), got ", skip_fraction);
  tail.validate();
  check_size(logits, "gate logits", layout.map_elements());
  check_size(gt, "ground truth", layout.map_elements());
  if (!dlogits.empty()) check_size(dlogits, "gate logit gradient", layout.map_elements());
  std::fill(dlogits.begin(), dlogits.end(), Real(0));
  double elements = 0;
  for (int64_t nb : layout.blocks) elements += double(layout.heads) * double(nb - int64_t(nb * skip_fraction)) * nb;
  if (elements == 0) return Real(0);
  // KL(p ‖ softmax(z)) over key blocks [first, last] of one row, p renormalized over them when
  // `normalize`; adds weight × its gradient (softmax(z) · sum(p) - p, or softmax(z) - p / sum(p)) to
  // dz. Returns weight × the KL.
  const auto row_kl = [&](int64_t row, int64_t first, int64_t last, bool normalize, double weight) {
    double m = -std::numeric_limits<double>::infinity(), gt_sum = 0;
    for (int64_t j = first; j <= last; ++j) {
      m = std::max(m, double(logits[size_t(row + j)]));
      gt_sum += double(gt[size_t(row + j)]);
    }
    if (normalize && !(gt_sum > 0)) return 0.0;
    double sum = 0;
    for (int64_t j = first; j <= last; ++j) sum += std::exp(double(logits[size_t(row + j)]) - m);
    const double log_sum = m + std::log(sum), norm = normalize ? gt_sum : 1.0;
    double kl = 0;
    for (int64_t j = first; j <= last; ++j) {
      const double target = double(gt[size_t(row + j)]) / norm;
      const double log_q = double(logits[size_t(row + j)]) - log_sum;
      if (target > 0) kl += target * (std::log(target) - log_q);
      if (!dlogits.empty())
        dlogits[size_t(row + j)] += Real(weight * (std::exp(log_q) * (gt_sum / norm) - target) / elements);
    }
    return weight * kl;
  };
  double total = 0;
  for (int64_t s = 0; s < layout.sequences(); ++s) {
    const int64_t nb = layout.blocks[size_t(s)], skip = int64_t(nb * skip_fraction);
    for (int h = 0; h < layout.heads; ++h)
      for (int64_t i = skip; i < nb; ++i) {
        const int64_t row = layout.map_offset[size_t(s)] + (int64_t(h) * nb + i) * nb;
        total += row_kl(row, 0, i, false, 1.0);
        if (tail.weight > 0 && i - tail.local_blocks >= 2)
          total += row_kl(row, 1, i - tail.local_blocks, true, tail.weight);
      }
  }
  return Real(total / elements);
}

template <typename Real>
void power_normalize_rows(std::span<Real> map, const BlockLayout& layout, double power) {
  SEER_CHECK(power > 0 && std::isfinite(power), "target power must be positive, got ", power);
  check_size(map, "block map", layout.map_elements());
  for (int64_t s = 0; s < layout.sequences(); ++s) {
    const int64_t nb = layout.blocks[size_t(s)];
    for (int h = 0; h < layout.heads; ++h)
      for (int64_t i = 0; i < nb; ++i) {
        Real* row = map.data() + layout.map_offset[size_t(s)] + (int64_t(h) * nb + i) * nb;
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += std::pow(double(row[j]), power);
        if (sum > 0)
          for (int64_t j = 0; j <= i; ++j) row[j] = Real(std::pow(double(row[j]), power) / sum);
      }
  }
}

template <typename Real, typename T>
void gate_backward(std::span<const T> q_pre, std::span<const T> k_pre, const Sequences& seqs,
                   const GateWeights<Real>& weights, const Rope& rope, std::span<const Real> dlogits,
                   GateWeights<Real>& grad) {
  check_gate_inputs(q_pre, k_pre, seqs, weights, rope);
  const GateConfig& cfg = weights.config;
  SEER_CHECK(grad.wk.size() == weights.wk.size() && grad.wq.size() == weights.wq.size() &&
                 grad.bias.size() == weights.bias.size(),
             "gate gradient buffers do not match the weights' sizes");
  const BlockLayout layout(seqs, cfg.block, cfg.heads.q_heads);
  check_size(dlogits, "gate logit gradient", layout.map_elements());
  const int d = cfg.heads.head_dim, dg = cfg.gate_dim, hq = cfg.heads.q_heads, hkv = cfg.heads.kv_heads;
  const int q_in = cfg.q_in_dim();
  const Real scale = Real(1.0 / std::sqrt(double(dg)));
  for (int64_t s = 0; s < seqs.count(); ++s) {
    const PooledBlocks<Real> pooled = pool_sequence<Real>(q_pre, k_pre, seqs, s, cfg);
    const int64_t nb = pooled.nb;
    // One thread per W_k head, so that the query heads sharing it (d_g != d) add into it in turn.
    const int heads_per_wk = hq / cfg.k_proj_heads();
#pragma omp parallel for schedule(dynamic)
    for (int kh = 0; kh < cfg.k_proj_heads(); ++kh) {
      for (int h = kh * heads_per_wk; h < (kh + 1) * heads_per_wk; ++h) {
        const HeadVectors<Real> v = project_head(pooled, weights, rope, h);
        const Real* ds = dlogits.data() + layout.map_offset[size_t(s)] + int64_t(h) * nb * nb;
        // d(logit)/d(q_r[i]) = k_r[j] / √d_g and symmetrically for k_r[j].
        std::vector<Real> dq(size_t(nb * dg), Real(0)), dk(size_t(nb * dg), Real(0));
        Real* dbias = cfg.has_block_bias ? grad.bias.data() + int64_t(h) * kBiasColumns : nullptr;
        for (int64_t i = 0; i < nb; ++i)
          for (int64_t j = 0; j <= i; ++j) {
            if (dbias) {  // d(logit)/d(bias entry) = 1 for the entries block_bias adds
              dbias[distance_bucket(i - j)] += ds[i * nb + j];
              if (j == 0) dbias[kBiasSinkColumn] += ds[i * nb + j];
            }
            const Real g = ds[i * nb + j] * scale;
            if (g == Real(0)) continue;
            for (int x = 0; x < dg; ++x) {
              dq[size_t(i * dg + x)] += g * v.kr[size_t(j * dg + x)];
              dk[size_t(j * dg + x)] += g * v.qr[size_t(i * dg + x)];
            }
          }
        for (int64_t i = 0; i < nb; ++i) {  // back through RoPE: its transpose
          const double pos = double(i * cfg.block);
          rope.apply(std::span(dq).subspan(size_t(i * dg), size_t(dg)), pos, true);
          rope.apply(std::span(dk).subspan(size_t(i * dg), size_t(dg)), pos, true);
        }
        const int kvh = h / cfg.heads.group();
        Real* gwk = grad.wk.data() + int64_t(kh) * 3 * d * dg;
        for (int64_t j = 0; j < nb; ++j) {
          const Real* kp = pooled.k.data() + (j * hkv + kvh) * 3 * d;
          for (int c = 0; c < 3 * d; ++c)
            for (int x = 0; x < dg; ++x) gwk[c * dg + x] += kp[c] * dk[size_t(j * dg + x)];
        }
        if (cfg.has_q_proj()) {
          Real* gwq = grad.wq.data() + int64_t(h) * q_in * dg;
          for (int64_t i = 0; i < nb; ++i) {
            const Real* qp = pooled.q.data() + (i * hq + h) * q_in;
            for (int c = 0; c < q_in; ++c)
              for (int x = 0; x < dg; ++x) gwq[c * dg + x] += qp[c] * dq[size_t(i * dg + x)];
          }
        }
      }
    }
  }
}

template struct GateWeights<float>;
template struct GateWeights<double>;
#define SEER_INSTANTIATE(Real, T)                                                                          \
  template void gate_forward<Real, T>(std::span<const T>, std::span<const T>, const Sequences&,           \
                                      const GateWeights<Real>&, const Rope&, std::span<Real>);             \
  template void gate_backward<Real, T>(std::span<const T>, std::span<const T>, const Sequences&,          \
                                       const GateWeights<Real>&, const Rope&, std::span<const Real>,      \
                                       GateWeights<Real>&);
SEER_INSTANTIATE(float, float)
SEER_INSTANTIATE(float, bf16)
SEER_INSTANTIATE(double, double)
#undef SEER_INSTANTIATE
template void power_normalize_rows<float>(std::span<float>, const BlockLayout&, double);
template void power_normalize_rows<double>(std::span<double>, const BlockLayout&, double);
template float gate_kl_loss<float>(std::span<const float>, std::span<const float>, const BlockLayout&, double,
                                   std::span<float>, const TailKl&);
template double gate_kl_loss<double>(std::span<const double>, std::span<const double>, const BlockLayout&, double,
                                     std::span<double>, const TailKl&);

}  // namespace seer
