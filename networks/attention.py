"""The one attention entry point of the pack, with selectable backends.

``attention(q, k, v, mask=None, backend=..., options=None)`` takes and returns the (batch, tokens,
heads, head_dim) layout the DiT works in. Backends:

* ``"sdpa"`` — torch.nn.functional.scaled_dot_product_attention (default; any device, masks).
* ``"flash_attn"`` — flash-attn's ``flash_attn_func`` (CUDA, fp16/bf16, no mask).
* ``"sage"`` — SageAttention's ``sageattn`` (CUDA, fp16/bf16, no mask).
* ``"comfy"`` — the attention function a host registered with :func:`register_host_attention` (in
  ComfyUI: its own optimized attention, so its --use-sage-attention/--use-flash-attention flags and
  attention-override patches apply). It serves every call, masked ones included, and gets ``options``.

A call the chosen kernel backend cannot serve (a mask, fp32, CPU tensors) runs on SDPA instead, so
one model can mix masked cross-attention with a fast self-attention kernel. ``resolve_backend`` turns
a user's choice into an available backend and says in one line why it fell back.
"""

import importlib
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

HOST = "comfy"
BACKENDS = (HOST, "sdpa", "flash_attn", "sage")
_KERNELS = {}
_HOST_ATTENTION = []


def register_host_attention(function):
    """Make ``function(q, k, v, mask, options)`` (the layout and mask of :func:`attention`) the "comfy" backend."""
    _HOST_ATTENTION[:] = [function]


def _load_kernel(backend):
    if backend not in _KERNELS:
        try:
            if backend == "flash_attn":
                _KERNELS[backend] = importlib.import_module("flash_attn").flash_attn_func
            elif backend == "sage":
                _KERNELS[backend] = importlib.import_module("sageattention").sageattn
            else:
                _KERNELS[backend] = None
        except Exception as e:  # ImportError, or a broken CUDA extension raising at import
            log.debug("attention backend %s unavailable: %s", backend, e)
            _KERNELS[backend] = None
    return _KERNELS[backend]


def resolve_backend(choice):
    """(backend actually used, message or None). Unknown or unimportable choices fall back to SDPA."""
    if choice not in BACKENDS:
        raise ValueError(f"unknown attention backend {choice!r}; choose one of {', '.join(BACKENDS)}")
    if choice == "sdpa":
        return "sdpa", None
    if choice == HOST:
        if _HOST_ATTENTION:
            return HOST, None
        return "sdpa", "Step-Video: no host attention function is registered; using PyTorch SDPA."
    if _load_kernel(choice) is None:
        package = {"flash_attn": "flash-attn", "sage": "sageattention"}[choice]
        return "sdpa", f"Step-Video: attention backend '{choice}' is not available ({package} is not importable); using PyTorch SDPA."
    if not torch.cuda.is_available():
        return "sdpa", f"Step-Video: attention backend '{choice}' needs a CUDA GPU; using PyTorch SDPA."
    return choice, None


def _kernel_can_run(q, mask):
    return mask is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def attention(q, k, v, mask=None, backend="sdpa", options=None):
    """Softmax attention with scale 1/sqrt(head_dim).

    q: (B, Lq, H, D); k, v: (B, Lk, H, D); mask: optional bool, broadcastable to (B, H, Lq, Lk),
    True = attend; options: the host's per-call options (only the "comfy" backend reads them).
    Returns (B, Lq, H, D).
    """
    if backend == HOST and _HOST_ATTENTION:
        return _HOST_ATTENTION[0](q, k, v, mask, options)
    if backend not in ("sdpa", HOST) and _kernel_can_run(q, mask):
        if backend == "flash_attn":
            return _load_kernel("flash_attn")(q, k, v)
        if backend == "sage":
            return _load_kernel("sage")(q, k, v, tensor_layout="NHD", is_causal=False)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)
