#!/usr/bin/env python3
"""Perplexity of the built-in model computed by Hugging Face transformers, independently of seer.
It scores the same windows as `seer perplexity` (src/model/perplexity.cpp) so the two PPLs can be
compared directly.

    python3 -m venv .venv-hf
    .venv-hf/bin/pip install torch transformers gguf numpy accelerate
    .venv-hf/bin/python bench/hf_reference_ppl.py ../shared/corpus/dev/emma.txt \
        --context 8192 --max-windows 1 [--json]

The model comes straight from the GGUF: `AutoModelForCausalLM.from_pretrained(..., gguf_file=...)`,
float32, sdpa attention on the CPU. transformers dequantizes through gguf-py and undoes llama.cpp's
Q/K row permutation itself, so none of seer's loading code is involved.

Windows work as in seer: the whole text is tokenized with no BOS, cut into consecutive windows of
`--context` tokens (a shorter text is one window), and each window runs from an empty cache. The
logits at window indices [length/2, length - 1) are scored, each against the next token (first
index context/2, or tokens/2 for a short text). `--bos` puts BOS in each window's first place, as
seer's `--bos` does; seer's default is the GGUF's add_bos_token, false for SmolLM2, and here BOS is
off unless asked. `--stride` is not reproduced. One difference: `--max-windows` here counts windows
per file, whereas seer counts them over all its files together, so compare against one seer run per
file.

Tokenization: transformers' GGUF tokenizer (vocabulary, merges and control tokens from the file),
with one fix. The GGUF names its pre-tokenizer "smollm", which transformers does not map, so it
falls back to plain GPT-2 byte-level splitting. SmolLM2's published tokenizer.json (and llama.cpp's
"smollm" pre-tokenizer) first splits every digit on its own, so that is restored here; without it
the ids differ wherever digits occur. The ids are checked against tests/data/tokenizer/books.json
(ids of each dev book's first 20,000 characters, made by HF `tokenizers`) when the file is one of
those books. On 2026-11-29 they were also compared with seer's ids of all six dev books, whole: identical.
"""
import argparse
import importlib.metadata
import json
import math
import time
from pathlib import Path

import gguf
import torch
import transformers
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parents[1]
BOOKS_JSON = REPO / "tests/data/tokenizer/books.json"
LM_HEAD_ROWS = 512  # logits for this many positions at a time, so [8192, 49152] is never held


def load_tokenizer(gguf_path):
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    field = gguf.GGUFReader(gguf_path).fields["tokenizer.ggml.pre"]
    pre = field.contents()
    if pre != "smollm":
        raise SystemExit(f"{gguf_path}: pre-tokenizer {pre!r}; this script only knows how to fix 'smollm'")
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    return tokenizer


def check_ids_against_books_json(tokenizer, name, text):
    """True/False when `name` is a book in books.json, None otherwise."""
    reference = json.loads(BOOKS_JSON.read_text(encoding="utf-8"))
    book = reference["books"].get(name)
    if book is None:
        return None
    ids = tokenizer(text[:reference["chars"]], add_special_tokens=False)["input_ids"]
    return ids == book["ids"]["smollm"]


@torch.inference_mode()
def score_window(model, window, first):
    """NLLs of the predictions at indices [first, len - 1), each -log softmax(logits)[next token]."""
    ids = torch.tensor([window])
    hidden = model.model(input_ids=ids).last_hidden_state[0]
    targets = ids[0, first + 1:]
    nll = []
    for start in range(first, len(window) - 1, LM_HEAD_ROWS):
        stop = min(start + LM_HEAD_ROWS, len(window) - 1)
        # float32 logits as seer has them; log-sum-exp in double, as seer's token_nll accumulates.
        logits = model.lm_head(hidden[start:stop]).double()
        nll.append(torch.logsumexp(logits, dim=-1) - logits.gather(1, targets[start - first:stop - first, None])[:, 0])
    return torch.cat(nll)


def perplexity(count, total, total_squares):
    """PPL and its delta-method standard error, as seer's NllStats (population variance / (n - 1))."""
    mean = total / count
    variance = total_squares / count - mean * mean
    error = math.exp(mean) * math.sqrt(variance / (count - 1)) if count > 1 and variance > 0 else 0.0
    return math.exp(mean), error


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--model", type=Path, default=REPO / "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--max-windows", type=int, default=0, help="windows per file (0: all)")
    parser.add_argument("--bos", action="store_true", help="BOS in each window's first place")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.time()
    tokenizer = load_tokenizer(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model.parent, gguf_file=args.model.name,
                                                 dtype=torch.float32, attn_implementation="sdpa").eval()
    load_seconds = time.time() - start

    results, all_nll = [], []
    for path in args.files:
        # Bytes decoded by hand: text mode would turn CRLF into LF, which seer does not.
        text = path.read_bytes().decode("utf-8")
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids_match = check_ids_against_books_json(tokenizer, path.name, text)
        if ids_match is False:
            raise SystemExit(f"{path.name}: token ids differ from {BOOKS_JSON}")
        length = min(args.context, len(tokens))
        begins = range(0, len(tokens) - length + 1, length) if length >= 2 else []
        if args.max_windows:
            begins = begins[:args.max_windows]
        windows, file_nll = [], []
        for begin in begins:
            window = tokens[begin:begin + length]
            if args.bos:
                window[0] = tokenizer.bos_token_id
            window_start = time.time()
            nll = score_window(model, window, length // 2)
            file_nll.append(nll)
            windows.append({"begin": begin, "length": length, "first": length // 2, "scored_tokens": len(nll),
                            "nll_sum": nll.sum().item(), "ppl": math.exp(nll.mean().item()),
                            "seconds": time.time() - window_start})
            if not args.json:
                w = windows[-1]
                print(f"{path.name} [{begin}, {begin + length}): {w['scored_tokens']} tokens, NLL sum "
                      f"{w['nll_sum']:.4f}, PPL {w['ppl']:.4f} ({w['seconds']:.1f} s)", flush=True)
        all_nll += file_nll
        scored = torch.cat(file_nll) if file_nll else torch.zeros(0, dtype=torch.float64)
        results.append({"path": str(path), "tokens": len(tokens), "ids_checked_against_books_json": ids_match,
                        "scored_tokens": len(scored), "ppl": math.exp(scored.mean().item()) if file_nll else None,
                        "windows": windows})

    nll = torch.cat(all_nll)
    ppl, ppl_error = perplexity(len(nll), nll.sum().item(), (nll * nll).sum().item())
    summary = {"model": str(args.model), "context": args.context, "bos": args.bos, "attention": "sdpa",
               "dtype": "float32", "threads": args.threads, "scored_tokens": len(nll),
               "mean_nll": nll.mean().item(), "ppl": ppl, "ppl_stderr": ppl_error, "load_seconds": load_seconds,
               "seconds": time.time() - start - load_seconds, "files": results,
               "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                            "gguf": importlib.metadata.version("gguf")}}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{len(nll)} scored tokens: PPL = {ppl:.4f} +/- {ppl_error:.5f}")


if __name__ == "__main__":
    main()
