#!/usr/bin/env python3
"""Rewrites a safetensors file of gate weights in a smaller format, keeping names, shapes and
metadata: how the shipped gates are made from the fp32 output of `seer train-gates`. Optimizer
tensors (names starting with "optimizer.") are dropped.

--format bf16 (default): every F32 tensor rounded to BF16 (round to nearest even).
--format int8: each projection weight (`*.mask_linear_k.weight`, `*.mask_linear_q.weight`,
  [heads, in, d_g], F32, F16 or BF16) becomes I8 codes q = round(w / scale) in [-127, 127] beside
  `<name>_scale` (F32, [heads, 1, d_g]): one scale per head and output column, the column's largest
  |w| over 127, so w ≈ q · scale (what seer's gate loader reads back). Other F32 tensors go to BF16.
A file that is already int8 is refused rather than rounded again.

Usage: python3 scripts/quantize_gates.py IN.safetensors OUT.safetensors [--format bf16|int8]
"""
import json
import struct
import sys

import numpy as np

from safetensors_io import write_safetensors


def to_bf16(values):
    """float32 array -> BF16 bytes, round to nearest even, NaN kept NaN."""
    bits = np.ascontiguousarray(values, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded[nan] = ((bits[nan] >> 16) | 0x40).astype("<u2")
    return rounded.tobytes()


def to_float(raw, dtype):
    if dtype == "F32":
        return np.frombuffer(raw, dtype="<f4").copy()
    if dtype == "F16":
        return np.frombuffer(raw, dtype="<f2").astype("<f4")
    if dtype == "BF16":
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view("<f4")
    raise ValueError(f"cannot read {dtype} as float")


def to_int8(w):
    """w [heads, in, d_g] -> (I8 codes, F32 scales [heads, 1, d_g])."""
    if not np.all(np.isfinite(w)):
        raise ValueError("non-finite gate weight")
    scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
    codes = np.rint(np.divide(w, scale, out=np.zeros_like(w), where=scale > 0))
    return np.clip(codes, -127, 127).astype(np.int8), scale.astype("<f4")


def main(src, dst, fmt):
    with open(src, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    body = data[8 + header_len:]
    metadata = header.pop("__metadata__", {})
    tensors = []
    for name in sorted(header, key=lambda n: header[n]["data_offsets"][0]):
        info = header[name]
        if name.startswith("optimizer."):
            continue
        begin, end = info["data_offsets"]
        raw, dtype, shape = body[begin:end], info["dtype"], info["shape"]
        if dtype == "I8" or name.endswith("_scale"):
            # Rounding again would round the scales to bf16 and keep the codes: precision lost silently.
            sys.exit(f"{src}: '{name}' is already quantized; start from the fp32 gates train-gates wrote")
        projection = name.endswith((".mask_linear_k.weight", ".mask_linear_q.weight"))
        if fmt == "int8" and projection and dtype in ("F32", "F16", "BF16"):
            codes, scale = to_int8(to_float(raw, dtype).reshape(shape))
            tensors.append((name, "I8", shape, codes.tobytes()))
            tensors.append((name + "_scale", "F32", scale.shape, scale.tobytes()))
            continue
        if dtype == "F32":
            raw, dtype = to_bf16(to_float(raw, dtype)), "BF16"
        tensors.append((name, dtype, shape, raw))
    write_safetensors(dst, tensors, metadata)


if __name__ == "__main__":
    args = sys.argv[1:]
    fmt = "bf16"
    if "--format" in args:
        i = args.index("--format")
        if i + 1 >= len(args) or args[i + 1] not in ("bf16", "int8"):
            sys.exit(__doc__)
        fmt = args[i + 1]
        del args[i:i + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    main(args[0], args[1], fmt)
