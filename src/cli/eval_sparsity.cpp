// `seer eval-sparsity`: perplexity of a model on held-out text with dense attention and with every
// block-selection method at several densities, the real density measured per forward — the table in
// bench/ACCURACY.md. Runs on the GPU; every method attends through the same block-sparse kernel, so
// the methods differ only in which blocks they choose.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "cli/commands.h"
#include "cuda/llama_cuda.h"
#include "eval/baseline_masks.h"
#include "eval/mask_recall.h"
#include "eval/passkey.h"
#include "model/gates.h"
#include "model/llama_loader.h"
#include "train/token_corpus.h"

namespace seer::cli {
namespace {

// Every method of the table, the default of --methods and its check.
const std::vector<std::string> kMethods{"a", "a+", "b", "b+", "p", "p+", "p*", "c", "cm", "cmx", "cp", "d", "e", "f", "g"};

struct EvalOptions {
  std::string model, gates = "gates/smollm2-135m-instruct.safetensors", out;
  std::vector<std::string> data{"../shared/corpus/dev"};
  int64_t context = 8192, windows_per_book = 4;
  std::vector<double> densities{0.5, 0.3, 0.2, 0.1};
  std::vector<double> thresholds{5e-2, 2e-2, 1e-2, 5e-3, 2e-3, 1e-3};
  std::vector<double> masses{0.5, 0.6, 0.7, 0.8, 0.9, 0.95};
  int64_t passkey_trials = 100, passkey_context = 0;  // 0: the perplexity context
  double passkey_density = 0.1, passkey_threshold = 0.03, passkey_mass = kDefaultMass;
  std::vector<std::string> passkey_methods{"a", "a+", "p+"};
  // (a+): top-k plus forced blocks, the attention sink and local blocks up to the diagonal.
  bool plus_sink = kDefaultKeepSink;
  int plus_local_blocks = kDefaultLocalBlocks;
  std::vector<int> plus_dense_layers;  // (a+): layers left dense
  bool layer_sweep = false;            // (a+) at the lowest density in one layer at a time
  bool recall = false;                 // where the gate's top-k misses the oracle's (eval/mask_recall.h)
  std::vector<std::string> methods = kMethods;
  bool json = false;
};

constexpr const char* kSweepName = "(layer sweep)";
constexpr const char* kCalibratedName = "(p*) trained gate, top-p with calibrated per-layer masses";

struct Tally {
  double nll = 0, density = 0;
  int64_t tokens = 0, forwards = 0;
  double ppl() const { return std::exp(nll / double(tokens)); }
  double mean_density() const { return forwards ? density / double(forwards) : 1.0; }
};

// Pass-key retrieval (eval/passkey.h): prompts of `context` tokens of held-out text with the key at a
// random depth; greedy decoding of up to kAnswerTokens tokens through the KV cache, correct when the key
// appears. SeerAttention keeps the last 2 query blocks dense, its default for prompts that end in a
// question.
constexpr int kAnswerTokens = 16;
// What picks a pass-key selection's blocks: the trained gate, the oracle (the same selection on the
// ground truth, pooled as `pooling`), or StreamingLLM's sink and local window at top-k's density.
enum class PasskeySource { gate, oracle, streaming };
struct PasskeySelection {
  std::string name;
  SelectionOptions options;  // the gate's or the oracle's; every source keeps the last 2 query blocks dense
  PasskeySource source = PasskeySource::gate;
  GtPooling pooling = GtPooling::max;
};

// A block map (the gate's logits or the ground truth), the ground truth's scratch, the selection's
// workspace and the mask it fills, sized for one layout.
struct MaskBuffers {
  cuda::DeviceBuffer<float> map, scratch;
  cuda::SelectionWorkspace select_work;
  cuda::DeviceMask mask;

  MaskBuffers(const cuda::DeviceLayout& layout, int q_heads)
      : map(size_t(layout.host.map_elements())),
        scratch(size_t(layout.scratch_elements)),
        select_work(cuda::SelectionWorkspace::create(layout, q_heads)),
        mask(cuda::DeviceMask::with_capacity(layout.total_rows * q_heads, layout.host.causal_pairs())) {}

  // The layer's ground truth, pooled as `pooling`, into map.
  void ground_truth(const cuda::LayerCapture& cap, const cuda::DeviceLayout& layout, GtPooling pooling,
                    cudaStream_t stream) {
    cuda::ground_truth_forward(cap.attention, layout, map.data(), scratch.data(), stream, pooling);
  }
  // The oracle: `sel` on the ground truth itself, through its logarithm, so that the softmax of a row
  // is the row.
  const cuda::DeviceMask& oracle(const cuda::LayerCapture& cap, const cuda::DeviceLayout& layout,
                                 const SelectionOptions& sel, GtPooling pooling, cudaStream_t stream) {
    ground_truth(cap, layout, pooling, stream);
    cuda::probabilities_to_logits(map.data(), int64_t(map.size()), stream);
    cuda::select_blocks(map.data(), layout, layout.host.heads, sel, select_work, mask, stream);
    return mask;
  }
};
// A forward's masks from outside the gate.
struct CustomMasks {
  std::optional<MaskBuffers> oracle;
  cuda::DeviceMask fixed;  // StreamingLLM's, the same in every layer
};

// Sets `options` to attend through `sel` in a forward on `runtime`; masks not from the gate live in
// `masks`, made here for the runtime's layout.
void set_passkey_selection(const PasskeySelection& sel, const std::vector<cuda::DeviceGate>& gates,
                           cuda::LlamaRuntime& runtime, CustomMasks& masks, cuda::ForwardOptions& options) {
  const cuda::DeviceLayout& layout = runtime.layout();
  switch (sel.source) {
    case PasskeySource::gate:
      options.mode = cuda::AttentionMode::seer;
      options.gates = &gates;
      options.selection = sel.options;
      return;
    case PasskeySource::oracle:
      options.mode = cuda::AttentionMode::custom_mask;
      options.mask_for_layer = [&sel, &runtime, b = &masks.oracle.emplace(layout, layout.host.heads),
                                &layout](const cuda::LayerCapture& cap) -> const cuda::DeviceMask& {
        return b->oracle(cap, layout, sel.options, sel.pooling, runtime.stream());
      };
      return;
    case PasskeySource::streaming: {
      const BlockMask streaming = streaming_mask(layout.host, top_k_density(layout.host, sel.options.density));
      masks.fixed = cuda::DeviceMask::upload(
          with_dense_last_blocks(streaming, layout.host, sel.options.dense_last_blocks), layout.host);
      options.mode = cuda::AttentionMode::custom_mask;
      options.mask_for_layer = [m = &masks.fixed](const cuda::LayerCapture&) -> const cuda::DeviceMask& { return *m; };
      return;
    }
  }
}

struct PasskeyResult {
  int64_t trials = 0, dense_correct = 0, context = 0;
  std::vector<int64_t> sparse_correct;  // per selection
  // Per selection, the trials it got right that dense missed: the prompts are the same, so
  // sparse_correct - sparse_only of dense's dense_correct are kept, a paired count.
  std::vector<int64_t> sparse_only;
};

PasskeyResult passkey_retrieval(const cuda::DeviceLlama& model, const Tokenizer& tokenizer,
                                const std::vector<int32_t>& filler, int64_t context, int64_t trials,
                                const std::vector<cuda::DeviceGate>& gates,
                                const std::vector<PasskeySelection>& selections) {
  std::mt19937_64 rng(2026);
  PasskeyResult r;
  r.context = context;
  r.sparse_correct.assign(selections.size(), 0);
  r.sparse_only.assign(selections.size(), 0);
  for (int64_t trial = 0; trial < trials; ++trial) {
    // The prompt and the decoded answer fill the context.
    const PasskeyPrompt p = make_passkey_prompt(tokenizer, filler, context - kAnswerTokens, rng);
    const std::string& key = p.key;
    const std::vector<int32_t>& prompt = p.prompt;
    bool dense_ok = false;
    for (size_t method = 0; method <= selections.size(); ++method) {  // 0: dense, then each selection
      const bool sparse = method > 0;
      // Prefill into the KV cache (SeerAttention or dense), then greedy decode steps (dense, as the
      // paper's prefill-only gates).
      cuda::DeviceKvCache cache = cuda::DeviceKvCache::create(model.config, int64_t(prompt.size()) + kAnswerTokens);
      std::vector<float> logits;
      {
        cuda::LlamaRuntime runtime(model, Sequences::single(int64_t(prompt.size())));
        CustomMasks masks;
        cuda::ForwardOptions options;
        if (sparse) set_passkey_selection(selections[method - 1], gates, runtime, masks, options);
        options.kv_cache = &cache;
        runtime.forward(prompt, options);
        logits = runtime.logits();
      }
      cuda::LlamaDecoder decoder(model, cache);
      std::string answer;
      for (int step = 0; step < kAnswerTokens; ++step) {
        const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        if (next == tokenizer.eos()) break;
        answer += tokenizer.decode(std::span(&next, 1));
        const std::span<const float> step_logits = decoder.step(next);
        logits.assign(step_logits.begin(), step_logits.end());
      }
      const bool correct = answer.find(key) != std::string::npos;
      if (trial < 3)
        std::fprintf(stderr, "\npass key %s, %s answered '%s'\n", key.c_str(),
                     sparse ? selections[method - 1].name.c_str() : "dense", answer.c_str());
      (sparse ? r.sparse_correct[method - 1] : r.dense_correct) += correct;
      if (!sparse) dense_ok = correct;
      if (sparse && correct && !dense_ok) ++r.sparse_only[method - 1];
    }
    ++r.trials;
    std::fprintf(stderr, "\rpass key: trial %lld/%lld, dense %lld, sparse", (long long)r.trials,
                 (long long)trials, (long long)r.dense_correct);
    for (int64_t n : r.sparse_correct) std::fprintf(stderr, " %lld", (long long)n);
  }
  std::fprintf(stderr, "\n");
  return r;
}

// A mask the selection kernels wrote, on the host (synchronizes `stream`, which wrote it).
BlockMask download_mask(const cuda::DeviceMask& m, const BlockLayout& layout, cudaStream_t stream) {
  SEER_CUDA_CHECK(cudaStreamSynchronize(stream));
  const std::vector<int32_t> indptr = m.indptr.download();
  std::vector<int32_t> indices = m.indices.download();
  SEER_CHECK(!indptr.empty() && size_t(indptr.back()) <= indices.size(), "mask download: ", indptr.back(),
             " blocks in a buffer of ", indices.size());
  indices.resize(size_t(indptr.back()));
  return BlockMask{layout.block, layout.heads, std::vector<int64_t>(indptr.begin(), indptr.end()), std::move(indices)};
}

void run(const EvalOptions& o) {
  const std::string path = resolve_model_path(o.model);
  const LlamaWeights weights = load_llama(path);
  const LlamaConfig& c = weights.config;
  const Tokenizer tokenizer = load_llama_tokenizer(path);
  const cuda::DeviceLlama model = cuda::DeviceLlama::upload(weights);
  const Sequences seqs = Sequences::single(o.context);
  cuda::LlamaRuntime runtime(model, seqs);
  const cuda::DeviceLayout& layout = runtime.layout();
  const BlockLayout& host_layout = layout.host;
  const int hq = c.q_heads;

  const std::vector<GateWeights<float>> trained = load_gates(o.gates, c);
  const GateBudgets budgets = load_gate_budgets(o.gates, c.layers);
  std::vector<cuda::DeviceGate> trained_gates, random_gates;
  for (int l = 0; l < c.layers; ++l) {
    trained_gates.push_back(cuda::DeviceGate::upload(trained[size_t(l)], c.rope, layout.max_blocks));
    random_gates.push_back(cuda::DeviceGate::upload(GateWeights<float>::random(trained[size_t(l)].config, 1000 + l),
                                                    c.rope, layout.max_blocks));
  }
  cuda::GateWorkspace gate_work = cuda::GateWorkspace::create(layout, trained.front().config);
  MaskBuffers buffers(layout, hq);
  cuda::DeviceBuffer<float>& map = buffers.map;
  cuda::SelectionWorkspace& select_work = buffers.select_work;
  cuda::DeviceMask& mask = buffers.mask;
  cuda::DeviceMask uploaded;
  std::vector<bf16> q_host(size_t(o.context * hq * c.head_dim)), k_host(size_t(o.context * c.kv_heads * c.head_dim));
  std::vector<float> map_host(map.size());

  // Method name -> target (density or threshold) -> tally.
  std::map<std::string, std::map<double, Tally>> results;
  Tally dense;
  const std::vector<std::vector<int32_t>> windows = text_windows(o.data, tokenizer, o.context, o.windows_per_book);

  const auto score = [&](const std::vector<int32_t>& tokens, cuda::ForwardOptions options, Tally& tally) {
    options.all_logits = true;
    runtime.forward(tokens, options);
    const std::vector<float> nll = runtime.next_token_nll(tokens);
    for (size_t t = 0; t + 1 < nll.size(); ++t) tally.nll += nll[t];
    tally.tokens += int64_t(nll.size()) - 1;
  };
  const auto with_mask = [&](const std::string& name, double target, const std::vector<int32_t>& tokens,
                             const std::function<const cuda::DeviceMask&(const cuda::LayerCapture&)>& provider) {
    Tally& tally = results[name][target];
    cuda::ForwardOptions options;
    options.mode = cuda::AttentionMode::custom_mask;
    options.mask_for_layer = [&](const cuda::LayerCapture& cap) -> const cuda::DeviceMask& {
      const cuda::DeviceMask& m = provider(cap);
      tally.density += double(m.kept_blocks(runtime.stream())) / double(host_layout.causal_pairs());
      ++tally.forwards;
      return m;
    };
    score(tokens, options, tally);
  };
  const auto gate_provider = [&](const std::vector<cuda::DeviceGate>& gates, SelectionOptions sel,
                                  std::vector<int> dense_layers = {}) {
    return [&, sel, dense_layers, all = &gates](const cuda::LayerCapture& cap) -> const cuda::DeviceMask& {
      cuda::gate_forward(cap.q_pre, cap.k_pre, cuda::DType::bf16, layout, (*all)[size_t(cap.layer)], gate_work,
                         map.data(), runtime.stream());
      SelectionOptions layer_sel = sel.for_layer(cap.layer);
      if (std::find(dense_layers.begin(), dense_layers.end(), cap.layer) != dense_layers.end())
        layer_sel = SelectionOptions{.density = 1.0};  // every causal block, whatever the method
      cuda::select_blocks(map.data(), layout, hq, layer_sel, select_work, mask, runtime.stream());
      return mask;
    };
  };
  const auto oracle_provider = [&](SelectionOptions sel, GtPooling pooling = GtPooling::max) {
    return [&, sel, pooling](const cuda::LayerCapture& cap) -> const cuda::DeviceMask& {
      return buffers.oracle(cap, layout, sel, pooling, runtime.stream());
    };
  };

  const auto wanted = [&](const char* code) {
    return std::find(o.methods.begin(), o.methods.end(), code) != o.methods.end();
  };
  const SelectionOptions plus{.keep_sink = o.plus_sink, .local_blocks = o.plus_local_blocks};
  // The forced blocks of (a+) and (b+), for their names; the pass key's selections apply the forced
  // blocks but not --plus-dense-layers.
  const std::string forced_suffix = std::string(o.plus_sink ? ", sink" : "") + ", " +
                                    std::to_string(o.plus_local_blocks) + " local block(s) kept";
  std::string plus_suffix = forced_suffix;
  if (!o.plus_dense_layers.empty()) {
    plus_suffix += ", layers";
    for (int l : o.plus_dense_layers) plus_suffix += " " + std::to_string(l);
    plus_suffix += " dense";
  }
  const std::string plus_name = "(a+) trained gate, top-k" + plus_suffix;
  // The pass-key selections, built before any work so that a missing budget fails at once. The
  // question is in the last 2 query blocks: SeerAttention keeps them dense.
  std::vector<PasskeySelection> passkey_selections;
  for (const std::string& code : o.passkey_trials > 0 ? o.passkey_methods : std::vector<std::string>{}) {
    const bool forced = code.back() == '+';  // p* keeps the budgets' own forced blocks
    PasskeySelection sel{.name = "", .options = forced ? plus : SelectionOptions{}};
    std::string what = "trained gate, ";
    char target[64];
    if (code[0] == 'a' || code[0] == 'c' || code == "d") {
      sel.options.density = o.passkey_density;
      std::snprintf(target, sizeof target, "top-k, density %g", o.passkey_density);
      if (code[0] == 'c') {
        sel.source = PasskeySource::oracle;
        sel.pooling = code == "c" ? GtPooling::max : code == "cm" ? GtPooling::mass : GtPooling::peak_mass;
        what = std::string("oracle, ") + gt_pooling_name(sel.pooling) + " ground truth, ";
      } else if (code == "d") {
        sel.source = PasskeySource::streaming;
        what = "StreamingLLM: sink + local window, ";
        std::snprintf(target, sizeof target, "top-k's density at %g", o.passkey_density);
      }
    } else if (code == "p*") {
      sel.options = budget_selection(budgets, o.passkey_density);
      std::snprintf(target, sizeof target, "calibrated top-p, density %g", o.passkey_density);
    } else if (code[0] == 'b') {
      sel.options.method = SelectionOptions::Method::threshold;
      sel.options.threshold = o.passkey_threshold;
      std::snprintf(target, sizeof target, "threshold %g", o.passkey_threshold);
    } else {
      sel.options.method = SelectionOptions::Method::top_p;
      sel.options.mass = o.passkey_mass;
      std::snprintf(target, sizeof target, "top-p, mass %g", o.passkey_mass);
    }
    sel.options.dense_last_blocks = 2;
    sel.name = "(" + code + ") " + what + target + (forced ? forced_suffix : "");
    passkey_selections.push_back(std::move(sel));
  }
  if (wanted("p*") && budgets.layer_mass.empty())
    std::fprintf(stderr, "eval-sparsity: %s has no calibrated budgets (seer calibrate): no (p*) rows\n",
                 o.gates.c_str());
  // --recall: per density, how much of top-k on the ground truth (pooled as the gates' target)
  // top-k on the gate's logits keeps, by the blocks' place.
  std::map<double, MaskRecall> recall;
  const GtPooling target_pooling = gates_target_pooling(o.gates);
  for (size_t w = 0; w < windows.size(); ++w) {
    const std::vector<int32_t>& tokens = windows[w];
    std::fprintf(stderr, "\reval-sparsity: window %zu/%zu", w + 1, windows.size());
    if (o.recall)
      for (const double density : o.densities) {
        const SelectionOptions top_k{.density = density};
        cuda::ForwardOptions options;
        options.mode = cuda::AttentionMode::custom_mask;
        options.mask_for_layer = [&](const cuda::LayerCapture& cap) -> const cuda::DeviceMask& {
          oracle_provider(top_k, target_pooling)(cap);
          const BlockMask reference = download_mask(mask, host_layout, runtime.stream());
          gate_provider(trained_gates, top_k)(cap);
          recall[density].add(reference, download_mask(mask, host_layout, runtime.stream()), host_layout);
          return mask;
        };
        runtime.forward(tokens, options);
      }
    score(tokens, {}, dense);
    for (const double density : o.densities) {
      const SelectionOptions top_k{.density = density};
      // StreamingLLM and MInference aim at the density top-k really keeps (Quest is a top-k itself),
      // so that every heuristic is compared with the trained gate at the gate's own density.
      const double matched = top_k_density(host_layout, density);
      if (wanted("a"))
        with_mask("(a) SeerAttention, trained gate, top-k", density, tokens, gate_provider(trained_gates, top_k));
      if (wanted("a+")) {
        SelectionOptions sel = plus;
        sel.density = density;
        with_mask(plus_name, density, tokens, gate_provider(trained_gates, sel, o.plus_dense_layers));
      }
      if (wanted("c")) with_mask("(c) oracle top-k of the ground truth", density, tokens, oracle_provider(top_k));
      if (wanted("cm"))
        with_mask("(cm) oracle top-k of the block attention mass", density, tokens,
                  oracle_provider(top_k, GtPooling::mass));
      if (wanted("cmx"))
        with_mask("(cmx) oracle top-k of the peak block attention mass", density, tokens,
                  oracle_provider(top_k, GtPooling::peak_mass));
      if (wanted("d"))
        with_mask("(d) StreamingLLM: sink + local window", density, tokens, [&](const cuda::LayerCapture&) -> const cuda::DeviceMask& {
        uploaded = cuda::DeviceMask::upload(streaming_mask(host_layout, matched), host_layout);
        return uploaded;
      });
      if (wanted("e"))
        with_mask("(e) MInference: vertical + slash", density, tokens, [&](const cuda::LayerCapture& cap) -> const cuda::DeviceMask& {
        buffers.ground_truth(cap, layout, GtPooling::max, runtime.stream());
        SEER_CUDA_CHECK(cudaMemcpyAsync(map_host.data(), map.data(), map.size() * 4, cudaMemcpyDeviceToHost, runtime.stream()));
        SEER_CUDA_CHECK(cudaStreamSynchronize(runtime.stream()));
        const int64_t nb = host_layout.blocks[0];
        std::vector<float> last_rows(size_t(hq * nb));
        for (int h = 0; h < hq; ++h)
          std::copy_n(map_host.begin() + (int64_t(h) * nb + nb - 1) * nb, nb, last_rows.begin() + h * nb);
        uploaded = cuda::DeviceMask::upload(vertical_slash_mask(last_rows, host_layout, matched), host_layout);
        return uploaded;
      });
      if (wanted("f"))
        with_mask("(f) Quest: key min/max bound", density, tokens, [&](const cuda::LayerCapture& cap) -> const cuda::DeviceMask& {
        SEER_CUDA_CHECK(cudaMemcpyAsync(q_host.data(), cap.attention.q, q_host.size() * 2, cudaMemcpyDeviceToHost, runtime.stream()));
        SEER_CUDA_CHECK(cudaMemcpyAsync(k_host.data(), cap.attention.k, k_host.size() * 2, cudaMemcpyDeviceToHost, runtime.stream()));
        SEER_CUDA_CHECK(cudaStreamSynchronize(runtime.stream()));
        uploaded = cuda::DeviceMask::upload(quest_mask(q_host, k_host, seqs, {hq, c.kv_heads, c.head_dim}, density), host_layout);
        return uploaded;
      });
      if (wanted("g"))
        with_mask("(g) untrained gate, top-k", density, tokens, gate_provider(random_gates, top_k));
    }
    for (const double threshold : o.thresholds) {
      SelectionOptions sel{.method = SelectionOptions::Method::threshold, .threshold = threshold};
      if (wanted("b"))
        with_mask("(b) SeerAttention, trained gate, threshold", threshold, tokens, gate_provider(trained_gates, sel));
      sel.keep_sink = plus.keep_sink;
      sel.local_blocks = plus.local_blocks;
      if (wanted("b+"))
        with_mask("(b+) trained gate, threshold" + plus_suffix, threshold, tokens,
                  gate_provider(trained_gates, sel, o.plus_dense_layers));
    }
    if (o.layer_sweep) {
      SelectionOptions sel = plus;
      sel.density = *std::min_element(o.densities.begin(), o.densities.end());
      for (int layer = 0; layer < c.layers; ++layer) {
        std::vector<int> others;
        for (int l = 0; l < c.layers; ++l)
          if (l != layer) others.push_back(l);
        with_mask(kSweepName, layer, tokens, gate_provider(trained_gates, sel, others));
      }
    }
    if (wanted("p*"))
      for (const auto& [density, masses] : budgets.layer_mass)
        with_mask(kCalibratedName, density, tokens, gate_provider(trained_gates, budget_selection(budgets, density)));
    for (const double mass : o.masses) {
      SelectionOptions sel{.method = SelectionOptions::Method::top_p, .mass = mass};
      if (wanted("p")) with_mask("(p) trained gate, top-p", mass, tokens, gate_provider(trained_gates, sel));
      if (wanted("cp")) with_mask("(cp) oracle top-p of the ground truth", mass, tokens, oracle_provider(sel));
      sel.keep_sink = plus.keep_sink;
      sel.local_blocks = plus.local_blocks;
      if (wanted("p+"))
        with_mask("(p+) trained gate, top-p" + plus_suffix, mass, tokens,
                  gate_provider(trained_gates, sel, o.plus_dense_layers));
    }
  }
  std::fprintf(stderr, "\n");

  PasskeyResult passkey;
  std::vector<std::string> passkey_names;
  if (o.passkey_trials > 0) {
    std::vector<int32_t> filler;
    for (const auto& w : windows) filler.insert(filler.end(), w.begin() + 1, w.end());  // BOS dropped
    const int64_t context = o.passkey_context > 0 ? o.passkey_context : o.context;
    passkey = passkey_retrieval(model, tokenizer, filler, context, o.passkey_trials, trained_gates,
                                passkey_selections);
    for (const auto& sel : passkey_selections) passkey_names.push_back(sel.name);
  }

  // The sweep's rows: one layer sparse, the others dense (their density counts as 1).
  std::map<double, Tally> sweep;
  if (auto it = results.find(kSweepName); it != results.end()) {
    sweep = it->second;
    results.erase(it);
  }
  nlohmann::json report = {{"model", c.name}, {"gates", o.gates}, {"context", o.context},
                           {"windows", windows.size()}, {"tokens_scored", dense.tokens},
                           {"dense_ppl", dense.ppl()}, {"methods", nlohmann::json::array()}};
  for (const auto& [name, by_target] : results)
    for (const auto& [target, tally] : by_target)
      report["methods"].push_back({{"method", name}, {"target", target}, {"density", tally.mean_density()},
                                   {"ppl", tally.ppl()}, {"vs_dense", tally.ppl() / dense.ppl() - 1.0}});
  report["passkey"] = {{"trials", passkey.trials},
                       {"dense_correct", passkey.dense_correct},
                       {"selections", nlohmann::json::array()}};
  for (size_t i = 0; i < passkey_names.size(); ++i)
    report["passkey"]["selections"].push_back({{"method", passkey_names[i]},
                                               {"correct", passkey.sparse_correct[i]},
                                               {"correct_where_dense_failed", passkey.sparse_only[i]}});
  report["plus"] = {{"sink", o.plus_sink}, {"local_blocks", o.plus_local_blocks}};
  std::ostringstream md;
  md << "| method | target | real density | PPL | vs dense |\n| --- | --- | --- | --- | --- |\n";
  md << "| dense | | 1.000 | " << dense.ppl() << " | |\n";
  for (const auto& m : report["methods"]) {
    char row[256];
    std::snprintf(row, sizeof row, "| %s | %g | %.3f | %.3f | %+.2f%% |\n", m["method"].get<std::string>().c_str(),
                  m["target"].get<double>(), m["density"].get<double>(), m["ppl"].get<double>(),
                  100.0 * m["vs_dense"].get<double>());
    md << row;
  }
  if (!sweep.empty()) {
    report["layer_sweep"] = nlohmann::json::array();
    md << "\nOne layer sparse at a time ((a+) at density " << *std::min_element(o.densities.begin(), o.densities.end())
       << ", every other layer dense):\n\n| layer | PPL | vs dense |\n| --- | --- | --- |\n";
    for (const auto& [layer, tally] : sweep) {
      report["layer_sweep"].push_back({{"layer", int(layer)}, {"ppl", tally.ppl()}});
      char row[128];
      std::snprintf(row, sizeof row, "| %d | %.3f | %+.2f%% |\n", int(layer), tally.ppl(),
                    100.0 * (tally.ppl() / dense.ppl() - 1.0));
      md << row;
    }
  }
  if (!recall.empty()) {
    report["recall"] = nlohmann::json::array();
    md << "\nWhere the gate's top-k misses the oracle's: of the blocks that top-k on the "
       << gt_pooling_name(target_pooling)
       << "-pooled ground truth keeps, the share that top-k on the gate's logits keeps too, by the blocks' place "
          "(the sink, then the block distance i - j); in parentheses, the share of the oracle's blocks in that "
          "place.\n\n| density |";
    for (int c = 0; c < MaskRecall::kCategories; ++c) md << " " << MaskRecall::category_name(c) << " |";
    md << " all |\n|";
    for (int c = 0; c < MaskRecall::kCategories + 2; ++c) md << " --- |";
    md << "\n";
    const auto percent = [](int64_t part, int64_t whole) {
      return 100.0 * double(part) / double(std::max<int64_t>(1, whole));
    };
    for (const auto& [density, r] : recall) {
      nlohmann::json places = nlohmann::json::array();
      char cell[64];
      std::snprintf(cell, sizeof cell, "| %g |", density);
      md << cell;
      for (int c = 0; c < MaskRecall::kCategories; ++c) {
        places.push_back({{"place", MaskRecall::category_name(c)}, {"oracle_blocks", r.reference[size_t(c)]},
                          {"gate_kept", r.kept[size_t(c)]}});
        std::snprintf(cell, sizeof cell, " %.1f%% (%.1f%%) |", percent(r.kept[size_t(c)], r.reference[size_t(c)]),
                      percent(r.reference[size_t(c)], r.reference_total()));
        md << cell;
      }
      std::snprintf(cell, sizeof cell, " %.1f%% |\n", percent(r.kept_total(), r.reference_total()));
      md << cell;
      report["recall"].push_back({{"density", density}, {"places", places}});
    }
  }
  if (passkey.trials > 0) {
    md << "\nPass-key retrieval (" << passkey.trials << " trials, about " << passkey.context
       << " tokens, greedy): dense " << passkey.dense_correct << "/" << passkey.trials;
    for (size_t i = 0; i < passkey_names.size(); ++i)
      md << "; " << passkey_names[i] << " " << passkey.sparse_correct[i] << "/" << passkey.trials << " ("
         << passkey.sparse_correct[i] - passkey.sparse_only[i] << " of dense's " << passkey.dense_correct << ", "
         << passkey.sparse_only[i] << " that dense missed)";
    md << ".\n";
  }
  // The JSON once every section has added to it (the layer sweep, the recall).
  if (o.json) std::cout << report.dump(2) << "\n";
  if (!o.json) std::cout << md.str();
  if (!o.out.empty()) {
    std::ofstream out(o.out);
    out << md.str();
    SEER_CHECK(out.good(), "cannot write '", o.out, "'");
  }
}

}  // namespace

void add_eval_sparsity_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand("eval-sparsity", "perplexity with every block-selection method (GPU)");
  cmd->add_option("--model", o->model, "GGUF file or Hugging Face directory (default: the built-in model)");
  cmd->add_option("--gates", o->gates, "trained gates (safetensors)");
  cmd->add_option("--data", o->data, "held-out text files or folders")->delimiter(',');
  cmd->add_option("--context", o->context, "tokens per window")->check(CLI::Range(int64_t(128), int64_t(1) << 20));
  cmd->add_option("--windows-per-book", o->windows_per_book, "windows taken from the start of each file");
  cmd->add_option("--densities", o->densities, "target densities")->delimiter(',');
  cmd->add_option("--thresholds", o->thresholds, "thresholds for the trained gate")->delimiter(',');
  cmd->add_option("--out", o->out, "write the markdown table here");
  cmd->add_option("--passkey-trials", o->passkey_trials, "pass-key retrieval trials (0: skip)");
  cmd->add_option("--masses", o->masses, "top-p masses for the trained gate and the oracle")->delimiter(',');
  cmd->add_option("--passkey-density", o->passkey_density, "pass key: top-k density of (a), (a+), the oracles and (d)");
  cmd->add_option("--passkey-threshold", o->passkey_threshold, "pass key: threshold of (b) and (b+)");
  cmd->add_option("--passkey-mass", o->passkey_mass, "pass key: top-p mass of (p) and (p+)");
  cmd->add_option("--passkey-methods", o->passkey_methods,
                  "pass key: selections among a, a+, b, b+, p, p+, p*, and at --passkey-density the top-k oracles "
                  "c, cm, cmx and StreamingLLM d")
      ->delimiter(',')
      ->check(CLI::IsMember({"a", "a+", "b", "b+", "p", "p+", "p*", "c", "cm", "cmx", "d"}));
  cmd->add_option("--passkey-context", o->passkey_context, "pass-key prompt length (default: --context)");
  cmd->add_option("--plus-sink", o->plus_sink, "(a+): keep the sink block (true/false)");
  cmd->add_option("--plus-local-blocks", o->plus_local_blocks, "(a+): local key blocks kept up to the diagonal")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--plus-dense-layers", o->plus_dense_layers, "(a+): layers left dense (comma-separated)")
      ->delimiter(',');
  cmd->add_option("--methods", o->methods,
                  "methods to run, among a, a+, b, b+, p, p+, p*, c, cm, cmx, cp, d, e, f, g (default: all)")
      ->delimiter(',')
      ->check(CLI::IsMember(kMethods));
  cmd->add_flag("--layer-sweep", o->layer_sweep,
                "also score (a+) at the lowest density in one layer at a time, the others dense");
  cmd->add_flag("--recall", o->recall,
                "also report, per density, how much of the oracle's top-k (on the gates' target pooling) the "
                "gate's top-k keeps, by block distance");
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o] { run(*o); });
}

}  // namespace seer::cli
