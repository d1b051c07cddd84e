#!/usr/bin/env python3
"""Rewrites a safetensors file of gate weights with every F32 tensor rounded to BF16 (round to
nearest even), keeping names, shapes and metadata: how the shipped gates are made from the fp32
output of `seer train-gates`. Optimizer tensors (names starting with "optimizer.") are dropped.

Usage: python3 scripts/gates_to_bf16.py IN.safetensors OUT.safetensors
"""
import json
import struct
import sys

import numpy as np

from safetensors_io import write_safetensors


def main(src, dst):
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
        raw = body[begin:end]
        dtype = info["dtype"]
        if dtype == "F32":
            bits = np.frombuffer(raw, dtype="<u4").astype(np.uint64)
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
            nan = (bits & 0x7FFFFFFF) > 0x7F800000
            rounded[nan] = ((bits[nan] >> 16) | 0x40).astype("<u2")
            raw, dtype = rounded.tobytes(), "BF16"
        tensors.append((name, dtype, info["shape"], raw))
    write_safetensors(dst, tensors, metadata)

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
