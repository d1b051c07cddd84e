"""Writing safetensors files from Python without the safetensors package (the scripts beside this
one use it): an 8-byte little-endian header length, the JSON header padded with spaces to a multiple
of 8 bytes, then the tensors' bytes in order."""
import json
import struct


def write_safetensors(path, tensors, metadata):
    """tensors: (name, dtype such as "BF16", shape, raw little-endian bytes) in file order."""
    header, offset = {}, 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for _, _, _, raw in tensors:
            f.write(raw)
