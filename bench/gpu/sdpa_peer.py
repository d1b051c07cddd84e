"""PyTorch SDPA (cuDNN and flash backends) on the shapes `seer bench` times, in the same job.

Usage: python3 sdpa_peer.py --lengths 8192,32768,131072 --q-heads 32 --kv-heads 8 --head-dim 128
Prints a table and writes JSON to --json-out. K/V are expanded to the query heads before timing
(what the backends consume), so the timing is the attention kernel alone.

With --seer-lib PATH (libseer_attention.so, the C interface in src/capi/seer_attention.h) it also
times seer's dense kernel alternately with cuDNN in this one process, each replayed from a CUDA
graph, so that both see the same clocks and neither pays for the host's dispatch: the H200 runs at
its power cap, and cuDNN's own time moves by up to 7% from one job to the next (bench/RESULTS.md).
"""
import argparse
import ctypes
import json
import statistics

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F


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


class SeerDense:
    """seer's dense forward through libseer_attention.so, on tensors in seer's [tokens, heads, d] layout."""

    def __init__(self, path):
        lib = ctypes.CDLL(path)
        lib.seer_layout_create.restype = ctypes.c_void_p
        lib.seer_layout_create.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.c_int,
                                           ctypes.c_char_p, ctypes.c_size_t]
        lib.seer_layout_destroy.argtypes = [ctypes.c_void_p]
        lib.seer_dense_forward.restype = ctypes.c_int
        lib.seer_dense_forward.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int] * 4 + [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        self.lib = lib
        self.error = ctypes.create_string_buffer(512)

    def forward(self, n, q, k, v):
        """A closure that runs dense attention over q [n, H_q, d], k and v [n, H_kv, d] (bf16)."""
        lengths = (ctypes.c_int64 * 1)(n)
        layout = self.lib.seer_layout_create(lengths, 1, q.shape[1], self.error, len(self.error))
        if not layout:
            raise RuntimeError(self.error.value.decode())
        out = torch.empty_like(q)
        lse = torch.empty(q.shape[1], n, device=q.device, dtype=torch.float32)
        args = (layout, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr(), 0, q.shape[1],
                k.shape[1], q.shape[2])

        def run():  # on torch's current stream, which is the capturing one inside torch.cuda.graph
            stream = torch.cuda.current_stream().cuda_stream
            if self.lib.seer_dense_forward(*args, stream, self.error, len(self.error)) != 0:
                raise RuntimeError(self.error.value.decode())

        run.release = lambda: self.lib.seer_layout_destroy(layout)
        run.out, run.lse = out, lse  # kept alive with the closure: it holds only their addresses
        return run


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", default="8192,32768,131072")
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--json-out", default=None)
    p.add_argument("--seer-lib", default=None, help="libseer_attention.so: time seer's dense alternately with cuDNN")
    a = p.parse_args()
    seer = SeerDense(a.seer_lib) if a.seer_lib else None
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
            run = seer.forward(n, *ours)
        group = a.q_heads // a.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        if seer:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                cudnn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
                ref = cudnn()
                run()
                torch.cuda.synchronize()
                # The two kernels must compute the same attention, or the race means nothing.
                diff = (run.out.float() - ref[0].transpose(0, 1).float()).abs().max().item()
                if diff > 0.05:
                    raise RuntimeError(f"seer and cuDNN differ by {diff} at {n} tokens")
                cudnn_ms, seer_ms = paired_median_ms(cudnn, run)
            run.release()
            del ours, ref
            results.append({"peer": "cudnn (alternating)", "tokens": n, "ms": cudnn_ms, "tflops": flops / cudnn_ms / 1e9})
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
        del q, k, v
        torch.cuda.empty_cache()
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    print(f"{'peer':<20} {'tokens':>8} {'ms':>10} {'TFLOP/s':>10} {'cuDNN/seer':>11}")
    for r in results:
        ratio = f"{r['vs_cudnn']:>11.3f}" if "vs_cudnn" in r else ""
        print(f"{r['peer']:<20} {r['tokens']:>8} {r['ms']:>10.3f} {r['tflops']:>10.1f} {ratio}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"torch": torch.__version__, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
