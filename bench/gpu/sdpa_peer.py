"""PyTorch SDPA (cuDNN and flash backends) on the shapes `seer bench` times, in the same job.

Usage: python3 sdpa_peer.py --lengths 8192,32768,131072 --q-heads 32 --kv-heads 8 --head-dim 128
Prints a table and writes JSON to --json-out. K/V are expanded to the query heads before timing
(what the backends consume), so the timing is the attention kernel alone.
"""
import argparse
import json
import statistics

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F


def runs_in(budget_ms, first_ms, most):
    """How many runs of about first_ms fit in budget_ms: at least 3, at most `most`."""
    return max(3, min(most, int(budget_ms / max(first_ms, 1e-3))))


def median_ms(fn, budget_ms=1000.0):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def once():
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop)

    first = once()
    # Warm up for about 0.3 s first (up to 1000 runs, as `seer bench` does): the H200 leaves its
    # idle clocks and reaches its power cap (bench/gpu/README.md).
    for _ in range(runs_in(300.0, first, 1000)):
        once()
    return statistics.median(once() for _ in range(runs_in(budget_ms, first, 100)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", default="8192,32768,131072")
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    results = []
    for n in [int(x) for x in a.lengths.split(",")]:
        torch.manual_seed(0)
        q = torch.randn(1, a.q_heads, n, a.head_dim, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, a.kv_heads, n, a.head_dim, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        group = a.q_heads // a.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        flops = 4.0 * a.q_heads * n * n / 2 * a.head_dim
        for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            try:
                with sdpa_kernel(backend):
                    ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
            except RuntimeError as e:  # a backend that refuses the shape
                print(f"{name} {n}: {e}".splitlines()[0])
                continue
            results.append({"peer": f"torch sdpa {name}", "tokens": n, "ms": ms, "tflops": flops / ms / 1e9})
        del q, k, v
        torch.cuda.empty_cache()
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    print(f"{'peer':<20} {'tokens':>8} {'ms':>10} {'TFLOP/s':>10}")
    for r in results:
        print(f"{r['peer']:<20} {r['tokens']:>8} {r['ms']:>10.3f} {r['tflops']:>10.1f}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"torch": torch.__version__, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
