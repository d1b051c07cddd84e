#include "model/llama_loader.h"

#include <climits>
#include <exception>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/mapped_file.h"
#include "tokenizer/gguf_tokenizer.h"

namespace seer {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxJsonBytes = 16u << 20;

// One tensor to convert to float into `dst`. Conversions run in parallel once every tensor has been
// found and its shape checked, so that a malformed file fails before any work.
struct Conversion {
  std::string name;
  std::vector<float>* dst;
};

template <typename Convert>
void convert_all(const std::vector<Conversion>& jobs, Convert&& convert) {
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t n = 0; n < jobs.size(); ++n) {
    try {
      *jobs[n].dst = convert(jobs[n].name);
    } catch (...) {
#pragma omp critical(seer_model_load_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int to_int(int64_t value, std::string_view what) {
  SEER_CHECK(value > 0 && value <= INT_MAX, what, " = ", value, " is out of range");
  return int(value);
}

// Where a format keeps each tensor: model-wide names, and per layer N the name
// layer_prefix + N + "." + suffix.
struct TensorNames {
  std::string_view embed, norm, head, layer_prefix;
  std::string_view attn_norm, wq, wk, wv, wo, bq, bk, bv, ffn_norm, w_gate, w_up, w_down;
};

constexpr TensorNames kGgufNames{"token_embd.weight",  "output_norm.weight", "output.weight", "blk.",
                                 "attn_norm.weight",   "attn_q.weight",      "attn_k.weight", "attn_v.weight",
                                 "attn_output.weight", "attn_q.bias",        "attn_k.bias",   "attn_v.bias",
                                 "ffn_norm.weight",    "ffn_gate.weight",    "ffn_up.weight", "ffn_down.weight"};

constexpr TensorNames kHfNames{
    "model.embed_tokens.weight",       "model.norm.weight",       "lm_head.weight",          "model.layers.",
    "input_layernorm.weight",          "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",         "self_attn.q_proj.bias",   "self_attn.k_proj.bias",   "self_attn.v_proj.bias",
    "post_attention_layernorm.weight", "mlp.gate_proj.weight",    "mlp.up_proj.weight",      "mlp.down_proj.weight"};

// Calls want(name, PyTorch shape [out, in] or [n], destination) for every tensor the model has.
template <typename Want>
void for_each_tensor(LlamaWeights& w, const TensorNames& names, Want&& want) {
  const LlamaConfig& c = w.config;
  const int64_t q_rows = int64_t(c.q_heads) * c.head_dim, kv_rows = int64_t(c.kv_heads) * c.head_dim;
  using Shape = std::vector<int64_t>;
  want(std::string(names.embed), Shape{c.vocab, c.hidden}, w.embed);
  want(std::string(names.norm), Shape{c.hidden}, w.final_norm);
  if (!c.tied_embeddings) want(std::string(names.head), Shape{c.vocab, c.hidden}, w.lm_head);
  w.layers.resize(size_t(c.layers));
  for (int l = 0; l < c.layers; ++l) {
    const std::string prefix = std::string(names.layer_prefix) + std::to_string(l) + ".";
    const auto name = [&](std::string_view suffix) { return prefix + std::string(suffix); };
    LlamaLayerWeights& L = w.layers[size_t(l)];
    want(name(names.attn_norm), Shape{c.hidden}, L.attn_norm);
    want(name(names.wq), Shape{q_rows, c.hidden}, L.wq);
    want(name(names.wk), Shape{kv_rows, c.hidden}, L.wk);
    want(name(names.wv), Shape{kv_rows, c.hidden}, L.wv);
    want(name(names.wo), Shape{c.hidden, q_rows}, L.wo);
    if (c.qkv_bias) {
      want(name(names.bq), Shape{q_rows}, L.bq);
      want(name(names.bk), Shape{kv_rows}, L.bk);
      want(name(names.bv), Shape{kv_rows}, L.bv);
    }
    want(name(names.ffn_norm), Shape{c.hidden}, L.ffn_norm);
    want(name(names.w_gate), Shape{c.intermediate, c.hidden}, L.w_gate);
    want(name(names.w_up), Shape{c.intermediate, c.hidden}, L.w_up);
    want(name(names.w_down), Shape{c.hidden, c.intermediate}, L.w_down);
  }
}

// A token id from config.json: an integer, or the first of a list (several EOS ids), or absent.
int json_token_id(const nlohmann::json& j, const char* field) {
  if (!j.contains(field) || j[field].is_null()) return -1;
  const nlohmann::json& v = j[field].is_array() && !j[field].empty() ? j[field][0] : j[field];
  SEER_CHECK(v.is_number_integer(), "config.json: '", field, "' must be a token id, got ", j[field].dump());
  return v.get<int>();
}

nlohmann::json read_json(const fs::path& path) {
  try {
    return nlohmann::json::parse(read_text_file(path.string(), kMaxJsonBytes));
  } catch (const nlohmann::json::exception& e) {
    fail(path.string(), ": invalid JSON: ", e.what());
  }
}

}  // namespace

std::string resolve_model_path(const std::string& requested) {
  if (!requested.empty()) {
    SEER_CHECK(fs::exists(requested), "model '", requested, "' does not exist");
    return requested;
  }
  std::vector<fs::path> candidates;
#ifdef SEER_SOURCE_DIR
  candidates.push_back(fs::path(SEER_SOURCE_DIR) / kBuiltinModel);
#endif
  candidates.push_back(fs::current_path() / kBuiltinModel);
  std::string looked;
  for (const fs::path& c : candidates) {
    if (fs::is_regular_file(c)) return c.string();
    looked += (looked.empty() ? "" : ", ") + c.string();
  }
  fail("the built-in model is missing (looked for ", looked,
       "): run scripts/setup.sh (or scripts/fetch_model.sh) to fetch it, or pass --model PATH");
}

bool is_gguf_path(const std::string& path) {
  SEER_CHECK(fs::exists(path), "model '", path, "' does not exist");
  return fs::is_regular_file(path);
}

LlamaConfig llama_config_from_gguf(const GgufFile& f, const std::string& fallback_name) {
  LlamaConfig c;
  c.architecture = f.get_string("general.architecture");
  SEER_CHECK(c.architecture == "llama" || c.architecture == "qwen2", "gguf: architecture '", c.architecture,
             "' is not supported (llama, qwen2)");
  const std::string p = c.architecture + ".";
  const auto has = [&](const std::string& key) { return f.find(key) != nullptr; };
  const auto positive = [&](const std::string& key) { return to_int(f.get_int(key), "gguf: " + key); };
  c.name = has("general.name") ? f.get_string("general.name") : fallback_name;
  c.layers = positive(p + "block_count");
  c.hidden = positive(p + "embedding_length");
  c.q_heads = positive(p + "attention.head_count");
  c.kv_heads = has(p + "attention.head_count_kv") ? positive(p + "attention.head_count_kv") : c.q_heads;
  if (has(p + "attention.key_length")) {
    c.head_dim = positive(p + "attention.key_length");
  } else {
    SEER_CHECK(c.hidden % c.q_heads == 0, "gguf: embedding_length ", c.hidden, " is not a multiple of head_count ",
               c.q_heads, " and attention.key_length is absent");
    c.head_dim = c.hidden / c.q_heads;
  }
  if (has(p + "attention.value_length"))
    SEER_CHECK(positive(p + "attention.value_length") == c.head_dim, "gguf: attention.value_length differs from ",
               "the key length ", c.head_dim, " (not supported)");
  if (has(p + "rope.dimension_count"))
    SEER_CHECK(positive(p + "rope.dimension_count") == c.head_dim, "gguf: rope.dimension_count ",
               f.get_int(p + "rope.dimension_count"), " differs from the head dimension ", c.head_dim,
               " (partial RoPE is not supported)");
  c.intermediate = positive(p + "feed_forward_length");
  c.rms_eps = f.get_float(p + "attention.layer_norm_rms_epsilon");
  c.max_positions = positive(p + "context_length");
  if (has(p + "rope.freq_base")) c.rope.theta = f.get_float(p + "rope.freq_base");
  // llama.cpp writes Llama 3.1's scaling as a tensor of per-frequency factors, not as parameters.
  SEER_CHECK(f.find_tensor("rope_freqs.weight") == nullptr,
             "gguf: RoPE frequency factors (rope_freqs.weight, Llama 3.1 scaling) are not supported");
  const std::string scaling = has(p + "rope.scaling.type") ? f.get_string(p + "rope.scaling.type") : "none";
  if (scaling == "yarn") {
    c.rope.scaling = RopeConfig::Scaling::yarn;
    c.rope.factor = f.get_float(p + "rope.scaling.factor");
    c.rope.original_max_positions = f.get_float(p + "rope.scaling.original_context_length");
    if (has(p + "rope.scaling.yarn_beta_fast")) c.rope.beta_fast = f.get_float(p + "rope.scaling.yarn_beta_fast");
    if (has(p + "rope.scaling.yarn_beta_slow")) c.rope.beta_slow = f.get_float(p + "rope.scaling.yarn_beta_slow");
  } else {
    SEER_CHECK(scaling == "none", "gguf: RoPE scaling '", scaling, "' is not supported (none, yarn)");
  }
  if (has(p + "vocab_size")) {
    c.vocab = positive(p + "vocab_size");
  } else if (has("tokenizer.ggml.tokens")) {
    c.vocab = to_int(int64_t(f.get_string_array("tokenizer.ggml.tokens").size()), "gguf: tokenizer.ggml.tokens size");
  } else {
    const GgufTensorInfo* embed = f.find_tensor("token_embd.weight");
    SEER_CHECK(embed && embed->dims.size() == 2, "gguf: no vocab_size, token list or 2-D token_embd.weight");
    c.vocab = to_int(embed->dims[1], "gguf: token_embd.weight rows");
  }
  if (has("tokenizer.ggml.bos_token_id")) c.bos = int(f.get_int("tokenizer.ggml.bos_token_id"));
  if (has("tokenizer.ggml.eos_token_id")) c.eos = int(f.get_int("tokenizer.ggml.eos_token_id"));
  if (has("tokenizer.ggml.add_bos_token")) c.add_bos = f.get_bool("tokenizer.ggml.add_bos_token");
  c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  try {
    c.validate();
  } catch (const Error& e) {
    fail("gguf: ", e.what());
  }
  return c;
}

LlamaWeights load_llama_gguf(const GgufFile& f, const std::string& fallback_name) {
  LlamaWeights w;
  w.config = llama_config_from_gguf(f, fallback_name);
  std::vector<Conversion> jobs;
  const auto want = [&](const std::string& name, const std::vector<int64_t>& shape, std::vector<float>& dst) {
    const GgufTensorInfo* info = f.find_tensor(name);
    SEER_CHECK(info != nullptr, "gguf: missing tensor '", name, "'");
    const std::vector<int64_t> expected(shape.rbegin(), shape.rend());  // ggml lists the fastest dimension first
    SEER_CHECK(info->dims == expected, "gguf: tensor '", name, "' has ggml dims ", shape_text(info->dims),
               ", expected ", shape_text(expected));
    jobs.push_back({name, &dst});
  };
  for_each_tensor(w, kGgufNames, want);
  convert_all(jobs, [&](const std::string& name) { return f.dequantize(*f.find_tensor(name)); });
  // Only llama.cpp's llama converter permutes Q and K; qwen2 keeps Hugging Face's order (NeoX RoPE).
  if (w.config.architecture == "llama") {
    const LlamaConfig& c = w.config;
    for (LlamaLayerWeights& L : w.layers) {
      unpermute_rope_rows(L.wq, c.q_heads, c.head_dim, c.hidden);
      unpermute_rope_rows(L.wk, c.kv_heads, c.head_dim, c.hidden);
      if (c.qkv_bias) {
        unpermute_rope_rows(L.bq, c.q_heads, c.head_dim, 1);
        unpermute_rope_rows(L.bk, c.kv_heads, c.head_dim, 1);
      }
    }
  }
  return w;
}

LlamaConfig llama_config_from_hf(const SafetensorsModel& model, const std::string& dir) {
  const HfConfig& h = model.config();
  LlamaConfig c;
  c.architecture = std::string(architecture_name(h.architecture));
  fs::path named = fs::path(dir).lexically_normal();
  if (named.filename().empty()) named = named.parent_path();  // "dir/"
  c.name = named.filename().string();
  c.layers = to_int(h.num_layers, "config.json: num_hidden_layers");
  c.hidden = to_int(h.hidden_size, "config.json: hidden_size");
  c.q_heads = to_int(h.num_heads, "config.json: num_attention_heads");
  c.kv_heads = to_int(h.num_kv_heads, "config.json: num_key_value_heads");
  c.head_dim = to_int(h.head_dim, "config.json: head_dim");
  c.intermediate = to_int(h.intermediate_size, "config.json: intermediate_size");
  c.vocab = to_int(h.vocab_size, "config.json: vocab_size");
  c.rms_eps = h.rms_norm_eps;
  c.rope = h.rope;
  c.max_positions = to_int(h.max_position_embeddings, "config.json: max_position_embeddings");
  c.tied_embeddings = h.tie_word_embeddings;
  c.qkv_bias =
      h.architecture == HfConfig::Architecture::qwen2 || model.find("model.layers.0.self_attn.q_proj.bias") != nullptr;
  const nlohmann::json config_json = read_json(fs::path(dir) / "config.json");
  c.bos = json_token_id(config_json, "bos_token_id");
  c.eos = json_token_id(config_json, "eos_token_id");
  if (fs::exists(fs::path(dir) / "tokenizer_config.json")) {
    const nlohmann::json t = read_json(fs::path(dir) / "tokenizer_config.json");
    if (t.contains("add_bos_token") && t["add_bos_token"].is_boolean()) c.add_bos = t["add_bos_token"].get<bool>();
  }
  try {
    c.validate();
  } catch (const Error& e) {
    fail(dir, ": ", e.what());
  }
  return c;
}

LlamaWeights load_llama_hf(const SafetensorsModel& model, const std::string& dir) {
  LlamaWeights w;
  w.config = llama_config_from_hf(model, dir);
  std::vector<Conversion> jobs;
  const auto want = [&](const std::string& name, const std::vector<int64_t>& shape, std::vector<float>& dst) {
    const SafetensorsTensor* t = model.find(name);
    SEER_CHECK(t != nullptr, dir, ": missing tensor '", name, "'");
    SEER_CHECK(t->shape == shape, dir, ": tensor '", name, "' has shape ", shape_text(t->shape), ", expected ",
               shape_text(shape));
    jobs.push_back({name, &dst});
  };
  for_each_tensor(w, kHfNames, want);
  convert_all(jobs, [&](const std::string& name) { return model.to_float(name); });
  return w;
}

void unpermute_rope_rows(std::vector<float>& rows, int heads, int head_dim, int64_t row_length) {
  SEER_CHECK(int64_t(rows.size()) == int64_t(heads) * head_dim * row_length, "unpermute_rope_rows: ", rows.size(),
             " values, expected ", heads, " heads x ", head_dim, " rows x ", row_length);
  const int half = head_dim / 2;
  const size_t row = size_t(row_length);
  std::vector<float> head(size_t(head_dim) * row);
  for (int h = 0; h < heads; ++h) {
    float* base = rows.data() + size_t(h) * size_t(head_dim) * row;
    std::copy(base, base + head.size(), head.begin());
    for (int s = 0; s < 2; ++s)
      for (int i = 0; i < half; ++i)
        std::copy_n(head.data() + size_t(2 * i + s) * row, row, base + size_t(s * half + i) * row);
  }
}

LlamaWeights load_llama(const std::string& path) {
  if (is_gguf_path(path)) {
    const GgufFile file = GgufFile::open(path);
    return load_llama_gguf(file, fs::path(path).stem().string());
  }
  const SafetensorsModel model = SafetensorsModel::open(path);
  return load_llama_hf(model, path);
}

Tokenizer load_llama_tokenizer(const std::string& path) {
  if (is_gguf_path(path)) return Tokenizer::from_spec(spec_from_gguf(GgufFile::open(path)));
  return Tokenizer::from_json_file((fs::path(path) / "tokenizer.json").string());
}

}  // namespace seer
