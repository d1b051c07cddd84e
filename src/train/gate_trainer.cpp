#include "train/gate_trainer.h"

#include <cmath>
#include <numbers>
#include <set>
#include <type_traits>

#include "core/error.h"
#include "formats/safetensors.h"

namespace seer {
namespace {

std::span<const uint8_t> bytes_of(const std::vector<float>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float)};
}

}  // namespace

void TrainOptions::validate() const {
  SEER_CHECK(steps > 0, "training steps must be positive, got ", steps);
  SEER_CHECK(lr > 0, "learning rate must be positive, got ", lr);
  SEER_CHECK(warmup >= 0 && warmup <= steps, "warm-up steps must be in [0, steps], got ", warmup);
  SEER_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "AdamW betas must be in [0, 1)");
  SEER_CHECK(weight_decay >= 0, "weight decay must be >= 0");
  SEER_CHECK(skip_fraction >= 0 && skip_fraction < 1, "skip fraction must be in [0, 1)");
  SEER_CHECK(target_power > 0 && target_power <= 16, "target power must be in (0, 16], got ", target_power);
  tail.validate();
  SEER_CHECK(bias_lr_scale > 0, "the block bias's learning-rate scale must be positive, got ", bias_lr_scale);
}

GateTrainer::GateTrainer(std::vector<GateWeights<float>> init, const TrainOptions& options)
    : options_(options), weights_(std::move(init)) {
  options_.validate();
  SEER_CHECK(!weights_.empty(), "gate training needs at least one layer");
  for (const GateWeights<float>& w : weights_) {
    w.validate();
    grads_.push_back(GateWeights<float>::zeros(w.config));
    exp_avg_.push_back(GateWeights<float>::zeros(w.config));
    exp_avg_sq_.push_back(GateWeights<float>::zeros(w.config));
  }
  layer_done_.assign(weights_.size(), false);
  layer_kl_.assign(weights_.size(), 0.0);
}

double GateTrainer::accumulate_layer(int layer, std::span<const bf16> q_pre, std::span<const bf16> k_pre,
                                     std::span<const float> gt, const Sequences& seqs, const Rope& rope) {
  SEER_CHECK(layer >= 0 && layer < int(weights_.size()), "layer ", layer, " out of range");
  const GateWeights<float>& w = weights()[size_t(layer)];
  const BlockLayout layout(seqs, w.config.block, w.config.heads.q_heads);
  std::vector<float> logits(size_t(layout.map_elements())), dlogits(logits.size());
  gate_forward<float, bf16>(q_pre, k_pre, seqs, w, rope, logits);
  std::vector<float> target;
  if (options_.target_power != 1.0) {
    target.assign(gt.begin(), gt.end());
    power_normalize_rows<float>(target, layout, options_.target_power);
    gt = target;
  }
  const double kl = gate_kl_loss<float>(logits, gt, layout, options_.skip_fraction, dlogits, options_.tail);
  for (float& g : dlogits) g *= float(options_.loss_scale);
  GateWeights<float> grad = GateWeights<float>::zeros(w.config);
  gate_backward<float, bf16>(q_pre, k_pre, seqs, w, rope, dlogits, grad);
  add_layer_gradient(layer, kl, grad.wk, grad.wq, grad.bias);
  return kl;
}

void GateTrainer::add_layer_gradient(int layer, double kl, std::span<const float> dwk, std::span<const float> dwq,
                                     std::span<const float> dbias) {
  check_layer_open(layer);
  check_host_state("weights");
  GateWeights<float>& g = grads_[size_t(layer)];
  check_size(dwk, "gate W_k gradient", int64_t(g.wk.size()));
  check_size(dwq, "gate W_q gradient", int64_t(g.wq.size()));
  check_size(dbias, "gate block bias gradient", int64_t(g.bias.size()));
  for (size_t e = 0; e < dwk.size(); ++e) g.wk[e] += dwk[e];
  for (size_t e = 0; e < dwq.size(); ++e) g.wq[e] += dwq[e];
  for (size_t e = 0; e < dbias.size(); ++e) g.bias[e] += dbias[e];
  record_layer_kl(layer, kl);
}

double GateTrainer::learning_rate(int64_t step) const {
  if (step < options_.warmup) return options_.lr * double(step + 1) / double(options_.warmup);
  const double span = double(std::max<int64_t>(1, options_.steps - options_.warmup));
  const double progress = std::min(1.0, double(step - options_.warmup) / span);
  return options_.lr * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

AdamWStep GateTrainer::adamw_step() const {
  const double n = double(step_ + 1);
  return {.lr = learning_rate(step_),
          .beta1 = options_.beta1,
          .beta2 = options_.beta2,
          .eps = options_.eps,
          .weight_decay = options_.weight_decay,
          .correction1 = 1.0 - std::pow(options_.beta1, n),
          .correction2 = 1.0 - std::pow(options_.beta2, n)};
}

double GateTrainer::finish_step() {
  check_every_layer_given();
  check_host_state("weights");
  const AdamWStep s = adamw_step();
  // Every tensor of every layer in one parallel region. A region per tensor (90 for the built-in
  // model, most of them empty) forks and joins that often per step: little for one process, but
  // when two training processes share the cores, each join waits for threads the other process has
  // descheduled (bench/RESULTS.md, "One parallel region per AdamW step").
  struct Tensor {
    std::vector<float>*w, *g, *m, *v;
    double lr;
  };
  std::vector<Tensor> tensors;
  for (size_t l = 0; l < weights_.size(); ++l)
    for (const Tensor& tensor : {Tensor{&weights_[l].wk, &grads_[l].wk, &exp_avg_[l].wk, &exp_avg_sq_[l].wk, s.lr},
                                 Tensor{&weights_[l].wq, &grads_[l].wq, &exp_avg_[l].wq, &exp_avg_sq_[l].wq, s.lr},
                                 Tensor{&weights_[l].bias, &grads_[l].bias, &exp_avg_[l].bias, &exp_avg_sq_[l].bias,
                                        s.lr * options_.bias_lr_scale}})
      if (!tensor.w->empty()) tensors.push_back(tensor);
#pragma omp parallel
  for (const Tensor& tensor : tensors) {
    std::vector<float>& w = *tensor.w;
    std::vector<float>& g = *tensor.g;
    std::vector<float>& m = *tensor.m;
    std::vector<float>& v = *tensor.v;
    // Element-wise: the same result on any thread count. The tensors are disjoint, so no thread
    // waits for the others between them.
#pragma omp for schedule(static) nowait
    for (size_t e = 0; e < w.size(); ++e) adamw_update(w[e], g[e], m[e], v[e], s, tensor.lr);
  }
  return end_step();
}

void GateTrainer::add_layer_kl(int layer, double kl) {
  check_layer_open(layer);
  record_layer_kl(layer, kl);
}

void GateTrainer::check_layer_open(int layer) const {
  SEER_CHECK(layer >= 0 && layer < int(weights_.size()), "layer ", layer, " out of range");
  SEER_CHECK(!layer_done_[size_t(layer)], "layer ", layer, " given twice in one step");
}

void GateTrainer::record_layer_kl(int layer, double kl) {
  layer_done_[size_t(layer)] = true;
  layer_kl_[size_t(layer)] = kl;
  step_loss_ += options_.loss_scale * kl;
}

double GateTrainer::finish_step_updated_elsewhere() {
  check_every_layer_given();
  host_state_current_ = false;
  return end_step();
}

void GateTrainer::check_every_layer_given() const {
  for (size_t l = 0; l < layer_done_.size(); ++l)
    SEER_CHECK(layer_done_[l], "training step ", step_, " finished without layer ", l);
}

double GateTrainer::end_step() {
  ++state_version_;
  layer_done_.assign(weights_.size(), false);
  last_layer_kl_ = layer_kl_;
  const double loss = step_loss_;
  step_loss_ = 0;
  ++step_;
  return loss;
}

void GateTrainer::check_host_state(const char* what) const {
  SEER_CHECK(host_state_current_, "gate trainer at step ", step_, ": its ", what,
             " live elsewhere (the device) until set_state brings them back");
}

const std::vector<GateWeights<float>>& GateTrainer::weights() const {
  check_host_state("weights");
  return weights_;
}

const std::vector<GateWeights<float>>& GateTrainer::exp_avg() const {
  check_host_state("moments");
  return exp_avg_;
}

const std::vector<GateWeights<float>>& GateTrainer::exp_avg_sq() const {
  check_host_state("moments");
  return exp_avg_sq_;
}

void GateTrainer::set_state(std::vector<GateWeights<float>> weights, std::vector<GateWeights<float>> exp_avg,
                            std::vector<GateWeights<float>> exp_avg_sq) {
  const auto check = [&](const std::vector<GateWeights<float>>& from, const char* what) {
    SEER_CHECK(from.size() == weights_.size(), "gate trainer state: ", from.size(), " layers of ", what, ", expected ",
               weights_.size());
    for (size_t l = 0; l < from.size(); ++l)
      SEER_CHECK(from[l].wk.size() == weights_[l].wk.size() &&
                     from[l].wq.size() == weights_[l].wq.size() && from[l].bias.size() == weights_[l].bias.size(),
                 "gate trainer state: layer ", l, "'s ", what, " differ in shape");
  };
  check(weights, "weights");
  check(exp_avg, "first moments");
  check(exp_avg_sq, "second moments");
  weights_ = std::move(weights);
  exp_avg_ = std::move(exp_avg);
  exp_avg_sq_ = std::move(exp_avg_sq);
  host_state_current_ = true;
  ++state_version_;
}

namespace {

// One layer's tensors as the checkpoint names and shapes them, each with its vector in `w`
// (Values: std::vector<float> or its const).
template <typename Values>
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  Values* values;
};

template <typename Weights, typename Values = std::conditional_t<std::is_const_v<Weights>, const std::vector<float>,
                                                                 std::vector<float>>>
std::vector<NamedTensor<Values>> layer_tensors(int layer, Weights& w) {
  const GateConfig& c = w.config;
  const std::string prefix = "model.layers." + std::to_string(layer) + ".self_attn.attn_gate.";
  std::vector<NamedTensor<Values>> t{
      {prefix + "mask_linear_k.weight", {c.k_proj_heads(), 3 * c.heads.head_dim, c.gate_dim}, &w.wk}};
  if (c.has_q_proj())
    t.push_back({prefix + "mask_linear_q.weight", {c.heads.q_heads, c.q_in_dim(), c.gate_dim}, &w.wq});
  if (c.has_block_bias) t.push_back({prefix + "block_bias", {c.heads.q_heads, kBiasColumns}, &w.bias});
  return t;
}

}  // namespace

void GateTrainer::save(const std::string& path, const std::map<std::string, std::string>& metadata,
                       bool with_optimizer) const {
  check_host_state("weights");
  std::vector<SafetensorsWriteTensor> tensors;
  for (size_t l = 0; l < weights_.size(); ++l) {
    const auto w = layer_tensors(int(l), weights_[l]), m = layer_tensors(int(l), exp_avg_[l]),
               v = layer_tensors(int(l), exp_avg_sq_[l]);
    for (size_t e = 0; e < w.size(); ++e) {
      tensors.push_back({w[e].name, SafetensorsDtype::f32, w[e].shape, bytes_of(*w[e].values)});
      if (with_optimizer)
        for (const auto& [prefix, moment] : {std::pair{"optimizer.exp_avg.", m[e].values},
                                            std::pair{"optimizer.exp_avg_sq.", v[e].values}})
          tensors.push_back({prefix + w[e].name, SafetensorsDtype::f32, w[e].shape, bytes_of(*moment)});
    }
  }
  std::map<std::string, std::string> meta = metadata;
  const GateConfig& c = weights_.front().config;
  meta["seerattn_gate_type"] = gate_type_name(c);
  meta["seerattn_gate_block_size"] = std::to_string(c.block);
  meta["seerattn_gate_hidden_size"] = std::to_string(c.gate_dim);
  meta["head_dim"] = std::to_string(c.heads.head_dim);
  meta["num_attention_heads"] = std::to_string(c.heads.q_heads);
  meta["num_key_value_heads"] = std::to_string(c.heads.kv_heads);
  meta["training_step"] = std::to_string(step_);
  write_safetensors(path, tensors, meta);
}

int64_t GateTrainer::checkpoint_step(const SafetensorsFile& file, const std::string& path) {
  const auto it = file.metadata().find("training_step");
  SEER_CHECK(it != file.metadata().end(), path, ": checkpoint lacks the training_step metadata");
  return std::stoll(it->second);
}

void GateTrainer::resume(const std::string& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  std::set<std::string> read_names;
  const auto read = [&](const std::string& name, std::vector<float>& into) {
    read_names.insert(name);
    const SafetensorsTensor* t = file.find(name);
    SEER_CHECK(t != nullptr, path, ": checkpoint lacks '", name, "' (was it saved with optimizer state?)");
    std::vector<float> values = file.to_float(name);
    SEER_CHECK(values.size() == into.size(), path, ": '", name, "' has ", values.size(), " values, expected ",
               into.size());
    into = std::move(values);
  };
  for (size_t l = 0; l < weights_.size(); ++l) {
    const auto w = layer_tensors(int(l), weights_[l]), m = layer_tensors(int(l), exp_avg_[l]),
               v = layer_tensors(int(l), exp_avg_sq_[l]);
    for (size_t e = 0; e < w.size(); ++e) {
      read(w[e].name, *w[e].values);
      read("optimizer.exp_avg." + w[e].name, *m[e].values);
      read("optimizer.exp_avg_sq." + w[e].name, *v[e].values);
    }
  }
  // A tensor this run's gates lack (a block bias, another layer) would otherwise be dropped silently.
  for (const SafetensorsTensor& t : file.tensors())
    SEER_CHECK(read_names.count(t.name), path, ": checkpoint has '", t.name,
               "', which this run's gates lack (another --gate-dim, --gate-type or --block-bias?)");
  step_ = checkpoint_step(file, path);
  host_state_current_ = true;
  ++state_version_;
  SEER_CHECK(step_ >= 0 && step_ <= options_.steps, path, ": checkpoint step ", step_, " outside [0, ",
             options_.steps, "]");
}

}  // namespace seer
