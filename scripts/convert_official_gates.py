#!/usr/bin/env python3
"""Converts the reference SeerAttention gate checkpoint (`attn_gate_weights.pth`, saved with
torch.save: a dict of tensors named model.layers.{i}.self_attn.attn_gate.mask_linear_k.weight
[H_q, 3d, d_g], or [H_kv, 3d, d_g] beside mask_linear_q.weight [H_q, d, d_g] when d_g != d) into
the safetensors file seer loads (`--gates FILE`). Names, shapes and dtype (usually bf16) are kept;
the gate settings of the repository's config.json, if given, go into the metadata.

Needs torch (to read the pickle). Usage:
  python3 scripts/convert_official_gates.py attn_gate_weights.pth gates.safetensors [config.json]
"""
import json
import sys

import torch

from safetensors_io import write_safetensors

DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
CONFIG_KEYS = ("seerattn_gate_type", "seerattn_gate_block_size", "seerattn_gate_hidden_size",
               "seerattn_sparsity_method", "seerattn_threshold", "seerattn_nz_ratio",
               "seerattn_last_block_dense", "base_model")


def main(src, dst, config_path=None):
    state = torch.load(src, map_location="cpu", weights_only=True)
    if "state_dict" in state:
        state = state["state_dict"]
    tensors = []
    for name in sorted(state):
        tensor = state[name].contiguous()
        if "attn_gate" not in name:
            continue
        if tensor.dtype not in DTYPES:
            sys.exit(f"{name}: unsupported dtype {tensor.dtype}")
        raw = tensor.view(torch.uint8).numpy().tobytes() if tensor.dtype == torch.bfloat16 else tensor.numpy().tobytes()
        tensors.append((name, DTYPES[tensor.dtype], tensor.shape, raw))
    if not tensors:
        sys.exit(f"{src}: no attn_gate tensors")
    metadata = {}
    if config_path:
        with open(config_path) as f:
            config = json.load(f)
        metadata = {k: str(config[k]) for k in CONFIG_KEYS if k in config}
    write_safetensors(dst, tensors, metadata)
    print(f"{dst}: {len(tensors)} tensors")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
