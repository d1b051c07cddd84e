#!/usr/bin/env python3
"""Writes small valid GGUF, safetensors and gates files to seed the fuzzers: OUT/gguf/*,
OUT/safetensors/* and OUT/gates/* (gates for fuzz_gates.cpp's 2-layer model: 4 query and 2 KV heads
of dimension 8). Standard library only, so the fuzz script needs nothing installed.

Usage: python3 fuzz/make_seeds.py OUT
"""
import json
import pathlib
import random
import struct
import sys

# GGUF metadata value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_FORMATS = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "B",
                  U64: "Q", I64: "q", F64: "d"}
# ggml tensor types seer decodes: number -> (block size, bytes per block).
TENSOR_TYPES = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
                8: (32, 34), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210)}


def gguf_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(vtype: int, value) -> bytes:
    if vtype == STRING:
        return gguf_string(value)
    if vtype == ARRAY:
        element_type, elements = value
        return struct.pack("<IQ", element_type, len(elements)) + b"".join(
            gguf_value(element_type, e) for e in elements)
    return struct.pack("<" + SCALAR_FORMATS[vtype], value)


def gguf_file(version: int, kvs: list, tensors: list, alignment: int = 32) -> bytes:
    """kvs: (key, type, value); tensors: (name, dims, type number, data bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, vtype, value in kvs:
        out += gguf_string(key) + struct.pack("<I", vtype) + gguf_value(vtype, value)
    offset, offsets = 0, []
    for name, dims, ttype, data in tensors:
        offsets.append(offset)
        out += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ttype, offset)
        offset = (offset + len(data) + alignment - 1) // alignment * alignment
    if tensors:
        out += b"\0" * (-len(out) % alignment)
        data_start = len(out)
        for (_, _, _, data), at in zip(tensors, offsets):
            out += b"\0" * (data_start + at - len(out)) + data
    return out


def safetensors_file(tensors: list, metadata: dict | None = None) -> bytes:
    """tensors: (name, dtype, shape, data bytes)."""
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    rng = random.Random(7)
    every_value = [
        ("u8", U8, 7), ("i8", I8, -7), ("u16", U16, 700), ("i16", I16, -700), ("u32", U32, 70000),
        ("i32", I32, -70000), ("f32", F32, 0.5), ("bool", BOOL, 1), ("str", STRING, "llama"),
        ("u64", U64, 1 << 40), ("i64", I64, -(1 << 40)), ("f64", F64, 2.5),
        ("general.alignment", U32, 32),
        ("tokens", ARRAY, (STRING, ["a", "b", "<s>"])), ("scores", ARRAY, (F32, [0.0, -1.0, -2.0])),
        ("types", ARRAY, (I32, [1, 1, 3])), ("flags", ARRAY, (BOOL, [0, 1])),
        ("nested", ARRAY, (ARRAY, [(U8, [1, 2]), (STRING, ["x"])])),
    ]
    every_type = [(f"t{number}", [block], number, bytes(rng.randrange(256) for _ in range(size)))
                  for number, (block, size) in TENSOR_TYPES.items()]
    gguf_seeds = {
        "every_type_v3.gguf": gguf_file(3, every_value, every_type),
        "minimal_v2.gguf": gguf_file(2, [("general.name", STRING, "m")],
                                     [("w", [2, 2], 0, struct.pack("<4f", 1, 2, 3, 4))]),
        "aligned_64.gguf": gguf_file(3, [("general.alignment", U32, 64)],
                                     [("a", [3], 0, struct.pack("<3f", 1, 2, 3)), ("b", [1], 1, b"\0\x3c")], 64),
        "metadata_only.gguf": gguf_file(3, every_value[:12], []),
    }
    safetensors_seeds = {
        "dtypes.safetensors": safetensors_file(
            [("f32", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)), ("f16", "F16", [2], b"\0\x3c\0\xc0"),
             ("bf16", "BF16", [1], b"\x80\x3f"), ("i32", "I32", [1], struct.pack("<i", -1)),
             ("i64", "I64", [1], struct.pack("<q", 5)), ("u8", "U8", [3], b"\1\2\3")],
            {"format": "pt"}),
        "scalar_and_empty.safetensors": safetensors_file(
            [("s", "F32", [], struct.pack("<f", 42)), ("e", "F16", [0, 4], b"")]),
        "empty.safetensors": safetensors_file([]),
    }
    prefix = "model.layers.{}.self_attn.attn_gate."
    budgets = json.dumps({"keep_sink": True, "local_blocks": 3, "context": 8192, "calibration": "seed",
                          "top_p": {"0.1": [0.5, 0.6], "0.3": [0.8, 0.9]}})
    metadata = {"seerattn_gate_block_size": "64", "seerattn_gate_type": "Qavg_Kmaxminavg",
                "seer_layer_budgets": budgets}

    def floats(n: int) -> bytes:
        return struct.pack(f"<{n}f", *(rng.uniform(-1, 1) for _ in range(n)))

    def int8_weight(name: str, heads: int, rows: int, cols: int) -> list:
        codes = bytes(rng.randrange(256) for _ in range(heads * rows * cols))
        scales = struct.pack(f"<{heads * cols}f", *(rng.uniform(0.001, 0.1) for _ in range(heads * cols)))
        return [(name, "I8", [heads, rows, cols], codes), (name + "_scale", "F32", [heads, 1, cols], scales)]

    float_gates, int8_gates, biased_gates = [], [], []
    for layer in range(2):
        p = prefix.format(layer)
        float_gates.append((p + "mask_linear_k.weight", "F32", [4, 24, 8], floats(4 * 24 * 8)))
        biased_gates += [float_gates[-1], (p + "block_bias", "F32", [4, 10], floats(40))]
        int8_gates += int8_weight(p + "mask_linear_k.weight", 2, 24, 4)
        int8_gates += int8_weight(p + "mask_linear_q.weight", 4, 8, 4)
    gates_seeds = {
        "float.safetensors": safetensors_file(float_gates, metadata),
        "int8.safetensors": safetensors_file(int8_gates, metadata),
        "biased.safetensors": safetensors_file(biased_gates, {"seerattn_gate_block_size": "64"}),
    }
    for kind, seeds in (("gguf", gguf_seeds), ("safetensors", safetensors_seeds), ("gates", gates_seeds)):
        (out / kind).mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (out / kind / name).write_bytes(data)


if __name__ == "__main__":
    main()
