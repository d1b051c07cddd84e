#!/usr/bin/env python3
"""Writes tests/formats/gguf_reference.json: what gguf-py's gguf.quants.dequantize produces, as
checksums of the float32 bits, for

  * synthetic tensors of every type seer dequantizes, whose block bytes come from splitmix64 (the
    C++ test generates the same bytes), and
  * every tensor of the built-in model (models/SmolLM2-135M-Instruct.Q4_1.gguf).

The C++ test must reproduce each checksum exactly, i.e. be bitwise equal to gguf-py.

Checksums of a tensor's float32 bit patterns b[i], modulo 2^64: "sum" = sum b[i] and
"weighted" = sum b[i] * (2i + 1). The odd weights are invertible modulo 2^64, so changing any one
value changes "weighted"; "samples" list a few (index, bits) pairs to make a mismatch readable.
Synthetic bytes include NaN scales; NaNs are mapped to 0x7fc00000 before summing, since the NaN
payload numpy propagates is not part of what the test checks.

Usage: pip install gguf==0.19.0 numpy; python3 tests/formats/make_gguf_reference.py
"""
import hashlib
import importlib.metadata
import json
import pathlib
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "tests" / "formats" / "gguf_reference.json"

SYNTHETIC_TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
                   T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
SYNTHETIC_ROWS = 2
SYNTHETIC_BLOCKS_PER_ROW = 8
SYNTHETIC_SEED_BASE = 1000  # seed = base + type number
MASK = (1 << 64) - 1


def splitmix64_bytes(seed: int, n: int) -> bytes:
    out = bytearray()
    x = seed
    while len(out) < n:
        x = (x + 0x9E3779B97F4A7C15) & MASK
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        out += z.to_bytes(8, "little")
    return bytes(out[:n])


def checksums(values: np.ndarray, canonical_nan: bool) -> dict:
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    bits = flat.view(np.uint32).astype(np.uint64)
    if canonical_nan:
        bits = np.where(np.isnan(flat), np.uint64(0x7FC00000), bits)
    n = bits.size
    weights = 2 * np.arange(n, dtype=np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        weighted = int(np.sum(bits * weights, dtype=np.uint64))
    samples = sorted({0, n // 7, n // 3, n // 2, n - 1})
    return {
        "elements": n,
        "sum": int(np.sum(bits, dtype=np.uint64)),
        "weighted": weighted,
        "samples": [[i, int(bits[i])] for i in samples],
    }


def synthetic() -> dict:
    types = {}
    for qtype in SYNTHETIC_TYPES:
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        row_bytes = SYNTHETIC_BLOCKS_PER_ROW * type_size
        raw = splitmix64_bytes(SYNTHETIC_SEED_BASE + int(qtype), SYNTHETIC_ROWS * row_bytes)
        data = np.frombuffer(raw, dtype=np.uint8).reshape(SYNTHETIC_ROWS, row_bytes)
        with np.errstate(all="ignore"):  # random scales include inf and NaN
            values = dequantize(data, qtype)
        assert values.shape == (SYNTHETIC_ROWS, SYNTHETIC_BLOCKS_PER_ROW * block), values.shape
        types[qtype.name] = {"number": int(qtype), **checksums(values, canonical_nan=True)}
    return {"rows": SYNTHETIC_ROWS, "blocks_per_row": SYNTHETIC_BLOCKS_PER_ROW,
            "seed_base": SYNTHETIC_SEED_BASE, "types": types}


def model() -> dict:
    sha = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    reader = gguf.GGUFReader(str(MODEL))
    tensors = {}
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type)
        assert values.size == t.n_elements, t.name
        tensors[t.name] = {"type": t.tensor_type.name, "dims": [int(d) for d in t.shape],
                           **checksums(values, canonical_nan=False)}
    return {"file": str(MODEL.relative_to(ROOT)), "sha256": sha, "tensors": tensors}


def main() -> None:
    if not MODEL.exists():
        sys.exit(f"{MODEL} is missing: run scripts/fetch_model.sh first")
    reference = {"gguf_py_version": importlib.metadata.version("gguf"),
                 "numpy_version": np.__version__, "synthetic": synthetic(), "model": model()}
    # One tensor per line keeps the file small and its diffs readable.
    lines = json.dumps(reference, separators=(",", ":"))
    lines = lines.replace('},"', '},\n"')
    OUT.write_text(lines + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(reference['model']['tensors'])} model tensors)")


if __name__ == "__main__":
    main()
