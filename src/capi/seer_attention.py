"""seer's CUDA attention kernels from PyTorch: a thin ctypes wrapper over libseer_attention.so, the C
interface of src/capi/seer_attention.h (sm_90a: Hopper GPUs).

    import torch, seer_attention
    seer = seer_attention.SeerAttention()            # or SeerAttention("path/to/libseer_attention.so")
    layout = seer.layout([8192, 3000], q_heads=32)   # packed sequences, built once per batch shape
    out, lse = seer.dense(q, k, v, layout)           # q [tokens, 32, d], k and v [tokens, 8, d]
    mask = seer.mask(layout, indptr, indices)        # CSR over (sequence, head, 64-token query block)
    out, lse = seer.block_sparse(q, k, v, mask)

Tensors are CUDA, contiguous, bf16 or fp16, in seer's layout [tokens, heads, head_dim] (head_dim 64
or 128), several causal sequences packed along the token axis; grouped-query attention takes K and
V with their own (fewer) heads, not repeated. Each call runs on torch's current stream, so it can
be captured into a CUDA graph. lse is [q_heads, tokens] float32, natural log. A failure raises
SeerError with the library's reason.
"""
import ctypes
import os

import torch

_DTYPES = {torch.bfloat16: 0, torch.float16: 1}


class SeerError(RuntimeError):
    """A call the library refused, with its reason."""


def _default_library():
    """$SEER_ATTENTION_LIB, else the repository's build trees, else the loader's search path."""
    if os.environ.get("SEER_ATTENTION_LIB"):
        return os.environ["SEER_ATTENTION_LIB"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for candidate in ("build/src", "build-cuda/src", ".devbin"):
        path = os.path.join(root, candidate, "libseer_attention.so")
        if os.path.exists(path):
            return path
    return "libseer_attention.so"


class Layout:
    """Device geometry of packed causal sequences for a number of query heads."""

    def __init__(self, lib, lengths, q_heads):
        self._lib = lib
        self.lengths = [int(n) for n in lengths]
        self.q_heads = int(q_heads)
        self.tokens = sum(self.lengths)
        c_lengths = (ctypes.c_int64 * len(self.lengths))(*self.lengths)
        self._handle = lib.call(lib.c.seer_layout_create, c_lengths, len(self.lengths), self.q_heads)

    def __del__(self):
        if getattr(self, "_handle", None):
            self._lib.c.seer_layout_destroy(self._handle)


class BlockMask:
    """A validated CSR block mask on the device, usable with the layout it was made for."""

    def __init__(self, lib, layout, indptr, indices):
        indptr = torch.as_tensor(indptr, dtype=torch.int64).cpu().contiguous()
        indices = torch.as_tensor(indices, dtype=torch.int32).cpu().contiguous()
        self._lib, self.layout = lib, layout
        self._handle = lib.call(lib.c.seer_mask_create, layout._handle,
                                ctypes.cast(indptr.data_ptr(), ctypes.POINTER(ctypes.c_int64)), indptr.numel() - 1,
                                ctypes.cast(indices.data_ptr(), ctypes.POINTER(ctypes.c_int32)))

    def __del__(self):
        if getattr(self, "_handle", None):
            self._lib.c.seer_mask_destroy(self._handle)


class SeerAttention:
    """The library, loaded once; makes layouts and masks and runs the forwards."""

    def __init__(self, path=None):
        c = ctypes.CDLL(path or _default_library())
        p, i, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
        errors = [ctypes.c_char_p, ctypes.c_size_t]
        c.seer_layout_create.restype = p
        c.seer_layout_create.argtypes = [ctypes.POINTER(i64), i, i] + errors
        c.seer_layout_destroy.argtypes = [p]
        c.seer_mask_create.restype = p
        c.seer_mask_create.argtypes = [p, ctypes.POINTER(i64), i64, ctypes.POINTER(ctypes.c_int32)] + errors
        c.seer_mask_destroy.argtypes = [p]
        c.seer_dense_forward.restype = i
        c.seer_dense_forward.argtypes = [p] * 6 + [i] * 4 + [p] + errors
        c.seer_block_sparse_forward.restype = i
        c.seer_block_sparse_forward.argtypes = [p] * 7 + [i] * 4 + [p] + errors
        self.c = c
        self._error = ctypes.create_string_buffer(1024)

    def call(self, fn, *args):
        """fn(*args, error buffer): its handle or 0, or SeerError with the library's reason."""
        result = fn(*args, self._error, len(self._error))
        if result is None or result == -1:
            raise SeerError(self._error.value.decode(errors="replace"))
        return result

    def layout(self, lengths, q_heads):
        return Layout(self, lengths, q_heads)

    def mask(self, layout, indptr, indices):
        return BlockMask(self, layout, indptr, indices)

    def _forward(self, fn, layout, extra, q, k, v, out, lse):
        for name, t in (("q", q), ("k", k), ("v", v)):
            if not (t.is_cuda and t.dim() == 3 and t.is_contiguous()):
                raise SeerError(f"{name} must be a contiguous CUDA tensor [tokens, heads, head_dim]")
            if t.dtype != q.dtype or t.dtype not in _DTYPES:
                raise SeerError(f"q, k and v must all be bfloat16 or all float16, {name} is {t.dtype}")
        if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[2] != q.shape[2]:
            raise SeerError(f"shapes do not fit: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
        if q.shape[0] != layout.tokens:
            raise SeerError(f"the layout holds {layout.tokens} tokens, q has {q.shape[0]}")
        out = torch.empty_like(q) if out is None else out
        lse = torch.empty(q.shape[1], q.shape[0], device=q.device, dtype=torch.float32) if lse is None else lse
        if out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous():
            raise SeerError("out must be contiguous, with q's shape and dtype")
        if tuple(lse.shape) != (q.shape[1], q.shape[0]) or lse.dtype != torch.float32 or not lse.is_contiguous():
            raise SeerError("lse must be contiguous float32 [q_heads, tokens]")
        stream = torch.cuda.current_stream(q.device).cuda_stream
        self.call(fn, layout._handle, *extra, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
                  lse.data_ptr(), _DTYPES[q.dtype], q.shape[1], k.shape[1], q.shape[2], stream)
        return out, lse

    def dense(self, q, k, v, layout, out=None, lse=None):
        """Dense causal attention: (out [tokens, q_heads, d], lse [q_heads, tokens])."""
        return self._forward(self.c.seer_dense_forward, layout, (), q, k, v, out, lse)

    def block_sparse(self, q, k, v, mask, out=None, lse=None):
        """Causal attention over the 64x64 blocks `mask` keeps; a row that keeps none gives zeros and an
        lse of -inf."""
        return self._forward(self.c.seer_block_sparse_forward, mask.layout, (mask._handle,), q, k, v, out, lse)
