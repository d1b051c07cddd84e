"""HF transformers peer for `seer bench-model`: a Llama-3-8B-shaped LlamaForCausalLM with random
bf16 weights on the GPU (sdpa attention), time to first token at the same prompt lengths, in the
same job. Usage: python3 hf_peer.py --lengths 8192,32768,131072 [--json-out FILE]
"""
import argparse
import json
import statistics

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", default="8192,32768,131072")
    p.add_argument("--repeats", type=int, default=3)
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
    print(f"HF transformers {transformers.__version__}, torch {torch.__version__}, sdpa, bf16, "
          f"weights {weights_gib:.1f} GiB")
    print(f"{'tokens':>8} {'TTFT [ms]':>12} {'peak GiB':>10}")
    for r in results:
        print(f"{r['tokens']:>8} {r['ttft_ms']:>12.1f} {r['peak_gib']:>10.1f}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"transformers": transformers.__version__, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
