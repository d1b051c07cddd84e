"""HF transformers peer for `seer bench-model`: a Llama-3-8B-shaped LlamaForCausalLM with random
bf16 weights on the GPU (sdpa attention), time to first token at the same prompt lengths, in the
same job, and decode tokens/s at batch 1 after a --decode-context prompt (KV cache, one token per
forward, the next token's id read back to the host each step, as generation does).
Usage: python3 hf_peer.py --lengths 8192,32768,131072 [--decode-context 32768 --decode-tokens 64] [--json-out FILE]
"""
import argparse
import json
import statistics
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", default="8192,32768,131072")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--decode-context", type=int, default=32768)
    p.add_argument("--decode-tokens", type=int, default=64, help="0 skips decode")
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                      rope_theta=500000.0, rms_norm_eps=1e-5,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    cfg._attn_implementation = "sdpa"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    model.eval()
    weights_gib = torch.cuda.memory_allocated() / 2**30
    results = []
    for n in [int(x) for x in a.lengths.split(",")]:
        ids = torch.randint(0, cfg.vocab_size, (1, n), device="cuda")
        torch.cuda.reset_peak_memory_stats()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        with torch.inference_mode():
            model(ids, use_cache=False, logits_to_keep=1)
            for _ in range(a.repeats):
                start.record()
                model(ids, use_cache=False, logits_to_keep=1)
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop))
        results.append({"tokens": n, "ttft_ms": statistics.median(times),
                        "peak_gib": torch.cuda.max_memory_allocated() / 2**30})
        del ids
        torch.cuda.empty_cache()
    decode = None
    if a.decode_tokens > 0:
        ids = torch.randint(0, cfg.vocab_size, (1, a.decode_context), device="cuda")
        with torch.inference_mode():
            out = model(ids, use_cache=True, logits_to_keep=1)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            del out
            for step in range(4 + a.decode_tokens):  # 4 warm-up steps
                if step == 4:
                    begin = time.perf_counter()
                out = model(token, past_key_values=cache, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
                token.item()
            seconds = time.perf_counter() - begin
        decode = {"context": a.decode_context, "tokens": a.decode_tokens,
                  "tokens_per_s": a.decode_tokens / seconds, "ms_per_token": 1e3 * seconds / a.decode_tokens}
        del cache, ids
        torch.cuda.empty_cache()
    print(f"HF transformers {transformers.__version__}, torch {torch.__version__}, sdpa, bf16, "
          f"weights {weights_gib:.1f} GiB")
    print(f"{'tokens':>8} {'TTFT [ms]':>12} {'peak GiB':>10}")
    for r in results:
        print(f"{r['tokens']:>8} {r['ttft_ms']:>12.1f} {r['peak_gib']:>10.1f}")
    if decode:
        print(f"decode at batch 1 after {decode['context']} tokens: {decode['tokens_per_s']:.1f} tokens/s "
              f"({decode['ms_per_token']:.2f} ms/token over {decode['tokens']} tokens)")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"transformers": transformers.__version__, "results": results, "decode": decode}, f, indent=2)


if __name__ == "__main__":
    main()
