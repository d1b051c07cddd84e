"""The Python wrapper of the C interface (src/capi/seer_attention.py) on the GPU, against PyTorch's
attention in float32 as the oracle: dense and block-sparse on packed sequences with grouped-query
heads, outputs poisoned first; and its refusals. Needs a GPU and torch: run by
bench/gpu/run_device.sh (tests), with SEER_ATTENTION_LIB pointing at the library.

Usage: python3 tests/cuda/test_seer_attention.py   (exit status 1 on any failure)
"""
import math
import os
import sys
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "capi"))
import seer_attention  # noqa: E402

BLOCK = 64


def reference(q, k, v, lengths, keep=None):
    """Causal attention in float32 per sequence; keep: bool [H_q, nb, nb] per sequence (None: dense).
    Rows that see no key come out as zeros (seer's convention)."""
    group = q.shape[1] // k.shape[1]
    outs, start = [], 0
    for s, n in enumerate(lengths):
        qs, ks, vs = (x[start:start + n].transpose(0, 1).float() for x in (q, k, v))
        ks, vs = ks.repeat_interleave(group, 0), vs.repeat_interleave(group, 0)
        allowed = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        allowed = allowed.expand(q.shape[1], n, n)
        if keep is not None:
            blocks = keep[s].repeat_interleave(BLOCK, 1).repeat_interleave(BLOCK, 2)[:, :n, :n]
            allowed = allowed & blocks
        scores = (qs @ ks.transpose(1, 2)) / math.sqrt(q.shape[2])
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, -1).nan_to_num(0.0)  # an empty row: all -inf -> NaN -> 0
        outs.append((probs @ vs).transpose(0, 1))
        start += n
    return torch.cat(outs)


def inputs(lengths, q_heads, kv_heads, d, dtype):
    t = sum(lengths)
    q = torch.randn(t, q_heads, d, device="cuda").to(dtype)
    k = torch.randn(t, kv_heads, d, device="cuda").to(dtype)
    v = torch.randn(t, kv_heads, d, device="cuda").to(dtype)
    return q, k, v


def poisoned(q):
    out = torch.full_like(q, float("nan"))
    lse = torch.full((q.shape[1], q.shape[0]), float("nan"), device="cuda")
    return out, lse


def test_dense(seer):
    for lengths, hq, hkv, d, dtype in (([300, 1, 129], 8, 2, 128, torch.bfloat16),
                                       ([1000], 9, 3, 64, torch.float16)):
        q, k, v = inputs(lengths, hq, hkv, d, dtype)
        out, lse = poisoned(q)
        layout = seer.layout(lengths, hq)
        seer.dense(q, k, v, layout, out=out, lse=lse)
        torch.cuda.synchronize()
        err = (out.float() - reference(q, k, v, lengths)).abs().max().item()
        assert err < 2e-2, f"dense {dtype}, d {d}: max error {err}"
        assert torch.isfinite(lse).all(), "dense: every row has a finite LSE"


def test_block_sparse(seer):
    lengths, hq, hkv, d = [700, 65], 4, 2, 128
    q, k, v = inputs(lengths, hq, hkv, d, torch.bfloat16)
    layout = seer.layout(lengths, hq)
    gen = torch.Generator().manual_seed(5)
    keep, indptr, indices = [], [0], []
    for n in lengths:
        nb = (n + BLOCK - 1) // BLOCK
        kept = (torch.rand(hq, nb, nb, generator=gen) < 0.4).tril()  # random, empty rows included
        keep.append(kept.cuda())
        for h in range(hq):
            for i in range(nb):
                row = kept[h, i].nonzero().flatten().tolist()
                indices += row
                indptr.append(indptr[-1] + len(row))
    mask = seer.mask(layout, torch.tensor(indptr), torch.tensor(indices, dtype=torch.int32))
    out, lse = poisoned(q)
    seer.block_sparse(q, k, v, mask, out=out, lse=lse)
    torch.cuda.synchronize()
    err = (out.float() - reference(q, k, v, lengths, keep)).abs().max().item()
    assert err < 2e-2, f"block-sparse: max error {err}"
    assert not torch.isnan(lse).any(), "block-sparse: every LSE written (-inf for empty rows)"


def test_refusals(seer):
    q, k, v = inputs([200], 4, 2, 64, torch.bfloat16)
    layout = seer.layout([200], 4)

    def refused(fn, fragment):
        try:
            fn()
        except seer_attention.SeerError as e:
            assert fragment in str(e), f"expected {fragment!r} in {e}"
            return
        raise AssertionError(f"accepted; expected a refusal with {fragment!r}")

    refused(lambda: seer.dense(q.float(), k.float(), v.float(), layout), "bfloat16")
    refused(lambda: seer.dense(q.cpu(), k.cpu(), v.cpu(), layout), "CUDA")
    refused(lambda: seer.dense(q, k, v, seer.layout([300], 4)), "300 tokens")
    refused(lambda: seer.dense(q, k, v, seer.layout([200], 8)), "query heads")
    refused(lambda: seer.dense(q, k[:, :1].contiguous(), v, layout), "shapes")
    refused(lambda: seer.layout([200, 0], 4), "")
    refused(lambda: seer.mask(layout, torch.tensor([0, 1]), torch.tensor([0], dtype=torch.int32)), "rows")
    # Every causal block of the 4 query blocks of each head: block-sparse equals dense; the same
    # mask with query block 0 keeping key block 1 is refused.
    indptr, indices = [0], []
    for _ in range(4):
        for i in range(4):
            indices += list(range(i + 1))
            indptr.append(len(indices))
    full = seer.mask(layout, torch.tensor(indptr), torch.tensor(indices, dtype=torch.int32))
    sparse, _ = seer.block_sparse(q, k, v, full)
    dense, _ = seer.dense(q, k, v, layout)
    torch.cuda.synchronize()
    assert (sparse.float() - dense.float()).abs().max().item() < 2e-2, "every block kept: block-sparse = dense"
    indices[0] = 1
    refused(lambda: seer.mask(layout, torch.tensor(indptr), torch.tensor(indices, dtype=torch.int32)), "key block")


def main():
    torch.manual_seed(0)
    seer = seer_attention.SeerAttention()
    failed = 0
    for test in (test_dense, test_block_sparse, test_refusals):
        try:
            test(seer)
            print(f"[ OK ] {test.__name__}")
        except Exception:
            failed += 1
            print(f"[FAIL] {test.__name__}\n{traceback.format_exc()}")
    print(f"{3 - failed}/3 Python C-interface tests passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
