// The loaders and the forward pass on tiny random models written both ways: a Hugging Face
// directory (config.json + model.safetensors) and a llama.cpp-style GGUF with Q/K rows permuted for
// interleaved RoPE. Both must load to the same weights, and the CPU forward must match a plain
// double-precision forward pass written here from the textbook formulas.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>

#include "formats/gguf_builder.h"
#include "formats/safetensors.h"
#include "model/forward_cpu.h"
#include "model/gates.h"
#include "model/llama_loader.h"
#include "test_support.h"

namespace seer {
namespace {

namespace fs = std::filesystem;
using test::TempDir;
using testing::Bytes;

struct Tiny {
  std::string arch = "llama";
  int layers = 2, hidden = 32, q_heads = 4, kv_heads = 2, head_dim = 8, intermediate = 48, vocab = 50;
  double theta = 10000.0, eps = 1e-5;
  bool tied = false, bias = false;
  std::map<std::string, std::vector<int64_t>> shapes;  // Hugging Face names, PyTorch shapes
  std::map<std::string, std::vector<float>> values;

  void add(const std::string& name, std::vector<int64_t> shape, std::mt19937_64& rng, float mean, float std) {
    std::normal_distribution<float> normal(mean, std);
    int64_t n = 1;
    for (const int64_t s : shape) n *= s;
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = normal(rng);
    shapes[name] = std::move(shape);
    values[name] = std::move(v);
  }

  static Tiny make(std::string arch, bool tied, bool bias, uint64_t seed) {
    Tiny t;
    t.arch = std::move(arch);
    t.tied = tied;
    t.bias = bias;
    std::mt19937_64 rng(seed);
    const int64_t qr = t.q_heads * t.head_dim, kr = t.kv_heads * t.head_dim;
    t.add("model.embed_tokens.weight", {t.vocab, t.hidden}, rng, 0.0f, 1.0f);
    t.add("model.norm.weight", {t.hidden}, rng, 1.0f, 0.1f);
    if (!tied) t.add("lm_head.weight", {t.vocab, t.hidden}, rng, 0.0f, 0.3f);
    for (int l = 0; l < t.layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      t.add(p + "input_layernorm.weight", {t.hidden}, rng, 1.0f, 0.1f);
      t.add(p + "self_attn.q_proj.weight", {qr, t.hidden}, rng, 0.0f, 0.3f);
      t.add(p + "self_attn.k_proj.weight", {kr, t.hidden}, rng, 0.0f, 0.3f);
      t.add(p + "self_attn.v_proj.weight", {kr, t.hidden}, rng, 0.0f, 0.3f);
      t.add(p + "self_attn.o_proj.weight", {t.hidden, qr}, rng, 0.0f, 0.3f);
      if (bias) {
        t.add(p + "self_attn.q_proj.bias", {qr}, rng, 0.0f, 0.5f);
        t.add(p + "self_attn.k_proj.bias", {kr}, rng, 0.0f, 0.5f);
        t.add(p + "self_attn.v_proj.bias", {kr}, rng, 0.0f, 0.5f);
      }
      t.add(p + "post_attention_layernorm.weight", {t.hidden}, rng, 1.0f, 0.1f);
      t.add(p + "mlp.gate_proj.weight", {t.intermediate, t.hidden}, rng, 0.0f, 0.3f);
      t.add(p + "mlp.up_proj.weight", {t.intermediate, t.hidden}, rng, 0.0f, 0.3f);
      t.add(p + "mlp.down_proj.weight", {t.hidden, t.intermediate}, rng, 0.0f, 0.3f);
    }
    return t;
  }

  const std::vector<float>& at(const std::string& name) const { return values.at(name); }
};

// llama.cpp's converter order: within each head, Hugging Face row s*d/2 + i is stored as row 2i + s.
std::vector<float> permute_like_llama_cpp(const std::vector<float>& hf, int heads, int d, int64_t row) {
  std::vector<float> out(hf.size());
  for (int h = 0; h < heads; ++h)
    for (int s = 0; s < 2; ++s)
      for (int i = 0; i < d / 2; ++i)
        std::memcpy(out.data() + (size_t(h) * d + 2 * i + s) * row, hf.data() + (size_t(h) * d + s * d / 2 + i) * row,
                    size_t(row) * sizeof(float));
  return out;
}

Bytes float_bytes(const std::vector<float>& v) {
  Bytes b(v.size() * sizeof(float));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// The GGUF a llama.cpp conversion of `t` would give (float32 tensors); `skip` leaves a tensor out
// and `swap` stores one with its two dimensions exchanged.
Bytes to_gguf(const Tiny& t, const std::string& skip = "", const std::string& swap = "") {
  testing::GgufBuilder b;
  const auto u32 = [](int v) { return testing::scalar<uint32_t>(uint32_t(v)); };
  const std::string a = t.arch + ".";
  b.kv("general.architecture", GgufType::string, testing::string_value(t.arch));
  b.kv("general.name", GgufType::string, testing::string_value("tiny"));
  b.kv(a + "block_count", GgufType::uint32, u32(t.layers));
  b.kv(a + "context_length", GgufType::uint32, u32(256));
  b.kv(a + "embedding_length", GgufType::uint32, u32(t.hidden));
  b.kv(a + "feed_forward_length", GgufType::uint32, u32(t.intermediate));
  b.kv(a + "attention.head_count", GgufType::uint32, u32(t.q_heads));
  b.kv(a + "attention.head_count_kv", GgufType::uint32, u32(t.kv_heads));
  b.kv(a + "rope.freq_base", GgufType::float32, testing::scalar<float>(float(t.theta)));
  b.kv(a + "attention.layer_norm_rms_epsilon", GgufType::float32, testing::scalar<float>(float(t.eps)));
  b.kv(a + "vocab_size", GgufType::uint32, u32(t.vocab));
  b.kv("tokenizer.ggml.bos_token_id", GgufType::uint32, u32(1));
  b.kv("tokenizer.ggml.eos_token_id", GgufType::uint32, u32(2));
  const std::pair<std::string, std::string> renames[] = {{"input_layernorm.weight", "attn_norm.weight"},
                                                         {"self_attn.q_proj.weight", "attn_q.weight"},
                                                         {"self_attn.k_proj.weight", "attn_k.weight"},
                                                         {"self_attn.v_proj.weight", "attn_v.weight"},
                                                         {"self_attn.o_proj.weight", "attn_output.weight"},
                                                         {"self_attn.q_proj.bias", "attn_q.bias"},
                                                         {"self_attn.k_proj.bias", "attn_k.bias"},
                                                         {"self_attn.v_proj.bias", "attn_v.bias"},
                                                         {"post_attention_layernorm.weight", "ffn_norm.weight"},
                                                         {"mlp.gate_proj.weight", "ffn_gate.weight"},
                                                         {"mlp.up_proj.weight", "ffn_up.weight"},
                                                         {"mlp.down_proj.weight", "ffn_down.weight"}};
  for (const auto& [hf, shape] : t.shapes) {
    std::string name;
    std::vector<float> v = t.at(hf);
    if (hf == "model.embed_tokens.weight") name = "token_embd.weight";
    if (hf == "model.norm.weight") name = "output_norm.weight";
    if (hf == "lm_head.weight") name = "output.weight";
    for (const auto& [from, to] : renames) {
      const size_t at = hf.find(from);
      if (at == std::string::npos || at + from.size() != hf.size()) continue;
      const std::string layer = hf.substr(std::strlen("model.layers."), at - 1 - std::strlen("model.layers."));
      name = "blk." + layer + "." + to;
      const int64_t row = shape.size() == 2 ? shape[1] : 1;
      if (t.arch == "llama" && (to == "attn_q.weight" || to == "attn_q.bias"))
        v = permute_like_llama_cpp(v, t.q_heads, t.head_dim, row);
      if (t.arch == "llama" && (to == "attn_k.weight" || to == "attn_k.bias"))
        v = permute_like_llama_cpp(v, t.kv_heads, t.head_dim, row);
    }
    if (name == skip) continue;
    std::vector<uint64_t> dims(shape.rbegin(), shape.rend());
    if (name == swap) std::swap(dims[0], dims[1]);
    b.tensor(name, dims, GgmlType::f32, float_bytes(v));
  }
  return b.build();
}


void write_hf(const Tiny& t, const fs::path& dir) {
  std::ofstream(dir / "config.json") << "{\"model_type\": \"" << t.arch << "\", \"hidden_size\": " << t.hidden
                                     << ", \"num_hidden_layers\": " << t.layers
                                     << ", \"num_attention_heads\": " << t.q_heads
                                     << ", \"num_key_value_heads\": " << t.kv_heads
                                     << ", \"intermediate_size\": " << t.intermediate << ", \"vocab_size\": " << t.vocab
                                     << ", \"max_position_embeddings\": 256, \"rms_norm_eps\": " << t.eps
                                     << ", \"rope_theta\": " << t.theta
                                     << ", \"tie_word_embeddings\": " << (t.tied ? "true" : "false")
                                     << ", \"bos_token_id\": 1, \"eos_token_id\": [2, 3]}";
  std::vector<SafetensorsWriteTensor> tensors;
  for (const auto& [name, shape] : t.shapes)
    tensors.push_back({name,
                       SafetensorsDtype::f32,
                       shape,
                       {reinterpret_cast<const uint8_t*>(t.at(name).data()), t.at(name).size() * sizeof(float)}});
  write_safetensors((dir / "model.safetensors").string(), tensors);
}

// The forward pass in double, one token and one head at a time.
std::vector<std::vector<double>> naive_logits(const Tiny& t, const std::vector<int32_t>& ids) {
  const auto W = [&](const std::string& name) { return t.at(name); };
  const auto matvec = [](const std::vector<float>& w, const std::vector<double>& x, size_t out) {
    std::vector<double> y(out, 0.0);
    for (size_t o = 0; o < out; ++o)
      for (size_t i = 0; i < x.size(); ++i) y[o] += double(w[o * x.size() + i]) * x[i];
    return y;
  };
  const auto norm = [&](const std::vector<double>& x, const std::vector<float>& w) {
    double ss = 0;
    for (const double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / double(x.size()) + t.eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
    return y;
  };
  const size_t T = ids.size(), d = size_t(t.head_dim), qr = size_t(t.q_heads) * d, kr = size_t(t.kv_heads) * d;
  const auto rope = [&](std::vector<double>& v, size_t heads, size_t pos) {
    for (size_t h = 0; h < heads; ++h)
      for (size_t i = 0; i < d / 2; ++i) {
        const double angle = double(pos) * std::pow(t.theta, -2.0 * double(i) / double(d));
        const double a = v[h * d + i], b = v[h * d + i + d / 2];
        v[h * d + i] = a * std::cos(angle) - b * std::sin(angle);
        v[h * d + i + d / 2] = b * std::cos(angle) + a * std::sin(angle);
      }
  };
  std::vector<std::vector<double>> x(T);
  for (size_t p = 0; p < T; ++p) {
    const std::vector<float>& e = W("model.embed_tokens.weight");
    x[p].assign(e.begin() + std::ptrdiff_t(size_t(ids[p]) * size_t(t.hidden)),
                e.begin() + std::ptrdiff_t(size_t(ids[p] + 1) * size_t(t.hidden)));
  }
  for (int l = 0; l < t.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<std::vector<double>> q(T), k(T), v(T);
    for (size_t s = 0; s < T; ++s) {
      const std::vector<double> h = norm(x[s], W(p + "input_layernorm.weight"));
      q[s] = matvec(W(p + "self_attn.q_proj.weight"), h, qr);
      k[s] = matvec(W(p + "self_attn.k_proj.weight"), h, kr);
      v[s] = matvec(W(p + "self_attn.v_proj.weight"), h, kr);
      if (t.bias) {
        for (size_t i = 0; i < qr; ++i) q[s][i] += W(p + "self_attn.q_proj.bias")[i];
        for (size_t i = 0; i < kr; ++i) k[s][i] += W(p + "self_attn.k_proj.bias")[i];
        for (size_t i = 0; i < kr; ++i) v[s][i] += W(p + "self_attn.v_proj.bias")[i];
      }
      rope(q[s], size_t(t.q_heads), s);
      rope(k[s], size_t(t.kv_heads), s);
    }
    for (size_t s = 0; s < T; ++s) {
      std::vector<double> attn(qr, 0.0);
      for (size_t h = 0; h < size_t(t.q_heads); ++h) {
        const size_t kv = h / size_t(t.q_heads / t.kv_heads);
        std::vector<double> score(s + 1);
        double max = -1e300, sum = 0;
        for (size_t c = 0; c <= s; ++c) {
          double dot = 0;
          for (size_t i = 0; i < d; ++i) dot += q[s][h * d + i] * k[c][kv * d + i];
          score[c] = dot / std::sqrt(double(d));
          max = std::max(max, score[c]);
        }
        for (size_t c = 0; c <= s; ++c) sum += score[c] = std::exp(score[c] - max);
        for (size_t c = 0; c <= s; ++c)
          for (size_t i = 0; i < d; ++i) attn[h * d + i] += score[c] / sum * v[c][kv * d + i];
      }
      const std::vector<double> o = matvec(W(p + "self_attn.o_proj.weight"), attn, size_t(t.hidden));
      for (size_t i = 0; i < o.size(); ++i) x[s][i] += o[i];
      const std::vector<double> h = norm(x[s], W(p + "post_attention_layernorm.weight"));
      std::vector<double> g = matvec(W(p + "mlp.gate_proj.weight"), h, size_t(t.intermediate));
      const std::vector<double> u = matvec(W(p + "mlp.up_proj.weight"), h, size_t(t.intermediate));
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      const std::vector<double> down = matvec(W(p + "mlp.down_proj.weight"), g, size_t(t.hidden));
      for (size_t i = 0; i < down.size(); ++i) x[s][i] += down[i];
    }
  }
  std::vector<std::vector<double>> logits(T);
  for (size_t s = 0; s < T; ++s)
    logits[s] = matvec(W(t.tied ? "model.embed_tokens.weight" : "lm_head.weight"), norm(x[s], W("model.norm.weight")),
                       size_t(t.vocab));
  return logits;
}

double max_logit_error(const LlamaWeights& weights, const Tiny& t, const std::vector<int32_t>& ids) {
  const std::vector<std::vector<double>> ref = naive_logits(t, ids);
  CpuForwardOptions options;
  options.chunk = 48;  // several chunks, one crossing a 64-token tile
  LlamaCpu model(weights, options);
  double worst = 0.0;
  model.forward(ids, 0, [&](int64_t index, std::span<const float> logits) {
    for (size_t v = 0; v < logits.size(); ++v)
      worst = std::max(worst, std::abs(double(logits[v]) - ref[size_t(index)][v]));
  });
  return worst;
}

std::vector<int32_t> token_ids(int count, int vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) ids[size_t(i)] = int32_t((i * 17 + 3) % vocab);
  return ids;
}

TEST(Unpermute, PutsInterleavedRowsBackInRotateHalfOrder) {
  // One head of dimension 4: stored rows are HF rows 0, 2, 1, 3.
  std::vector<float> rows = {10, 12, 11, 13};
  unpermute_rope_rows(rows, 1, 4, 1);
  EXPECT_EQ(rows, (std::vector<float>{10, 11, 12, 13}));
  // Two heads, rows of length 2.
  std::vector<float> two = {0, 0, 2, 2, 1, 1, 3, 3, 4, 4, 6, 6, 5, 5, 7, 7};
  unpermute_rope_rows(two, 2, 4, 2);
  EXPECT_EQ(two, (std::vector<float>{0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7}));
  EXPECT_THROW(unpermute_rope_rows(two, 3, 4, 2), Error);
}

TEST(Loader, GgufAndSafetensorsGiveTheSameWeights) {
  const Tiny t = Tiny::make("llama", false, false, 1);
  const Bytes bytes = to_gguf(t);
  const LlamaWeights g = load_llama_gguf(GgufFile::from_memory(bytes), "fallback");
  TempDir dir;
  write_hf(t, dir.path());
  const LlamaWeights h = load_llama(dir.path().string());

  EXPECT_EQ(g.config.name, "tiny");
  EXPECT_EQ(h.config.name, dir.path().filename().string());
  for (const LlamaWeights* w : {&g, &h}) {
    EXPECT_EQ(w->config.architecture, "llama");
    EXPECT_EQ(w->config.layers, 2);
    EXPECT_EQ(w->config.q_heads, 4);
    EXPECT_EQ(w->config.kv_heads, 2);
    EXPECT_EQ(w->config.head_dim, 8);
    EXPECT_EQ(w->config.bos, 1);
    EXPECT_EQ(w->config.eos, 2);
    EXPECT_FALSE(w->config.tied_embeddings);
  }
  EXPECT_EQ(g.embed, h.embed);
  EXPECT_EQ(g.lm_head, h.lm_head);
  EXPECT_EQ(g.final_norm, h.final_norm);
  for (size_t l = 0; l < 2; ++l) {
    const LlamaLayerWeights &a = g.layers[l], &b = h.layers[l];
    EXPECT_EQ(a.wq, b.wq) << "layer " << l;
    EXPECT_EQ(a.wk, b.wk) << "layer " << l;
    EXPECT_EQ(a.wv, b.wv);
    EXPECT_EQ(a.wo, b.wo);
    EXPECT_EQ(a.w_gate, b.w_gate);
    EXPECT_EQ(a.w_up, b.w_up);
    EXPECT_EQ(a.w_down, b.w_down);
    EXPECT_EQ(a.attn_norm, b.attn_norm);
    EXPECT_EQ(a.ffn_norm, b.ffn_norm);
  }
}

TEST(Loader, ForwardMatchesPlainDoubleForward) {
  const std::vector<int32_t> ids = token_ids(70, 50);
  {
    const Tiny t = Tiny::make("llama", false, false, 2);
    const double error = max_logit_error(load_llama_gguf(GgufFile::from_memory(to_gguf(t)), ""), t, ids);
    EXPECT_LT(error, 1e-4) << "llama from GGUF";
  }
  {
    const Tiny t = Tiny::make("qwen2", true, true, 3);  // biases, tied embeddings
    TempDir dir;
    write_hf(t, dir.path());
    const LlamaWeights w = load_llama(dir.path().string());
    EXPECT_TRUE(w.config.qkv_bias);
    EXPECT_TRUE(w.config.tied_embeddings);
    EXPECT_TRUE(w.lm_head.empty());
    EXPECT_LT(max_logit_error(w, t, ids), 1e-4) << "qwen2 from safetensors";
  }
}

std::string load_error(const Bytes& bytes) {
  try {
    load_llama_gguf(GgufFile::from_memory(bytes), "");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Loader, NamesTheTensorThatIsMissingOrMisshapen) {
  const Tiny t = Tiny::make("llama", false, false, 4);
  EXPECT_NE(load_error(to_gguf(t, "blk.1.ffn_up.weight")).find("missing tensor 'blk.1.ffn_up.weight'"),
            std::string::npos);
  const std::string swapped = load_error(to_gguf(t, "", "blk.0.attn_k.weight"));
  EXPECT_NE(swapped.find("blk.0.attn_k.weight"), std::string::npos) << swapped;
  EXPECT_NE(swapped.find("expected [32, 16]"), std::string::npos) << swapped;
  Tiny other = t;
  other.arch = "gpt2";
  EXPECT_NE(load_error(to_gguf(other)).find("'gpt2' is not supported"), std::string::npos);

  TempDir dir;
  write_hf(t, dir.path());
  fs::remove(dir.path() / "model.safetensors");
  EXPECT_THROW(load_llama(dir.path().string()), Error);
  EXPECT_THROW(load_llama((dir.path() / "absent.gguf").string()), Error);
}

// The model shape the gates tests load for: 4 query and 2 KV heads of dimension 8.
LlamaConfig gate_test_config(int layers) {
  LlamaConfig c;
  c.layers = layers;
  c.q_heads = 4;
  c.kv_heads = 2;
  c.head_dim = 8;
  return c;
}

// Gate checkpoints: per layer mask_linear_k [H_q, 3d, d_g] when d_g == d; mask_linear_q [H_q, d, d_g]
// and mask_linear_k [H_kv, 3d, d_g] when d_g != d.
TEST(Gates, LoadFromSafetensors) {
  LlamaConfig c = gate_test_config(2);
  TempDir dir;
  // bias_layers: the first so many layers get a block_bias of shape bias_shape.
  const auto write = [&](int gate_dim, bool with_q, int layers, const std::string& file, int k_heads = 4,
                         int bias_layers = 0, std::vector<int64_t> bias_shape = {4, kBiasColumns}, int q_in = 8,
                         std::map<std::string, std::string> metadata = {{"seerattn_gate_block_size", "64"}}) {
    std::vector<std::vector<float>> data;
    std::vector<SafetensorsWriteTensor> tensors;
    std::mt19937_64 rng(9);
    std::normal_distribution<float> normal;
    const auto add = [&](const std::string& name, std::vector<int64_t> shape) {
      data.emplace_back(size_t(shape[0] * shape[1] * (shape.size() > 2 ? shape[2] : 1)));
      for (float& x : data.back()) x = normal(rng);
      tensors.push_back({name,
                         SafetensorsDtype::f32,
                         shape,
                         {reinterpret_cast<const uint8_t*>(data.back().data()), data.back().size() * sizeof(float)}});
    };
    for (int l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".self_attn.attn_gate.";
      add(p + "mask_linear_k.weight", {k_heads, 24, gate_dim});
      if (with_q) add(p + "mask_linear_q.weight", {4, q_in, gate_dim});
      if (l < bias_layers) add(p + "block_bias", bias_shape);
    }
    write_safetensors((dir.path() / file).string(), tensors, metadata);
    return data;
  };
  const std::vector<std::vector<float>> plain = write(8, false, 2, "plain.safetensors");
  const std::vector<GateWeights<float>> gates = load_gates((dir.path() / "plain.safetensors").string(), c);
  ASSERT_EQ(gates.size(), 2u);
  EXPECT_EQ(gates[1].config.gate_dim, 8);
  EXPECT_FALSE(gates[1].config.has_q_proj());
  EXPECT_EQ(gates[1].wk, plain[1]);

  const std::vector<std::vector<float>> projected = write(4, true, 2, "projected.safetensors", 2);
  const std::vector<GateWeights<float>> small = load_gates((dir.path() / "projected.safetensors").string(), c);
  EXPECT_TRUE(small[0].config.has_q_proj());
  EXPECT_EQ(small[1].wk, projected[2]);  // [H_kv, 3d, d_g]
  EXPECT_EQ(small[1].wq, projected[3]);
  write(4, true, 2, "per_q_head_k.safetensors", 4);  // W_k per query head beside W_q: not the reference's
  EXPECT_THROW(load_gates((dir.path() / "per_q_head_k.safetensors").string(), c), Error);
  write(8, true, 2, "force_double.safetensors");  // W_q although d_g == d: refused, not ignored
  EXPECT_THROW(load_gates((dir.path() / "force_double.safetensors").string(), c), Error);
  write(4, false, 2, "no_q.safetensors", 2);
  EXPECT_THROW(load_gates((dir.path() / "no_q.safetensors").string(), c), Error);
  // seer's block bias [H_q, 10], in every layer or none.
  const std::vector<std::vector<float>> biased = write(8, false, 2, "biased.safetensors", 4, 2);
  const std::vector<GateWeights<float>> with_bias = load_gates((dir.path() / "biased.safetensors").string(), c);
  EXPECT_TRUE(with_bias[1].config.has_block_bias);
  EXPECT_EQ(with_bias[1].bias, biased[3]);
  EXPECT_FALSE(gates[1].config.has_block_bias);
  EXPECT_TRUE(gates[1].bias.empty());
  write(8, false, 2, "bias_in_one_layer.safetensors", 4, 1);
  EXPECT_THROW(load_gates((dir.path() / "bias_in_one_layer.safetensors").string(), c), Error);
  write(8, false, 2, "bias_misshapen.safetensors", 4, 2, {4, 9});
  EXPECT_THROW(load_gates((dir.path() / "bias_misshapen.safetensors").string(), c), Error);
  // Qmaxminavg: W_q [H_q, 3d, d_g], also at d_g == d, and W_k per KV head; its gate type, when
  // recorded, must match.
  const std::vector<std::vector<float>> extremes = write(8, true, 2, "extremes.safetensors", 2, 0, {}, 24);
  const std::vector<GateWeights<float>> qmaxmin = load_gates((dir.path() / "extremes.safetensors").string(), c);
  EXPECT_EQ(qmaxmin[1].config.q_pools, 3);
  EXPECT_EQ(qmaxmin[1].wq, extremes[3]);
  EXPECT_STREQ(gate_type_name(qmaxmin[1].config), "Qmaxminavg_Kmaxminavg");
  write(8, true, 2, "extremes_typed.safetensors", 2, 0, {}, 24, {{"seerattn_gate_type", "Qmaxminavg_Kmaxminavg"}});
  EXPECT_NO_THROW(load_gates((dir.path() / "extremes_typed.safetensors").string(), c));
  write(8, true, 2, "extremes_mistyped.safetensors", 2, 0, {}, 24, {{"seerattn_gate_type", "Qavg_Kmaxminavg"}});
  EXPECT_THROW(load_gates((dir.path() / "extremes_mistyped.safetensors").string(), c), Error);
  write(8, false, 2, "unknown_type.safetensors", 4, 0, {}, 8, {{"seerattn_gate_type", "Qavg_Kavg"}});
  EXPECT_THROW(load_gates((dir.path() / "unknown_type.safetensors").string(), c), Error);
  write(8, true, 2, "q_in_16.safetensors", 2, 0, {}, 16);  // neither d nor 3d
  EXPECT_THROW(load_gates((dir.path() / "q_in_16.safetensors").string(), c), Error);
  write(8, false, 1, "one_layer.safetensors");
  EXPECT_THROW(load_gates((dir.path() / "one_layer.safetensors").string(), c), Error);
  c.q_heads = 8;
  EXPECT_THROW(load_gates((dir.path() / "plain.safetensors").string(), c), Error);
}

// Gate weights stored as I8 beside a scale per head and output column ([heads, 1, d_g]):
// w[h][i][j] = q[h][i][j] · scale[h][j], for W_k and W_q alike; a missing, misshapen or negative
// scale, or a scale beside a float weight, is refused.
TEST(Gates, LoadInt8WeightsWithScales) {
  const LlamaConfig c = gate_test_config(1);
  TempDir dir;
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int> code(-127, 127);
  std::uniform_real_distribution<float> positive(0.001f, 0.1f);
  const std::string p = "model.layers.0.self_attn.attn_gate.";
  struct Quantized {
    std::vector<int8_t> q;
    std::vector<float> scale, expected;
  };
  const auto quantized = [&](int64_t heads, int64_t in, int64_t cols) {
    Quantized w;
    w.q.resize(size_t(heads * in * cols));
    w.scale.resize(size_t(heads * cols));
    for (int8_t& x : w.q) x = int8_t(code(rng));
    for (float& x : w.scale) x = positive(rng);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < in; ++i)
        for (int64_t j = 0; j < cols; ++j)
          w.expected.push_back(float(w.q[size_t((h * in + i) * cols + j)]) * w.scale[size_t(h * cols + j)]);
    return w;
  };
  const auto bytes = [](const auto& v) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(v[0]));
  };
  const Quantized wk = quantized(2, 24, 4), wq = quantized(4, 8, 4);
  const auto write = [&](const std::string& file, std::vector<int64_t> k_scale_shape, bool with_k_scale = true,
                         const std::vector<float>* k_scale = nullptr) {
    std::vector<SafetensorsWriteTensor> t{
        {p + "mask_linear_k.weight", SafetensorsDtype::i8, {2, 24, 4}, bytes(wk.q)},
        {p + "mask_linear_q.weight", SafetensorsDtype::i8, {4, 8, 4}, bytes(wq.q)},
        {p + "mask_linear_q.weight_scale", SafetensorsDtype::f32, {4, 1, 4}, bytes(wq.scale)}};
    if (with_k_scale)
      t.push_back({p + "mask_linear_k.weight_scale", SafetensorsDtype::f32, k_scale_shape,
                   bytes(k_scale ? *k_scale : wk.scale)});
    write_safetensors((dir.path() / file).string(), t, {});
    return (dir.path() / file).string();
  };
  const std::vector<GateWeights<float>> gates = load_gates(write("int8.safetensors", {2, 1, 4}), c);
  EXPECT_EQ(gates[0].config.gate_dim, 4);
  EXPECT_EQ(gates[0].wk, wk.expected);
  EXPECT_EQ(gates[0].wq, wq.expected);
  // Each refusal for its own reason: the message names it.
  const auto expect_refused = [&](const std::string& path, const std::string& reason) {
    std::string message = "(loaded)";
    try {
      load_gates(path, c);
    } catch (const Error& e) {
      message = e.what();
    }
    EXPECT_NE(message.find(reason), std::string::npos) << message;
  };
  expect_refused(write("no_scale.safetensors", {}, false), "is I8 and needs");
  expect_refused(write("scale_per_head.safetensors", {2, 4, 1}), "must be [2, 1, 4]");
  for (const float bad : {-0.5f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> scale = wk.scale;
    scale[5] = bad;
    expect_refused(write("bad_scale.safetensors", {2, 1, 4}, true, &scale), "_scale' holds");
  }
  // A scale beside a float weight would be ignored by any reader of the float: refused.
  std::vector<float> wk_float = wk.expected;
  const std::vector<SafetensorsWriteTensor> float_with_scale{
      {p + "mask_linear_k.weight", SafetensorsDtype::f32, {2, 24, 4}, bytes(wk_float)},
      {p + "mask_linear_k.weight_scale", SafetensorsDtype::f32, {2, 1, 4}, bytes(wk.scale)},
      {p + "mask_linear_q.weight", SafetensorsDtype::i8, {4, 8, 4}, bytes(wq.q)},
      {p + "mask_linear_q.weight_scale", SafetensorsDtype::f32, {4, 1, 4}, bytes(wq.scale)}};
  write_safetensors((dir.path() / "float_with_scale.safetensors").string(), float_with_scale, {});
  expect_refused((dir.path() / "float_with_scale.safetensors").string(), "which is F32, not I8");
}

// The shipped gates: under 1 MB (issue 7's size target), their 60 projections (W_k and W_q of 30
// layers) int8 as scripts/quantize_gates.py --format int8 writes them, so that in every head's
// output column the largest code is ±127 (the scale is the column's largest |w| over 127), and
// loading for the built-in model's heads with d_g = 16.
TEST(Gates, ShippedGatesAreInt8AndUnderOneMegabyte) {
  const std::string path = (std::filesystem::path(SEER_SOURCE_DIR) / kBuiltinGates).string();
  EXPECT_LT(std::filesystem::file_size(path), 1000000u);
  const SafetensorsFile file = SafetensorsFile::open(path);
  int projections = 0;
  for (const SafetensorsTensor& t : file.tensors()) {
    if (t.dtype != SafetensorsDtype::i8) continue;
    ASSERT_EQ(t.shape.size(), 3u) << t.name;
    const std::span<const uint8_t> q = file.data(t.name);
    const std::vector<float> scale = file.to_float(t.name + "_scale");
    const int64_t rows = t.shape[1], cols = t.shape[2];
    for (int64_t h = 0; h < t.shape[0]; ++h)
      for (int64_t j = 0; j < cols; ++j) {
        int largest = 0;
        for (int64_t i = 0; i < rows; ++i)
          largest = std::max(largest, std::abs(int(int8_t(q[size_t((h * rows + i) * cols + j)]))));
        EXPECT_EQ(largest, scale[size_t(h * cols + j)] > 0 ? 127 : 0) << t.name << " head " << h << " column " << j;
      }
    ++projections;
  }
  EXPECT_EQ(projections, 60);
  LlamaConfig c = gate_test_config(30);
  c.q_heads = 9;
  c.kv_heads = 3;
  c.head_dim = 64;
  EXPECT_EQ(load_gates(path, c).front().config.gate_dim, 16);
}

// A one-layer gates file (mask_linear_k [1, 6, 4] of 0.5s) written with the metadata given: for the
// tests of what the metadata carries. Not copyable (the tensor points into w).
struct TinyGates {
  std::vector<float> w = std::vector<float>(24, 0.5f);
  SafetensorsWriteTensor t{"model.layers.0.self_attn.attn_gate.mask_linear_k.weight", SafetensorsDtype::f32,
                           {1, 6, 4}, {reinterpret_cast<const uint8_t*>(w.data()), w.size() * sizeof(float)}};
  TinyGates() = default;
  TinyGates(const TinyGates&) = delete;
  void write(const std::string& path, const std::map<std::string, std::string>& metadata) const {
    write_safetensors(path, std::span(&t, 1), metadata);
  }
};

// Calibrated budgets ride in the gates file's metadata: written beside unchanged tensors, read back,
// and rejected when malformed.
TEST(Loader, GateBudgetsRoundTrip) {
  TempDir dir;
  const std::string plain = (dir.path() / "plain.safetensors").string();
  const TinyGates gates;
  const std::vector<float>& w = gates.w;
  const SafetensorsWriteTensor& t = gates.t;
  gates.write(plain, {{"seerattn_gate_block_size", "64"}});
  EXPECT_TRUE(load_gate_budgets(plain, 1).layer_mass.empty());
  EXPECT_THROW(GateBudgets{}.masses_for(0.1), Error);

  GateBudgets b{.layer_mass = {{0.1, {0.55}}, {0.3, {0.9}}, {0.123456789, {0.7}}}, .keep_sink = true,
                .local_blocks = 3, .context = 8192,
                .calibration = "test"};
  const std::string out = (dir.path() / "calibrated.safetensors").string();
  save_gate_budgets(plain, out, b);
  const GateBudgets got = load_gate_budgets(out, 1);
  EXPECT_EQ(got.layer_mass, b.layer_mass);
  EXPECT_EQ(got.masses_for(0.3), std::vector<double>{0.9});
  EXPECT_EQ(got.masses_for(0.123456789), std::vector<double>{0.7});  // densities keep every digit
  EXPECT_THROW(got.masses_for(0.2), Error);
  EXPECT_TRUE(got.keep_sink);
  EXPECT_EQ(got.local_blocks, 3);
  EXPECT_EQ(got.context, 8192);
  const SafetensorsFile file = SafetensorsFile::open(out);
  EXPECT_EQ(file.metadata().at("seerattn_gate_block_size"), "64");
  EXPECT_EQ(file.to_float(t.name), w);
  EXPECT_THROW(load_gate_budgets(out, 2), Error);  // one mass per layer of a 2-layer model is missing

  for (const std::string bad :
       {"{", R"({"keep_sink": true})",
        R"({"keep_sink": true, "local_blocks": 3, "context": 1, "top_p": {"x": [0.5]}})",
        R"({"keep_sink": true, "local_blocks": 3, "context": 1, "top_p": {"1e999": [0.5]}})",
        R"({"keep_sink": true, "local_blocks": 3, "context": 1, "top_p": {"0.1x": [0.5]}})",
        R"({"keep_sink": true, "local_blocks": 3.7, "context": 1, "top_p": {"0.1": [0.5]}})",
        R"({"keep_sink": true, "local_blocks": -1, "context": 1, "top_p": {"0.1": [0.5]}})",
        R"({"keep_sink": true, "local_blocks": 3, "context": 1, "top_p": {"0.1": [1.5]}})",
        R"({"keep_sink": true, "local_blocks": 3, "context": 1, "top_p": {"0.1": ["a"]}})"}) {
    gates.write(out, {{"seer_layer_budgets", bad}});
    EXPECT_THROW(load_gate_budgets(out, 1), Error) << bad;
  }
}

// The pooling the gates were trained on rides in their metadata too; without it, the published one.
TEST(Loader, GatesTargetPooling) {
  TempDir dir;
  const std::string path = (dir.path() / "g.safetensors").string();
  const TinyGates gates;
  gates.write(path, {});
  EXPECT_EQ(gates_target_pooling(path), GtPooling::max);
  for (const GtPooling p : {GtPooling::max, GtPooling::mass, GtPooling::peak_mass}) {
    gates.write(path, {{"training_target_pooling", gt_pooling_name(p)}});
    EXPECT_EQ(gates_target_pooling(path), p) << gt_pooling_name(p);
  }
  gates.write(path, {{"training_target_pooling", "mean"}});
  EXPECT_THROW(gates_target_pooling(path), Error);
}

TEST(Loader, ResolvesTheModelPath) {
  TempDir dir;
  EXPECT_EQ(resolve_model_path(dir.path().string()), dir.path().string());
  EXPECT_THROW(resolve_model_path((dir.path() / "nothing.gguf").string()), Error);
}

}  // namespace
}  // namespace seer
