#include "cuda/llama_cuda.h"

#include <cmath>

#include "cuda/model_kernels.h"
#include "cuda/random_fill.h"

namespace seer::cuda {
namespace {

void check_supported(const LlamaConfig& c) {
  c.validate();
  SEER_CHECK(!c.qkv_bias, "the CUDA backend does not support q/k/v biases (", c.architecture, ") yet");
  SEER_CHECK(c.head_dim == 64 || c.head_dim == 128, "the CUDA backend supports head dims 64 and 128, the model has ",
             c.head_dim);
  SEER_CHECK(c.hidden % 4 == 0 && c.hidden <= 16384, "the CUDA backend supports hidden sizes that are multiples of 4 "
             "up to 16384, the model has ", c.hidden);
}

DeviceBuffer<__nv_bfloat16> upload_bf16(std::initializer_list<const std::vector<float>*> parts) {
  size_t n = 0;
  for (const auto* p : parts) n += p->size();
  std::vector<__nv_bfloat16> host;
  host.reserve(n);
  for (const auto* p : parts)
    for (float x : *p) host.push_back(__float2bfloat16_rn(x));
  return DeviceBuffer<__nv_bfloat16>::upload(host);
}

DeviceBuffer<__nv_bfloat16> random_bf16(size_t n, uint64_t seed, float stddev) {
  DeviceBuffer<__nv_bfloat16> buffer(n);
  fill_random(buffer.data(), int64_t(n), DType::bf16, seed, stddev, nullptr);
  return buffer;
}

// RoPE cos/sin for positions [0, count), [count][d/2], computed in double on the host (float angles
// lose accuracy at 100k+), the attention scaling folded in.
DeviceBuffer<float2> rope_table(const LlamaConfig& c, int64_t count) {
  const Rope rope(c.rope, c.head_dim);
  const size_t half = size_t(c.head_dim) / 2;
  std::vector<float2> table(size_t(count) * half);
  for (int64_t p = 0; p < count; ++p)
    for (size_t x = 0; x < half; ++x) {
      const double angle = double(p) * rope.inv_freq()[x];
      table[size_t(p) * half + x] = make_float2(float(std::cos(angle) * rope.attention_scaling()),
                                                float(std::sin(angle) * rope.attention_scaling()));
    }
  return DeviceBuffer<float2>::upload(table);
}

// The cache was made for this model's shape (layers, KV heads, head dim).
void check_cache(const DeviceKvCache& cache, const LlamaConfig& c) {
  const size_t per_layer = size_t(cache.capacity) * c.kv_heads * c.head_dim;
  SEER_CHECK(int(cache.k.size()) == c.layers && int(cache.v.size()) == c.layers &&
                 (cache.k.empty() || (cache.k[0].size() == per_layer && cache.v[0].size() == per_layer)),
             "the KV cache was made for another model shape (", cache.k.size(), " layers; this model: ", c.layers,
             " layers, ", c.kv_heads, " KV heads of dimension ", c.head_dim, ")");
}

// How W_o and W_down write the residual stream. Under tensor parallelism (comm over several ranks)
// both products are partial sums over the ranks' heads and features (model/tensor_shard.h): rank 0
// adds its own to the residual stream, the others write theirs in its place, and an all-reduce
// leaves the stream plus the whole update everywhere.
GemmOut residual_update(const Communicator* comm) {
  return comm != nullptr && comm->rank() != 0 ? GemmOut::fp32 : GemmOut::fp32_accumulate;
}

// All-reduces issued on two streams run in their issue order: each waits for the one before it.
// (NCCL runs one communicator's operations in issue order whatever their streams; this makes that
// order the streams' own too, at no cost, as each waits for its predecessor anyway.)
struct CollectiveOrder {
  cudaEvent_t done;
  cudaStream_t last = nullptr;
};

// The residual stream's update summed over the ranks, in place (nothing on one GPU).
void reduce_update(const Communicator* comm, float* residual, int64_t count, cudaStream_t stream,
                   CollectiveOrder* order) {
  if (!comm || comm->ranks() == 1) return;
  if (order && order->last && order->last != stream) SEER_CUDA_CHECK(cudaStreamWaitEvent(stream, order->done));
  comm->all_reduce_sum(residual, count, stream);
  if (order) {
    SEER_CUDA_CHECK(cudaEventRecord(order->done, stream));
    order->last = stream;
  }
}

// residual += attn · W_oᵀ (the first half of attention_output_and_mlp).
void attention_output(Gemm& gemm, const DeviceLlama::Layer& w, const LlamaConfig& c, const __nv_bfloat16* attn,
                      float* residual, int64_t rows, const Communicator* comm, cudaStream_t stream,
                      CollectiveOrder* order = nullptr) {
  gemm(w.wo.data(), attn, residual, rows, c.hidden, c.q_heads * c.head_dim, residual_update(comm));
  reduce_update(comm, residual, rows * c.hidden, stream, order);
}

// residual += SwiGLU MLP of RMSNorm(residual) (the second half).
void mlp_block(Gemm& gemm, const DeviceLlama::Layer& w, const LlamaConfig& c, float* residual, int64_t rows,
               __nv_bfloat16* normed, __nv_bfloat16* gate_up, __nv_bfloat16* mlp, const Communicator* comm,
               cudaStream_t stream, CollectiveOrder* order = nullptr) {
  rms_norm(residual, w.ffn_norm.data(), rows, c.hidden, float(c.rms_eps), normed, stream);
  gemm(w.w_gate_up.data(), normed, gate_up, rows, 2 * c.intermediate, c.hidden, GemmOut::bf16);
  swiglu(gate_up, rows, c.intermediate, mlp, stream);
  gemm(w.w_down.data(), mlp, residual, rows, c.hidden, c.intermediate, residual_update(comm));
  reduce_update(comm, residual, rows * c.hidden, stream, order);
}

// The rest of a layer after attention, for `rows` tokens: residual += attn · W_oᵀ, then
// residual += SwiGLU MLP of RMSNorm(residual). normed, gate_up and mlp are scratch for those rows.
void attention_output_and_mlp(Gemm& gemm, const DeviceLlama::Layer& w, const LlamaConfig& c,
                              const __nv_bfloat16* attn, float* residual, int64_t rows, __nv_bfloat16* normed,
                              __nv_bfloat16* gate_up, __nv_bfloat16* mlp, const Communicator* comm,
                              cudaStream_t stream) {
  attention_output(gemm, w, c, attn, residual, rows, comm, stream);
  mlp_block(gemm, w, c, residual, rows, normed, gate_up, mlp, comm, stream);
}

// A communicator made for the model's split: as many ranks as it was cut into, this one its rank.
void check_communicator(const DeviceLlama& model, const Communicator* comm) {
  const int ranks = comm ? comm->ranks() : 1, rank = comm ? comm->rank() : 0;
  SEER_CHECK(ranks == model.shard.ranks && rank == model.shard.rank, "this model is part ", model.shard.rank,
             " of a model split over ", model.shard.ranks, " GPUs: run it with that rank's communicator "
             "(TensorParallelLlama::communicator), not rank ", rank, " of ", ranks);
}

void check_context(const LlamaConfig& c, int64_t tokens) {
  SEER_CHECK(c.rope.scaling != RopeConfig::Scaling::none || c.max_positions <= 0 || tokens <= c.max_positions,
             "a sequence of ", tokens, " tokens exceeds the model's ", c.max_positions,
             " positions and the model has no RoPE scaling");
}

}  // namespace

DeviceLlama DeviceLlama::upload(const LlamaWeights& w) { return upload(w, tensor_shard(w.config, 0, 1)); }

DeviceLlama DeviceLlama::upload(const LlamaWeights& w, const TensorShard& shard) {
  check_supported(w.config);
  DeviceLlama m{shard_config(w.config, shard)};
  m.shard = shard;
  m.embed = upload_bf16({&w.embed});  // replicated
  if (!w.lm_head.empty()) m.lm_head = upload_bf16({&w.lm_head});
  m.final_norm = DeviceBuffer<float>::upload(w.final_norm);
  for (const LlamaLayerWeights& whole : w.layers) {
    // A layer's slices at a time: a rank's host copy stays one layer big.
    const LlamaLayerWeights part = shard.ranks == 1 ? LlamaLayerWeights{} : shard_layer(whole, w.config, shard);
    const LlamaLayerWeights& l = shard.ranks == 1 ? whole : part;
    Layer d;
    d.attn_norm = DeviceBuffer<float>::upload(l.attn_norm);
    d.ffn_norm = DeviceBuffer<float>::upload(l.ffn_norm);
    d.wqkv = upload_bf16({&l.wq, &l.wk, &l.wv});
    d.wo = upload_bf16({&l.wo});
    d.w_gate_up = upload_bf16({&l.w_gate, &l.w_up});
    d.w_down = upload_bf16({&l.w_down});
    m.layers.push_back(std::move(d));
  }
  return m;
}

DeviceLlama DeviceLlama::synthetic(const LlamaConfig& c, uint64_t seed) {
  return synthetic(c, seed, tensor_shard(c, 0, 1));
}

DeviceLlama DeviceLlama::synthetic(const LlamaConfig& c, uint64_t seed, const TensorShard& s) {
  check_supported(c);
  check_shard(c, s);
  DeviceLlama m{shard_config(c, s)};
  m.shard = s;
  const int64_t hidden = c.hidden, d = c.head_dim, qd = int64_t(c.q_heads) * d, kvd = int64_t(c.kv_heads) * d;
  const int64_t inter = c.intermediate, sq = int64_t(s.q_heads()) * d, skv = int64_t(s.kv_heads()) * d;
  const int64_t si = s.intermediate();
  // Rows [r0, r0 + rows) of the whole [*, cols] tensor `seed` into `to`, or its columns [c0, c0 + cols).
  const auto rows_of = [](__nv_bfloat16* to, int64_t r0, int64_t rows, int64_t cols, uint64_t seed, float stddev) {
    fill_random_block(to, rows, cols, cols, r0, 0, DType::bf16, seed, stddev, nullptr);
  };
  const auto columns_of = [](__nv_bfloat16* to, int64_t rows, int64_t c0, int64_t cols, int64_t whole_cols,
                             uint64_t seed, float stddev) {
    fill_random_block(to, rows, cols, whole_cols, 0, c0, DType::bf16, seed, stddev, nullptr);
  };
  // Scaled so that activations keep unit size through the layers (std 1/sqrt(fan_in)).
  const float in_scale = 1.0f / std::sqrt(float(c.hidden));
  m.embed = random_bf16(size_t(c.vocab) * hidden, seed, 1.0f);
  if (!c.tied_embeddings) m.lm_head = random_bf16(size_t(c.vocab) * hidden, seed + 1, in_scale);
  std::vector<float> ones(size_t(hidden), 1.0f);
  m.final_norm = DeviceBuffer<float>::upload(ones);
  for (int l = 0; l < c.layers; ++l) {
    const uint64_t layer_seed = seed + 16 * uint64_t(l + 1);
    Layer w;
    w.attn_norm = DeviceBuffer<float>::upload(ones);
    w.ffn_norm = DeviceBuffer<float>::upload(ones);
    // The whole W_qkv stacks q, k and v rows; the shard's are its heads' rows of each.
    w.wqkv = DeviceBuffer<__nv_bfloat16>(size_t((sq + 2 * skv) * hidden));
    rows_of(w.wqkv.data(), s.q_begin * d, sq, hidden, layer_seed, in_scale);
    rows_of(w.wqkv.data() + sq * hidden, qd + s.kv_begin * d, skv, hidden, layer_seed, in_scale);
    rows_of(w.wqkv.data() + (sq + skv) * hidden, qd + kvd + s.kv_begin * d, skv, hidden, layer_seed, in_scale);
    w.wo = DeviceBuffer<__nv_bfloat16>(size_t(hidden * sq));
    columns_of(w.wo.data(), hidden, s.q_begin * d, sq, qd, layer_seed + 1, 1.0f / std::sqrt(float(qd)));
    // The whole W_gate/up stacks gate rows then up rows.
    w.w_gate_up = DeviceBuffer<__nv_bfloat16>(size_t(2 * si * hidden));
    rows_of(w.w_gate_up.data(), s.inter_begin, si, hidden, layer_seed + 2, in_scale);
    rows_of(w.w_gate_up.data() + si * hidden, inter + s.inter_begin, si, hidden, layer_seed + 2, in_scale);
    w.w_down = DeviceBuffer<__nv_bfloat16>(size_t(hidden * si));
    columns_of(w.w_down.data(), hidden, s.inter_begin, si, inter, layer_seed + 3, 1.0f / std::sqrt(float(inter)));
    m.layers.push_back(std::move(w));
  }
  SEER_CUDA_CHECK(cudaDeviceSynchronize());
  return m;
}

int64_t DeviceLlama::parameter_count() const {
  int64_t n = int64_t(embed.size() + lm_head.size() + final_norm.size());
  for (const Layer& l : layers)
    n += int64_t(l.attn_norm.size() + l.ffn_norm.size() + l.wqkv.size() + l.wo.size() + l.w_gate_up.size() +
                 l.w_down.size());
  return n;
}

DeviceKvCache DeviceKvCache::create(const LlamaConfig& c, int64_t capacity) {
  check_supported(c);
  SEER_CHECK(capacity > 0, "KV cache capacity must be positive, got ", capacity);
  check_context(c, capacity);
  DeviceKvCache cache;
  cache.capacity = capacity;
  const size_t n = size_t(capacity) * c.kv_heads * c.head_dim;
  for (int l = 0; l < c.layers; ++l) {
    cache.k.emplace_back(n);
    cache.v.emplace_back(n);
  }
  return cache;
}

int64_t DeviceKvCache::bytes() const {
  int64_t n = 0;
  for (size_t l = 0; l < k.size(); ++l) n += int64_t(k[l].size() + v[l].size()) * 2;
  return n;
}

LlamaRuntime::LlamaRuntime(const DeviceLlama& model, const Sequences& seqs, int64_t chunk_tokens,
                           const Communicator* comm)
    : model_(model), comm_(comm), seqs_(seqs), layout_(DeviceLayout::create(seqs, model.config.q_heads)) {
  check_communicator(model, comm);
  SEER_CHECK(chunk_tokens > 0, "prefill chunk must be positive, got ", chunk_tokens);
  chunk_ = std::min(chunk_tokens, std::max<int64_t>(seqs.tokens(), 1));
  const bool split = comm != nullptr && comm->ranks() > 1;
  // Split over GPUs: two chunks at least (past 64 tokens), so that their all-reduces overlap
  // (side_stream_).
  if (split) chunk_ = std::min(chunk_, std::max<int64_t>(64, ceil_div(ceil_div(seqs.tokens(), 2), 64) * 64));
  const LlamaConfig& c = model.config;
  const size_t t = size_t(seqs.tokens()), hidden = size_t(c.hidden), d = size_t(c.head_dim);
  const size_t chunk = size_t(chunk_);
  int64_t longest = 0;
  std::vector<int32_t> positions(t);
  for (int64_t s = 0; s < seqs.count(); ++s) {
    longest = std::max(longest, seqs.length(s));
    for (int64_t p = 0; p < seqs.length(s); ++p) positions[size_t(seqs.start(s) + p)] = int32_t(p);
  }
  check_context(c, longest);
  SEER_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  gemm_ = std::make_unique<Gemm>(stream_);
  if (split) {
    SEER_CUDA_CHECK(cudaStreamCreateWithFlags(&side_stream_, cudaStreamNonBlocking));
    side_gemm_ = std::make_unique<Gemm>(side_stream_);
    SEER_CUDA_CHECK(cudaEventCreateWithFlags(&attention_done_, cudaEventDisableTiming));
    SEER_CUDA_CHECK(cudaEventCreateWithFlags(&side_done_, cudaEventDisableTiming));
    SEER_CUDA_CHECK(cudaEventCreateWithFlags(&collective_done_, cudaEventDisableTiming));
    side_normed_ = DeviceBuffer<__nv_bfloat16>(chunk * hidden);
    side_gate_up_ = DeviceBuffer<__nv_bfloat16>(chunk * 2 * size_t(c.intermediate));
    side_mlp_ = DeviceBuffer<__nv_bfloat16>(chunk * size_t(c.intermediate));
  }

  rope_ = rope_table(c, longest);
  positions_ = DeviceBuffer<int32_t>::upload(positions);
  ids_ = DeviceBuffer<int32_t>(t);
  targets_ = DeviceBuffer<int32_t>(t);
  residual_ = DeviceBuffer<float>(t * hidden);
  normed_ = DeviceBuffer<__nv_bfloat16>(chunk * hidden);
  qkv_ = DeviceBuffer<__nv_bfloat16>(chunk * (c.q_heads + 2 * c.kv_heads) * d);
  q_ = DeviceBuffer<__nv_bfloat16>(t * c.q_heads * d);
  k_ = DeviceBuffer<__nv_bfloat16>(t * c.kv_heads * d);
  v_ = DeviceBuffer<__nv_bfloat16>(t * c.kv_heads * d);
  attn_ = DeviceBuffer<__nv_bfloat16>(t * c.q_heads * d);
  lse_ = DeviceBuffer<float>(t * c.q_heads);
  gate_up_ = DeviceBuffer<__nv_bfloat16>(chunk * 2 * size_t(c.intermediate));
  mlp_ = DeviceBuffer<__nv_bfloat16>(chunk * size_t(c.intermediate));
  last_normed_ = DeviceBuffer<__nv_bfloat16>(size_t(seqs.count()) * hidden);
  activation_bytes_ = int64_t(residual_.size() * 4 + normed_.size() * 2 + qkv_.size() * 2 + q_.size() * 2 +
                              k_.size() * 4 + attn_.size() * 2 + lse_.size() * 4 + gate_up_.size() * 2 +
                              mlp_.size() * 2 + rope_.size() * 8 + side_normed_.size() * 2 +
                              side_gate_up_.size() * 2 + side_mlp_.size() * 2);
}

LlamaRuntime::~LlamaRuntime() {
  gemm_.reset();
  side_gemm_.reset();
  if (stream_) cudaStreamDestroy(stream_);
  if (side_stream_) cudaStreamDestroy(side_stream_);
  if (attention_done_) cudaEventDestroy(attention_done_);
  if (side_done_) cudaEventDestroy(side_done_);
  if (collective_done_) cudaEventDestroy(collective_done_);
}

void LlamaRuntime::forward(std::span<const int32_t> tokens, const ForwardOptions& o) {
  const LlamaConfig& c = model_.config;
  const int64_t t = seqs_.tokens();
  SEER_CHECK(int64_t(tokens.size()) == t, "forward: ", tokens.size(), " tokens for a runtime built for ", t);
  for (int32_t id : tokens) SEER_CHECK(id >= 0 && id < c.vocab, "token id ", id, " outside the vocabulary of ", c.vocab);
  const int d = c.head_dim, hq = c.q_heads, hkv = c.kv_heads;
  const bool capture = o.mode == AttentionMode::ground_truth, seer = o.mode == AttentionMode::seer;
  const bool custom = o.mode == AttentionMode::custom_mask;
  SEER_CHECK(!custom || o.mask_for_layer, "custom_mask attention needs mask_for_layer");
  if (seer) {
    SEER_CHECK(o.gates && int(o.gates->size()) == c.layers, "SeerAttention needs one gate per layer (",
               c.layers, "), got ", o.gates ? o.gates->size() : 0);
    o.selection.validate();
    SEER_CHECK(o.selection.layer_mass.empty() || int(o.selection.layer_mass.size()) == c.layers,
               "SeerAttention: ", o.selection.layer_mass.size(), " per-layer masses for ", c.layers, " layers");
  }
  if (o.kv_cache) {
    SEER_CHECK(seqs_.count() == 1, "a KV cache holds one sequence; this runtime has ", seqs_.count());
    check_cache(*o.kv_cache, c);
    SEER_CHECK(t <= o.kv_cache->capacity, "a prompt of ", t, " tokens does not fit a KV cache of ",
               o.kv_cache->capacity, " positions");
  }
  const bool keep_pre = capture || seer || custom;
  if (keep_pre && !q_pre_.size()) {  // first use of a gate-related mode: allocate its buffers
    q_pre_ = DeviceBuffer<__nv_bfloat16>(q_.size());
    k_pre_ = DeviceBuffer<__nv_bfloat16>(k_.size());
  }
  if (capture && !gt_.size()) {
    gt_ = DeviceBuffer<float>(size_t(layout_.host.map_elements()));
    gt_scratch_ = DeviceBuffer<float>(size_t(layout_.scratch_elements));
  }
  if (seer && !gate_logits_.size()) {
    gate_logits_ = DeviceBuffer<float>(size_t(layout_.host.map_elements()));
    const GateConfig& gc = o.gates->front().config;
    gate_work_ = std::make_unique<GateWorkspace>(GateWorkspace::create(layout_, gc));
    select_work_ = std::make_unique<SelectionWorkspace>(SelectionWorkspace::create(layout_, hq));
    mask_ = std::make_unique<DeviceMask>(DeviceMask::with_capacity(layout_.total_rows * hq, layout_.host.causal_pairs()));
  }
  logit_rows_ = o.all_logits ? t : seqs_.count();
  if (logits_.size() < size_t(logit_rows_) * c.vocab) logits_ = DeviceBuffer<float>(size_t(logit_rows_) * c.vocab);

  layer_nnz_.assign(seer ? size_t(c.layers) : 0, 0);
  SEER_CUDA_CHECK(cudaMemcpyAsync(ids_.data(), tokens.data(), tokens.size_bytes(), cudaMemcpyHostToDevice, stream_));
  embed_tokens(ids_.data(), t, model_.embed.data(), c.hidden, c.vocab, residual_.data(), stream_);
  const int qkv_width = (hq + 2 * hkv) * d;
  for (int l = 0; l < c.layers; ++l) {
    const DeviceLlama::Layer& w = model_.layers[size_t(l)];
    __nv_bfloat16* k = o.kv_cache ? o.kv_cache->k[size_t(l)].data() : k_.data();
    __nv_bfloat16* v = o.kv_cache ? o.kv_cache->v[size_t(l)].data() : v_.data();
    for (int64_t c0 = 0; c0 < t; c0 += chunk_) {
      const int64_t n = std::min(chunk_, t - c0);
      rms_norm(residual_.data() + c0 * c.hidden, w.attn_norm.data(), n, c.hidden, float(c.rms_eps), normed_.data(),
               stream_);
      (*gemm_)(w.wqkv.data(), normed_.data(), qkv_.data(), n, qkv_width, c.hidden, GemmOut::bf16);
      split_qkv_rope(qkv_.data(), n, positions_.data() + c0, hq, hkv, d, rope_.data(), q_.data() + c0 * hq * d,
                     k + c0 * hkv * d, v + c0 * hkv * d, keep_pre ? q_pre_.data() + c0 * hq * d : nullptr,
                     keep_pre ? k_pre_.data() + c0 * hkv * d : nullptr, false, stream_);
    }
    const AttentionArgs attn_args{q_.data(), k, v, attn_.data(), lse_.data(), DType::bf16, {hq, hkv, d}};
    switch (o.mode) {
      case AttentionMode::dense:
        dense_forward(attn_args, layout_, stream_);
        break;
      case AttentionMode::ground_truth:
        ground_truth_forward(attn_args, layout_, gt_.data(), gt_scratch_.data(), stream_, o.gt_pooling);
        if (o.on_layer) o.on_layer({l, q_pre_.data(), k_pre_.data(), gt_.data(), attn_args, &layout_});
        break;
      case AttentionMode::seer:
        gate_forward(q_pre_.data(), k_pre_.data(), DType::bf16, layout_, (*o.gates)[size_t(l)], *gate_work_,
                     gate_logits_.data(), stream_);
        select_blocks(gate_logits_.data(), layout_, hq, o.selection.for_layer(l), *select_work_, *mask_, stream_);
        SEER_CUDA_CHECK(cudaMemcpyAsync(&layer_nnz_[size_t(l)], mask_->indptr.data() + mask_->rows, sizeof(int32_t),
                                        cudaMemcpyDeviceToHost, stream_));
        block_sparse_forward(attn_args, layout_, *mask_, stream_);
        break;
      case AttentionMode::custom_mask:
        block_sparse_forward(attn_args, layout_,
                             o.mask_for_layer({l, q_pre_.data(), k_pre_.data(), nullptr, attn_args, &layout_}), stream_);
        break;
    }
    if (side_stream_)
      overlapped_output_and_mlp(l);
    else
      for (int64_t c0 = 0; c0 < t; c0 += chunk_)
        attention_output_and_mlp(*gemm_, w, c, attn_.data() + c0 * hq * d, residual_.data() + c0 * c.hidden,
                                 std::min(chunk_, t - c0), normed_.data(), gate_up_.data(), mlp_.data(), comm_,
                                 stream_);
  }
  if (o.kv_cache) o.kv_cache->length = t;
  if (o.all_logits) {
    for (int64_t c0 = 0; c0 < t; c0 += chunk_) {
      const int64_t n = std::min(chunk_, t - c0);
      rms_norm(residual_.data() + c0 * c.hidden, model_.final_norm.data(), n, c.hidden, float(c.rms_eps),
               normed_.data(), stream_);
      (*gemm_)(model_.output_matrix(), normed_.data(), logits_.data() + c0 * c.vocab, n, c.vocab, c.hidden,
               GemmOut::fp32);
    }
  } else {  // each sequence's last row only
    for (int64_t s = 0; s < seqs_.count(); ++s)
      rms_norm(residual_.data() + (seqs_.start(s) + seqs_.length(s) - 1) * c.hidden, model_.final_norm.data(), 1,
               c.hidden, float(c.rms_eps), last_normed_.data() + s * c.hidden, stream_);
    (*gemm_)(model_.output_matrix(), last_normed_.data(), logits_.data(), seqs_.count(), c.vocab, c.hidden,
             GemmOut::fp32);
  }
}

void LlamaRuntime::overlapped_output_and_mlp(int layer) {
  const LlamaConfig& c = model_.config;
  const DeviceLlama::Layer& w = model_.layers[size_t(layer)];
  const int64_t t = seqs_.tokens(), qd = int64_t(c.q_heads) * c.head_dim;
  SEER_CUDA_CHECK(cudaEventRecord(attention_done_, stream_));
  SEER_CUDA_CHECK(cudaStreamWaitEvent(side_stream_, attention_done_));
  struct Lane {
    Gemm& gemm;
    cudaStream_t stream;
    __nv_bfloat16 *normed, *gate_up, *mlp;
  };
  const Lane lanes[2] = {{*gemm_, stream_, normed_.data(), gate_up_.data(), mlp_.data()},
                         {*side_gemm_, side_stream_, side_normed_.data(), side_gate_up_.data(), side_mlp_.data()}};
  // Chunks in pairs, the second of each on the side stream. Every rank issues the collectives in
  // one order: both chunks' W_o all-reduces, then both MLP ones (CollectiveOrder). So one chunk's
  // all-reduce runs beside the other's products: W_o of the second beside the first's all-reduce,
  // the MLP of the first beside the second's, and so on.
  CollectiveOrder order{collective_done_};
  for (int64_t pair = 0; pair < t; pair += 2 * chunk_) {
    for (int i = 0; i < 2 && pair + i * chunk_ < t; ++i) {
      const int64_t c0 = pair + i * chunk_;
      attention_output(lanes[i].gemm, w, c, attn_.data() + c0 * qd, residual_.data() + c0 * c.hidden,
                       std::min(chunk_, t - c0), comm_, lanes[i].stream, &order);
    }
    for (int i = 0; i < 2 && pair + i * chunk_ < t; ++i) {
      const int64_t c0 = pair + i * chunk_;
      mlp_block(lanes[i].gemm, w, c, residual_.data() + c0 * c.hidden, std::min(chunk_, t - c0), lanes[i].normed,
                lanes[i].gate_up, lanes[i].mlp, comm_, lanes[i].stream, &order);
    }
  }
  SEER_CUDA_CHECK(cudaEventRecord(side_done_, side_stream_));
  SEER_CUDA_CHECK(cudaStreamWaitEvent(stream_, side_done_));
}

LlamaDecoder::LlamaDecoder(const DeviceLlama& model, DeviceKvCache& cache, const Communicator* comm)
    : model_(model),
      cache_(cache),
      comm_(comm),
      attention_work_(DecodeWorkspace::create({model.config.q_heads, model.config.kv_heads, model.config.head_dim},
                                              cache.capacity)) {
  const LlamaConfig& c = model.config;
  check_cache(cache, c);
  check_communicator(model, comm);
  SEER_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  gemm_ = std::make_unique<Gemm>(stream_);
  const size_t d = size_t(c.head_dim);
  rope_ = rope_table(c, cache.capacity);
  step_ids_ = DeviceBuffer<int32_t>(3);
  residual_ = DeviceBuffer<float>(size_t(c.hidden));
  logits_ = DeviceBuffer<float>(size_t(c.vocab));
  normed_ = DeviceBuffer<__nv_bfloat16>(size_t(c.hidden));
  qkv_ = DeviceBuffer<__nv_bfloat16>(size_t(c.q_heads + 2 * c.kv_heads) * d);
  q_ = DeviceBuffer<__nv_bfloat16>(size_t(c.q_heads) * d);
  attn_ = DeviceBuffer<__nv_bfloat16>(size_t(c.q_heads) * d);
  gate_up_ = DeviceBuffer<__nv_bfloat16>(2 * size_t(c.intermediate));
  mlp_ = DeviceBuffer<__nv_bfloat16>(size_t(c.intermediate));
  host_logits_.resize(size_t(c.vocab));
}

LlamaDecoder::~LlamaDecoder() {
  if (graph_) cudaGraphExecDestroy(graph_);
  gemm_.reset();
  if (stream_) cudaStreamDestroy(stream_);
}

void LlamaDecoder::record_step() {
  const LlamaConfig& c = model_.config;
  const int d = c.head_dim, hq = c.q_heads, hkv = c.kv_heads;
  embed_tokens(step_ids_.data(), 1, model_.embed.data(), c.hidden, c.vocab, residual_.data(), stream_);
  for (int l = 0; l < c.layers; ++l) {
    const DeviceLlama::Layer& w = model_.layers[size_t(l)];
    __nv_bfloat16* k = cache_.k[size_t(l)].data();
    __nv_bfloat16* v = cache_.v[size_t(l)].data();
    rms_norm(residual_.data(), w.attn_norm.data(), 1, c.hidden, float(c.rms_eps), normed_.data(), stream_);
    (*gemm_)(w.wqkv.data(), normed_.data(), qkv_.data(), 1, (hq + 2 * hkv) * d, c.hidden, GemmOut::bf16);
    split_qkv_rope(qkv_.data(), 1, step_ids_.data() + 1, hq, hkv, d, rope_.data(), q_.data(), k, v, nullptr, nullptr,
                   true, stream_);
    decode_attention(q_.data(), k, v, step_ids_.data() + 2, cache_.capacity, attn_.data(), attention_work_, stream_);
    attention_output_and_mlp(*gemm_, w, c, attn_.data(), residual_.data(), 1, normed_.data(), gate_up_.data(),
                             mlp_.data(), comm_, stream_);
  }
  rms_norm(residual_.data(), model_.final_norm.data(), 1, c.hidden, float(c.rms_eps), normed_.data(), stream_);
  (*gemm_)(model_.output_matrix(), normed_.data(), logits_.data(), 1, c.vocab, c.hidden, GemmOut::fp32);
}

std::span<const float> LlamaDecoder::step(int32_t token) {
  const LlamaConfig& c = model_.config;
  SEER_CHECK(token >= 0 && token < c.vocab, "token id ", token, " outside the vocabulary of ", c.vocab);
  SEER_CHECK(cache_.length < cache_.capacity, "the KV cache is full (", cache_.capacity, " positions)");
  const int64_t position = cache_.length;
  const int32_t ids[3] = {token, int32_t(position), int32_t(position + 1)};  // pageable: copied before return
  SEER_CUDA_CHECK(cudaMemcpyAsync(step_ids_.data(), ids, sizeof ids, cudaMemcpyHostToDevice, stream_));
  if (!graph_) {
    SEER_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t graph = nullptr;
    try {
      record_step();
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    SEER_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    const cudaError_t status = cudaGraphInstantiate(&graph_, graph, 0);
    cudaGraphDestroy(graph);
    SEER_CUDA_CHECK(status);
  }
  SEER_CUDA_CHECK(cudaGraphLaunch(graph_, stream_));
  SEER_CUDA_CHECK(cudaMemcpyAsync(host_logits_.data(), logits_.data(), host_logits_.size() * sizeof(float),
                                  cudaMemcpyDeviceToHost, stream_));
  SEER_CUDA_CHECK(cudaStreamSynchronize(stream_));
  cache_.length = position + 1;
  return host_logits_;
}

std::vector<float> LlamaRuntime::next_token_nll(std::span<const int32_t> tokens) {
  SEER_CHECK(logit_rows_ == seqs_.tokens(), "next_token_nll needs a forward with all_logits");
  std::vector<int32_t> targets(tokens.size(), -1);
  for (int64_t s = 0; s < seqs_.count(); ++s)
    for (int64_t p = 0; p + 1 < seqs_.length(s); ++p)
      targets[size_t(seqs_.start(s) + p)] = tokens[size_t(seqs_.start(s) + p + 1)];
  SEER_CUDA_CHECK(cudaMemcpyAsync(targets_.data(), targets.data(), targets.size() * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream_));
  if (nll_.size() < targets.size()) nll_ = DeviceBuffer<float>(targets.size());
  token_nll(logits_.data(), targets_.data(), int64_t(targets.size()), model_.config.vocab, nll_.data(), stream_);
  std::vector<float> nll(targets.size());
  SEER_CUDA_CHECK(cudaMemcpyAsync(nll.data(), nll_.data(), nll.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  SEER_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return nll;
}

double LlamaRuntime::last_density() const {
  SEER_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (layer_nnz_.empty()) return 1.0;
  double sum = 0;
  for (int32_t nnz : layer_nnz_) sum += double(nnz) / double(layout_.host.causal_pairs());
  return sum / double(layer_nnz_.size());
}

std::vector<float> LlamaRuntime::logits() const {
  std::vector<float> host(size_t(logit_rows_) * model_.config.vocab);
  SEER_CUDA_CHECK(cudaMemcpyAsync(host.data(), logits_.data(), host.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                  stream_));
  SEER_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return host;
}

}  // namespace seer::cuda
