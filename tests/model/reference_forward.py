#!/usr/bin/env python3
"""Writes tests/data/model/reference.json: what an independent numpy Llama forward pass of the
built-in model computes, for tests/model/test_reference.cpp to compare seer's CPU forward with.

    pip install gguf==0.19.0 numpy tokenizers==0.23.3
    python3 tests/model/reference_forward.py [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf]
                                             [--corpus ../shared/corpus/dev]

Independence from seer: weights are dequantized by gguf-py (gguf.quants.dequantize) and used as the
file stores them, Q and K rows in llama.cpp's permuted order, with llama.cpp's interleaved RoPE
(rotating the pairs (2i, 2i+1)). seer un-permutes the rows and applies the rotate-half RoPE of
Hugging Face; the two agree only if the un-permutation is right. Arithmetic is float64.

The passage is the first 512 tokens of the first dev book (MANIFEST order), tokenized by Hugging
Face `tokenizers` with tests/data/tokenizer/smollm2/tokenizer.json; the ids are stored, so the C++
test checks the forward pass on exactly these ids (and, separately, that seer's tokenizer agrees).
"""
import argparse
import json
from pathlib import Path

import gguf
import numpy as np
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PASSAGE_TOKENS = 512
LOGIT_SAMPLE = 1024  # last-position logits stored per prompt: the top 64 and an even spread
TOP = 5

# Fixed prompts (ids of the SmolLM2 tokenizer): a short sentence, a ChatML turn with special tokens,
# and a 95-token paragraph that crosses a 64-token block boundary.
PROMPTS = {
    "capital": [504, 3575, 282, 4649, 314],
    "chat": [1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198],
    "darwin": [788, 216, 33, 40, 37, 41, 28, 6660, 12764, 2587, 1985, 260, 20926, 282, 13459, 28, 17087, 338,
               4323, 11923, 690, 4902, 738, 1782, 5719, 30, 378, 1863, 4529, 253, 1248, 282, 2364, 338, 260, 4692,
               282, 1029, 18069, 411, 1273, 14735, 738, 253, 32456, 2191, 282, 4162, 30, 12764, 3249, 2364, 338,
               384, 761, 5771, 335, 260, 1934, 12896, 12557, 281, 260, 216, 33, 40, 35, 32, 99, 284, 650, 1916,
               4079, 429, 1151, 28, 18500, 28, 284, 17016, 30, 18013, 10207, 2821, 761, 2221, 719, 5433, 288,
               3556, 725, 4079, 281, 7505, 30],
}


class Model:
    def __init__(self, path):
        reader = gguf.GGUFReader(path)
        field = lambda key: reader.fields[key].contents()
        arch = field("general.architecture")
        assert arch == "llama", arch
        self.layers = int(field("llama.block_count"))
        self.q_heads = int(field("llama.attention.head_count"))
        self.kv_heads = int(field("llama.attention.head_count_kv"))
        self.hidden = int(field("llama.embedding_length"))
        self.head_dim = self.hidden // self.q_heads
        self.eps = float(field("llama.attention.layer_norm_rms_epsilon"))
        self.theta = float(field("llama.rope.freq_base"))
        self.w = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64) for t in reader.tensors}
        self.out = self.w.get("output.weight", self.w["token_embd.weight"])

    def rms_norm(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def rope_interleaved(self, x):
        """x [T, H, d]: llama.cpp's normal RoPE, pair (2i, 2i+1) rotated by pos * theta^(-2i/d)."""
        t, _, d = x.shape
        freq = self.theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        angle = np.arange(t, dtype=np.float64)[:, None] * freq[None, :]
        cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = odd * cos + even * sin
        return out

    def logits(self, ids):
        """Logits [T, vocab] of a causal forward pass over ids."""
        t, d, g = len(ids), self.head_dim, self.q_heads // self.kv_heads
        x = self.w["token_embd.weight"][ids]
        causal = np.triu(np.full((t, t), -np.inf), k=1)
        for n in range(self.layers):
            w = lambda name: self.w[f"blk.{n}.{name}.weight"]
            h = self.rms_norm(x, w("attn_norm"))
            q = self.rope_interleaved((h @ w("attn_q").T).reshape(t, self.q_heads, d))
            k = self.rope_interleaved((h @ w("attn_k").T).reshape(t, self.kv_heads, d))
            v = (h @ w("attn_v").T).reshape(t, self.kv_heads, d)
            k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
            scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d) + causal
            p = np.exp(scores - scores.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            attn = np.einsum("hqk,khd->qhd", p, v).reshape(t, self.q_heads * d)
            x = x + attn @ w("attn_output").T
            h = self.rms_norm(x, w("ffn_norm"))
            gate, up = h @ w("ffn_gate").T, h @ w("ffn_up").T
            x = x + (gate / (1.0 + np.exp(-gate)) * up) @ w("ffn_down").T
        return self.rms_norm(x, self.w["output_norm.weight"]) @ self.out.T


def log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=str(REPO / "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--corpus", default=str(REPO.parent / "shared/corpus/dev"))
    ap.add_argument("--out", default=str(REPO / "tests/data/model/reference.json"))
    ap.add_argument("--passage-tokens", type=int, default=PASSAGE_TOKENS,
                    help="passage length (8192 for the long-window check in bench/RESULTS.md)")
    args = ap.parse_args()

    model = Model(args.gguf)
    result = {"model": Path(args.gguf).name, "prompts": {}}
    for name, ids in PROMPTS.items():
        z = model.logits(ids)
        last = z[-1]
        order = np.argsort(-last, kind="stable")
        sample = sorted(set(order[:64].tolist()) | set(np.linspace(0, len(last) - 1, LOGIT_SAMPLE - 64).astype(int).tolist()))
        top = np.argsort(-z, axis=-1, kind="stable")[:, :TOP]
        result["prompts"][name] = {
            "ids": ids,
            "last_logsumexp": float(np.log(np.exp(last - last.max()).sum()) + last.max()),
            "last_logit_ids": sample,
            "last_logits": [float(last[i]) for i in sample],
            "top_ids": top.tolist(),
            "top_logits": np.take_along_axis(z, top, axis=-1).tolist(),
        }

    manifest = (Path(args.corpus) / "MANIFEST.tsv").read_text().splitlines()
    book = manifest[1].split("\t")[0]
    text = (Path(args.corpus) / book).read_text(encoding="utf-8")
    tokenizer = Tokenizer.from_file(str(REPO / "tests/data/tokenizer/smollm2/tokenizer.json"))
    chars = 4 * args.passage_tokens
    while len(tokenizer.encode(text[:chars]).ids) <= args.passage_tokens:
        chars *= 2
    ids = tokenizer.encode(text[:chars]).ids[:args.passage_tokens]
    nll = -np.take_along_axis(log_softmax(model.logits(ids))[:-1], np.array(ids[1:])[:, None], axis=-1)[:, 0]
    result["passage"] = {"book": book, "bytes": len(text[:chars].encode("utf-8")), "ids": ids, "predictions": len(nll),
                         "mean_nll": float(nll.mean()), "ppl": float(np.exp(nll.mean()))}

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, separators=(",", ":")) + "\n")
    print(f"{args.out}: passage {book} {len(ids)} tokens, mean NLL {nll.mean():.6f}, PPL {np.exp(nll.mean()):.4f}")


if __name__ == "__main__":
    main()
