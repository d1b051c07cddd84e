"""PyTorch SDPA (cuDNN and flash backends) on the shapes `seer bench` times, in the same job.

Usage: python3 sdpa_peer.py --lengths 8192,32768,131072 --q-heads 32 --kv-heads 8 --head-dim 128
Prints a table and writes JSON to --json-out. K/V are expanded to the query heads before timing
(what the backends consume), so the timing is the attention kernel alone.

With --seer-lib PATH (libseer_attention.so, the C interface of src/capi/seer_attention.h, through
its Python wrapper src/capi/seer_attention.py) it also times seer's dense kernel alternately with
cuDNN in this one process, and seer's block-sparse kernel alternately with FlexAttention on the
same random block masks (--sparse-lengths, --densities), each replayed from a CUDA graph, so that
both sides see the same clocks and neither pays for the host's dispatch: the H200 runs at its power
cap, and cuDNN's own 8k time has moved between 0.91 and 1.09 ms from one job to the next
(bench/RESULTS.md). Block-sparse is also timed alone ("seer D (alone)"), at its own clocks: beside
FlexAttention, which draws less power, it runs faster than it does alone or beside dense.
"""
import argparse
import functools
import json
import os
import statistics
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "capi"))
import seer_attention  # noqa: E402  (the C interface's Python wrapper)


def runs_in(budget_ms, first_ms, most):
    """How many runs of about first_ms fit in budget_ms: at least 3, at most `most`."""
    return max(3, min(most, int(budget_ms / max(first_ms, 1e-3))))


def timed_once(fn):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop)


def median_ms(fn, budget_ms=1000.0):
    first = timed_once(fn)
    # Warm up for about 0.3 s first (up to 1000 runs, as `seer bench` does): the H200 leaves its
    # idle clocks and reaches its power cap (bench/gpu/README.md).
    for _ in range(runs_in(300.0, first, 1000)):
        timed_once(fn)
    return statistics.median(timed_once(fn) for _ in range(runs_in(budget_ms, first, 100)))


def graph_of(fn, calls):
    """A CUDA graph of `calls` back-to-back calls of fn: replayed, it times the kernels without the
    host's dispatch between them (tens of microseconds for torch's SDPA, a few percent at 8k)."""
    fn()  # outside the capture: first-call set-up (cuDNN's plan, seer's kernel attributes)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return graph


def paired_median_ms(fn_a, fn_b, budget_ms=2000.0):
    """Per-call medians of fn_a and fn_b, each replayed as a CUDA graph of calls adding up to about
    10 ms, the two timed alternately after 0.3 s of warming up each (alternately too)."""
    first = timed_once(fn_a) + timed_once(fn_b)
    calls = max(1, int(20.0 / first))
    graph_a, graph_b = graph_of(fn_a, calls), graph_of(fn_b, calls)
    for _ in range(runs_in(600.0, calls * first, 1000)):
        timed_once(graph_a.replay), timed_once(graph_b.replay)
    ta, tb = [], []
    for _ in range(runs_in(budget_ms, calls * first, 100)):
        ta.append(timed_once(graph_a.replay) / calls)
        tb.append(timed_once(graph_b.replay) / calls)
    return statistics.median(ta), statistics.median(tb)


def random_block_mask(n, heads, density, seed=11):
    """Random causal 64x64 block masks keeping every diagonal block and about `density` of the causal
    blocks (as `seer bench` draws them): off-diagonal kept blocks [H, nb, nb] (bool, GPU) and the CSR
    form of the whole mask (int64 indptr, int32 indices, CPU)."""
    nb = (n + 63) // 64
    keep = min(1.0, max(0.0, (density * nb * (nb + 1) / 2 - nb) / max(1.0, nb * (nb - 1) / 2)))
    g = torch.Generator(device="cuda").manual_seed(seed)
    below = torch.tril(torch.rand(heads, nb, nb, device="cuda", generator=g) < keep, diagonal=-1)
    kept = below | torch.eye(nb, dtype=torch.bool, device="cuda")
    indptr = torch.zeros(heads * nb + 1, dtype=torch.int64)
    indptr[1:] = kept.reshape(heads * nb, nb).sum(-1).cumsum(0).cpu()
    indices = kept.reshape(heads * nb, nb).nonzero()[:, 1].to(torch.int32).cpu()  # row-major: ascending
    return below, (indptr, indices)


def flex_block_sparse(below, n, q, k, v):
    """FlexAttention over the same blocks: the kept blocks below the diagonal as full blocks, the
    diagonal as partial blocks under a causal mask_mod. Returns a closure of (q, k, v) and its
    kernel options, or None."""
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention
    except ImportError as e:
        print(f"flex_attention unavailable: {e}")
        return None
    heads, nb, _ = below.shape
    order = torch.argsort((~below).to(torch.int8), dim=-1, stable=True).to(torch.int32)  # kept blocks first
    full_count = below.sum(-1).to(torch.int32)
    diagonal = torch.arange(nb, device="cuda", dtype=torch.int32).view(1, nb, 1).expand(heads, nb, nb).contiguous()
    ones = torch.ones(heads, nb, device="cuda", dtype=torch.int32)

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    mask = BlockMask.from_kv_blocks(ones[None], diagonal[None], full_count[None], order[None], BLOCK_SIZE=64,
                                    mask_mod=causal, seq_lengths=(n, n))
    compiled = torch.compile(flex_attention)
    # Its own choice of tiles first; 64 x 64 tiles, which a mask of 64-token blocks always allows, if
    # that fails to compile.
    for options in (None, {"BLOCK_M": 64, "BLOCK_N": 64}):
        run = functools.partial(compiled, block_mask=mask, enable_gqa=True, kernel_options=options)
        try:
            run(q, k, v)
            return run, options
        except Exception as e:
            print(f"flex with kernel options {options}: {e}".splitlines()[0])
    return None


def block_sparse_against_flex(seer, n, q, k, v, densities, flops):
    """seer's block-sparse kernel and FlexAttention (torch.compile) on the same random masks, timed
    alternately; q [1, H_q, n, d], k and v [1, H_kv, n, d]."""
    rows = []
    ours = [x[0].transpose(0, 1).contiguous() for x in (q, k, v)]
    layout = seer.layout([n], q.shape[1])
    out = torch.empty_like(ours[0])
    lse = torch.empty(q.shape[1], n, device="cuda", dtype=torch.float32)
    for density in densities:
        below, csr = random_block_mask(n, q.shape[1], density)
        mask = seer.mask(layout, *csr)
        run = lambda: seer.block_sparse(*ours, mask, out=out, lse=lse)  # noqa: E731
        real = (csr[0][-1].item()) / (q.shape[1] * below.shape[1] * (below.shape[1] + 1) / 2)
        try:
            compiled = flex_block_sparse(below, n, q, k, v)
            if compiled is None:
                continue
            flex, options = compiled
            ref = flex(q, k, v)
            run()
            torch.cuda.synchronize()
            diff = (out.float() - ref[0].transpose(0, 1).float()).abs().max().item()
            if diff > 0.05:
                raise RuntimeError(f"seer and FlexAttention differ by {diff} at {n} tokens, density {density}")
            flex_ms, seer_ms = paired_median_ms(lambda: flex(q, k, v), run)
            # Alone too: block-sparse draws more power than FlexAttention, which lends it clocks
            # when the two alternate (bench/RESULTS.md, "Block-sparse runs at the power cap").
            seer_alone_ms = median_ms(run)
        except Exception as e:  # a FlexAttention that cannot compile this mask or shape
            print(f"flex {n} density {density}: {e}".splitlines()[0])
            continue
        label = f"{real:.3f}"
        rows.append({"peer": f"flex {label} (alt.)", "tokens": n, "density": real, "ms": flex_ms,
                     "tflops": flops / flex_ms / 1e9, "kernel_options": options})
        rows.append({"peer": f"seer {label} (alt.)", "tokens": n, "density": real, "ms": seer_ms,
                     "tflops": flops / seer_ms / 1e9, "vs_flex": flex_ms / seer_ms})
        rows.append({"peer": f"seer {label} (alone)", "tokens": n, "density": real, "ms": seer_alone_ms,
                     "tflops": flops / seer_alone_ms / 1e9})
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", default="8192,32768,131072")
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--json-out", default=None)
    p.add_argument("--seer-lib", default=None,
                   help="libseer_attention.so: time seer's dense alternately with cuDNN, "
                        "its block-sparse with FlexAttention")
    p.add_argument("--sparse-lengths", default="32768", help="lengths for block-sparse against FlexAttention")
    p.add_argument("--densities", default="0.1,0.5", help="block-sparse densities (random causal masks)")
    a = p.parse_args()
    seer = seer_attention.SeerAttention(a.seer_lib) if a.seer_lib else None
    results = []
    for n in [int(x) for x in a.lengths.split(",")]:
        torch.manual_seed(0)
        q = torch.randn(1, a.q_heads, n, a.head_dim, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, a.kv_heads, n, a.head_dim, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        flops = 4.0 * a.q_heads * n * n / 2 * a.head_dim
        if seer:
            # seer's layout, [tokens, heads, d], K/V not repeated; the same values as cuDNN's inputs.
            ours = [x[0].transpose(0, 1).contiguous() for x in (q, k, v)]
            layout = seer.layout([n], a.q_heads)
            out = torch.empty_like(ours[0])
            lse = torch.empty(a.q_heads, n, device="cuda", dtype=torch.float32)
            run = lambda: seer.dense(*ours, layout, out=out, lse=lse)  # noqa: E731
        group = a.q_heads // a.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        if seer:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                cudnn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
                ref = cudnn()
                run()
                torch.cuda.synchronize()
                # The two kernels must compute the same attention, or the race means nothing.
                diff = (out.float() - ref[0].transpose(0, 1).float()).abs().max().item()
                if diff > 0.05:
                    raise RuntimeError(f"seer and cuDNN differ by {diff} at {n} tokens")
                cudnn_ms, seer_ms = paired_median_ms(cudnn, run)
            del ours, ref, out, lse, layout, run
            results.append({"peer": "cudnn (alternating)", "tokens": n, "ms": cudnn_ms,
                            "tflops": flops / cudnn_ms / 1e9})
            results.append({"peer": "seer (alternating)", "tokens": n, "ms": seer_ms, "tflops": flops / seer_ms / 1e9,
                            "vs_cudnn": cudnn_ms / seer_ms})
        for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            try:
                with sdpa_kernel(backend):
                    ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
            except RuntimeError as e:  # a backend that refuses the shape
                print(f"{name} {n}: {e}".splitlines()[0])
                continue
            results.append({"peer": f"torch sdpa {name}", "tokens": n, "ms": ms, "tflops": flops / ms / 1e9})
        if seer and str(n) in a.sparse_lengths.split(","):
            k, v = k[:, ::group].contiguous(), v[:, ::group].contiguous()  # flex takes grouped K/V as they are
            results += block_sparse_against_flex(seer, n, q, k, v, [float(x) for x in a.densities.split(",")], flops)
        del q, k, v
        torch.cuda.empty_cache()
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    print(f"{'peer':<20} {'tokens':>8} {'ms':>10} {'TFLOP/s*':>10} {'peer/seer':>10}")
    for r in results:
        ratio = r.get("vs_cudnn", r.get("vs_flex"))
        ratio = f"{ratio:>10.3f}" if ratio else ""
        print(f"{r['peer']:<20} {r['tokens']:>8} {r['ms']:>10.3f} {r['tflops']:>10.1f} {ratio}")
    print("* dense-equivalent for the block-sparse rows: the causal FLOPs over the time, whatever the density")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"torch": torch.__version__, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
