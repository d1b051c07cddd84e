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


def main(src, dst):
    with open(src, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    body = data[8 + header_len:]
    metadata = header.pop("__metadata__", {})
    out_header, chunks, offset = {}, [], 0
    for name in sorted(header, key=lambda n: header[n]["data_offsets"][0]):
        info = header[name]
        if name.startswith("optimizer."):
            continue
        begin, end = info["data_offsets"]
        raw = body[begin:end]
        if info["dtype"] == "F32":
            bits = np.frombuffer(raw, dtype="<u4").astype(np.uint64)
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
            nan = (bits & 0x7FFFFFFF) > 0x7F800000
            rounded[nan] = ((bits[nan] >> 16) | 0x40).astype("<u2")
            raw, dtype = rounded.tobytes(), "BF16"
        else:
            dtype = info["dtype"]
        out_header[name] = {"dtype": dtype, "shape": info["shape"], "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    out_header["__metadata__"] = metadata
    encoded = json.dumps(out_header, separators=(",", ":")).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for c in chunks:
            f.write(c)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
