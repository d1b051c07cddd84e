"""seer's dense and block-sparse kernels sustained: time, power, SM clock and energy per call.

Usage: python3 energy.py --seer-lib .devbin/libseer_attention.so [--lengths 32768] [--densities 0.1,0.5]
       [--masks random,exact-k,paired] [--seconds 2.5] [--json-out FILE]

The H200 runs these kernels at its 700 W power cap within a fraction of a second, so a kernel's
sustained time is its energy per call over the cap (bench/RESULTS.md, v25). Each kernel is replayed
back to back from a CUDA graph of about 20 ms of calls for --seconds; the last 60% of that is timed
with CUDA events while nvidia-smi reads the instantaneous power and SM clock every 10 ms. The ratio
to dense here is of sustained times, about that of energies (the power differs by a few percent
between kernels). `seer bench` with several kernels and sdpa_peer.py time a kernel alternately with
a partner instead, at the clock of the pair's average power: a ratio of work at equal clocks.

Masks (64 x 64 blocks, causal, 32/8 heads by default): `random` keeps the diagonal and each other
causal block with a probability that makes the density (as `seer bench` draws them); `exact-k`
keeps max(1, round(density (i + 1))) blocks of row i (halves to even), the diagonal among them, as
top-k selection does; `paired` is `random` with each odd head's rows the even head's before it (the
query heads of a KV head agreeing; an even number of heads).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdpa_peer  # noqa: E402  (its graph helpers, random masks and the C interface's wrapper)


class PowerSampler:
    """nvidia-smi's instantaneous power (W) and SM clock (MHz) every 10 ms, with host timestamps."""

    def __init__(self):
        self.samples = []
        # nvidia-smi numbers GPUs its own way: name torch's by its PCI address.
        prop = torch.cuda.get_device_properties(torch.cuda.current_device())
        gpu = f"{prop.pci_domain_id:08X}:{prop.pci_bus_id:02X}:{prop.pci_device_id:02X}.0"
        self._smi = subprocess.Popen(
            ["nvidia-smi", f"--id={gpu}", "--query-gpu=power.draw.instant,clocks.sm", "--format=csv,noheader,nounits",
             "-lms", "10"], stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self._smi.stdout:
            try:
                watts, mhz = (float(x) for x in line.split(","))
            except ValueError:  # a header, or "[N/A]"
                continue
            self.samples.append((time.time(), watts, mhz))

    def between(self, t0, t1):
        return [s for s in self.samples if t0 <= s[0] <= t1]

    def close(self):
        self._smi.terminate()


def causal_kept(kind, n, heads, density, seed=11):
    """[heads, nb, nb] bool: the blocks a mask of this kind keeps."""
    nb = (n + 63) // 64
    if kind == "exact-k":
        g = torch.Generator(device="cuda").manual_seed(seed)
        score = torch.rand(heads, nb, nb, device="cuda", generator=g)
        score = torch.where(torch.tril(torch.ones(nb, nb, dtype=torch.bool, device="cuda")), score, -1.0)
        score[:, torch.arange(nb), torch.arange(nb)] = 2.0  # the diagonal first
        count = torch.clamp(torch.round(density * torch.arange(1, nb + 1, device="cuda")), min=1)
        rank = score.argsort(-1, descending=True).argsort(-1)
        return rank < count[None, :, None]
    below, _ = sdpa_peer.random_block_mask(n, heads, density, seed)
    kept = below | torch.eye(nb, dtype=torch.bool, device="cuda")
    if kind == "paired":
        if heads % 2:
            raise ValueError("paired masks need an even number of query heads")
        kept[1::2] = kept[0::2]
    elif kind != "random":
        raise ValueError(f"unknown mask kind {kind!r}")
    return kept


def csr(kept):
    rows = kept.shape[0] * kept.shape[1]
    indptr = torch.zeros(rows + 1, dtype=torch.int64)
    indptr[1:] = kept.reshape(rows, -1).sum(-1).cumsum(0).cpu()
    return indptr, kept.reshape(rows, -1).nonzero()[:, 1].to(torch.int32).cpu()


def sustained(fn, seconds, sampler):
    """fn replayed back to back for `seconds`: ms per call over the last 60%, and the median power
    and SM clock meanwhile."""
    first = sdpa_peer.timed_once(fn)
    calls = max(1, int(20.0 / first))
    graph = sdpa_peer.graph_of(fn, calls)
    t0 = time.time()
    while time.time() - t0 < 0.4 * seconds:
        graph.replay()
        torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t1 = time.time()
    start.record()
    replays = 0
    while time.time() - t1 < 0.6 * seconds:
        graph.replay()
        replays += 1
        if replays % 10 == 0:
            torch.cuda.synchronize()
    stop.record()
    stop.synchronize()
    ms = start.elapsed_time(stop) / (replays * calls)
    samples = sampler.between(t1 + 0.05, time.time())
    if not samples:
        raise RuntimeError("nvidia-smi gave no power readings")
    watts = statistics.median(s[1] for s in samples)
    mhz = statistics.median(s[2] for s in samples)
    time.sleep(1.0)  # the next kernel starts from about the same state
    return {"ms": ms, "watts": watts, "sm_mhz": mhz, "joules": ms * watts / 1e3, "samples": len(samples)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seer-lib", required=True, help="libseer_attention.so")
    p.add_argument("--lengths", default="32768")
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--densities", default="0.1,0.5")
    p.add_argument("--masks", default="random,exact-k,paired")
    p.add_argument("--seconds", type=float, default=2.5)
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    seer = sdpa_peer.seer_attention.SeerAttention(a.seer_lib)
    sampler = PowerSampler()
    try:
        time.sleep(1.0)
        idle = sampler.samples[:]
        results = measure(a, seer, sampler)
    finally:
        sampler.close()
    report(a, idle, results)


def measure(a, seer, sampler):
    """Dense, then block-sparse at each density and mask kind, at each length."""
    results = []
    for n in [int(x) for x in a.lengths.split(",")]:
        torch.manual_seed(0)
        q = torch.randn(n, a.q_heads, a.head_dim, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(n, a.kv_heads, a.head_dim, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        out, lse = torch.empty_like(q), torch.empty(a.q_heads, n, device="cuda", dtype=torch.float32)
        layout = seer.layout([n], a.q_heads)
        dense = sustained(lambda: seer.dense(q, k, v, layout, out=out, lse=lse), a.seconds, sampler)
        results.append({"kernel": "dense", "tokens": n, "density": 1.0, "mask": "", **dense, "vs_dense": 1.0})
        for density in [float(x) for x in a.densities.split(",")]:
            for kind in a.masks.split(","):
                kept = causal_kept(kind, n, a.q_heads, density)
                mask = seer.mask(layout, *csr(kept))
                r = sustained(lambda: seer.block_sparse(q, k, v, mask, out=out, lse=lse), a.seconds, sampler)
                real = kept.sum().item() / (a.q_heads * kept.shape[1] * (kept.shape[1] + 1) / 2)
                results.append({"kernel": "block_sparse", "tokens": n, "density": real, "mask": kind, **r,
                                "vs_dense": dense["ms"] / r["ms"]})
        del q, k, v, out, lse, layout
        torch.cuda.empty_cache()
    return results


def report(a, idle, results):
    print(f"{torch.cuda.get_device_name()}, {a.q_heads}/{a.kv_heads} heads, d = {a.head_dim}, bf16; "
          f"idle {statistics.median(s[1] for s in idle):.0f} W at {statistics.median(s[2] for s in idle):.0f} MHz"
          if idle else torch.cuda.get_device_name())
    print(f"{'kernel':<14} {'mask':<8} {'tokens':>7} {'density':>8} {'ms':>9} {'W':>6} {'MHz':>6} {'J/call':>8} "
          f"{'vs dense':>9}")
    for r in results:
        print(f"{r['kernel']:<14} {r['mask']:<8} {r['tokens']:>7} {r['density']:>8.3f} {r['ms']:>9.3f} "
              f"{r['watts']:>6.0f} {r['sm_mhz']:>6.0f} {r['joules']:>8.3f} {r['vs_dense']:>9.3f}")
    print("sustained: each kernel back to back; vs dense is the ratio of sustained times (about that of energies at the cap)")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
