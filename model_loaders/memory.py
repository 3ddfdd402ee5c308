"""Memory model of a Step-Video run: DiT weights and activations (VAE decode: networks/vae_tiling.py).

All functions return bytes. Activations are counted in units of L*D (tokens x hidden width, in the
compute dtype) at the peak of one transformer block; benchmarks/dit_memory.py measures them.

Unchunked block, per sample: the residual stream x (1), the modulated input (1), the fused qkv and
the normalised/rotated q and k with their temporaries (~6), attention and projection outputs (2),
or in the feed-forward the 4D-wide inner activation and its GELU (8): about 11 units (measured
10.1 at 4096 tokens, 12.4 at 2048, width 6144, CPU).

Chunked over c tokens (networks/dit.py): only q, k, v of all tokens (3 units, the attention output
reuses q's storage) and x (1) span the whole sequence; the chunk's temporaries add about 9 units
times c / L: 4 + 9 c / L (measured at 4096 tokens: 5.2, 6.9 and 8.4 units at c / L = 1/8, 1/4, 1/2).
"""

import functools

import torch
from torch import nn

from ..networks.dit import StepVideoDiT
from ..networks.quant_formats import DEQUANTIZE_CHUNK_VALUES, FORMATS
from .materialize import build_on_meta, default_compute_dtype, weight_dtype_for
from .quantize import storage_for

# float32 latent-sized tensors alive at a sampling step's peak, by CFG passes (1: no CFG; 2: CFG), besides the
# DiT's activations: measured by benchmarks/input_checks.py (16.97 and 11.97 latents, host 0.3.75, CPU)
SAMPLER_LATENT_BUFFERS = {1: 12, 2: 17}
BLOCK_PEAK_UNITS = 11.0        # L*D units at the peak of an unchunked block
CHUNKED_BASE_UNITS = 4.0       # q, k, v and x across all tokens when chunked
CHUNK_TEMPORARY_UNITS = 9.0    # per-token temporaries of one chunk, times chunk / L


def dtype_bytes(dtype):
    return torch.empty((), dtype=dtype).element_size()


def dit_tokens(frames, height, width, patch_size=1):
    """Video tokens of a latent of frames x height x width (latent units)."""
    return frames * (height // patch_size) * (width // patch_size)


@functools.lru_cache(maxsize=16)
def dit_weight_bytes(config, weight_dtype=torch.bfloat16, compute_dtype=None):
    """Bytes of the DiT parameters as the loaders store them (matmul weights in ``weight_dtype``, the rest in
    the compute dtype: see materialize.weight_dtype_for), counted on a meta-device build of ``config``."""
    if compute_dtype is None:
        compute_dtype = default_compute_dtype(weight_dtype)
    model = build_on_meta(lambda: StepVideoDiT(config))
    total = 0
    for module in model.modules():
        for leaf, param in module.named_parameters(recurse=False):
            total += param.numel() * dtype_bytes(weight_dtype_for(module, leaf, weight_dtype, compute_dtype))
    return total


def stored_bytes(model, target):
    """Bytes of a meta-built ``model``'s parameters in a pre-quantized file of format ``target`` (the storage
    rule of quantize.storage_for; unquantized tensors in bf16, an fp8 weight with its 4-byte scale). The
    same bytes are what the loaded model holds resident: it keeps the file's storage as is."""
    total = 0
    for prefix, module in model.named_modules():
        for leaf, param in module.named_parameters(recurse=False):
            key = f"{prefix}.{leaf}" if prefix else leaf
            fmt = storage_for(key, tuple(param.shape), leaf == "weight" and isinstance(module, nn.Linear), target)
            if fmt is None:
                total += param.numel() * dtype_bytes(torch.bfloat16)
            else:
                total += int(param.numel() * FORMATS[fmt].bytes_per_weight()) + (0 if FORMATS[fmt].ggml else 4)
    return total


def dequantized_working_bytes(model, dtype=torch.bfloat16):
    """Bytes one call of the largest Linear of ``model`` adds when its weight is dequantized per call: the
    weight in the compute dtype plus the float32 temporaries of one dequantization step
    (networks/quant_formats.DEQUANTIZE_CHUNK_VALUES values, about 4 of them)."""
    largest = max((m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)), default=0)
    return largest * dtype_bytes(dtype) + 4 * DEQUANTIZE_CHUNK_VALUES * 4


def dit_activation_bytes(config, batch, frames, height, width, dtype=torch.bfloat16, chunk_tokens=None,
                         attention_matrix=False):
    """Peak activation bytes of one DiT forward for a (batch, frames, height, width) latent.

    attention_matrix: True when the attention kernel materialises the (heads, L, L) score matrix
    (PyTorch's math fallback, e.g. on CPU); flash/memory-efficient kernels do not.
    """
    tokens = dit_tokens(frames, height, width, config.patch_size)
    units = BLOCK_PEAK_UNITS
    if chunk_tokens and chunk_tokens < tokens:
        units = min(units, CHUNKED_BASE_UNITS + CHUNK_TEMPORARY_UNITS * chunk_tokens / tokens)
    size = dtype_bytes(dtype)
    total = units * tokens * config.hidden_size * size
    if attention_matrix:
        rows = min(tokens, chunk_tokens or tokens)
        total += config.num_heads * rows * tokens * 4
    return int(batch * total)


GIB = 1024 ** 3
LATENT_DTYPE_BYTES = 4  # latents are float32 between the nodes and in the sampling loop


def latent_bytes(shape):
    """Bytes of one float32 latent of ``shape`` (B, C, T, h, w)."""
    count = 1
    for size in shape:
        count *= int(size)
    return count * LATENT_DTYPE_BYTES


def sampler_latent_bytes(config, batch, frames, height, width, cfg_passes=2):
    """Latent-sized buffers of a sampling step besides the DiT's activations: the noise, the host's copy of
    the start latent, x, CFG's batched input, the model's outputs, the host's per-condition sums and counts,
    the combined denoised estimate, the velocity and the update's temporaries
    (SAMPLER_LATENT_BUFFERS[cfg_passes] float32 latents in all)."""
    return SAMPLER_LATENT_BUFFERS[cfg_passes] * latent_bytes((batch, config.in_channels, frames, height, width))



def run_estimate(config, batch, frames, height, width, weight_dtype=torch.bfloat16, compute_dtype=torch.bfloat16,
                 cfg_passes=2, cfg_batched=True, chunk_tokens=None):
    """Peak-memory estimate of sampling one latent (frames x height x width, latent units).

    Returns {"weights", "activations", "latents", "working", "peak", "tokens"} in bytes (tokens: per
    sample). ``cfg_passes`` is 2 with classifier-free guidance (1 without); batched CFG runs both passes
    as one batch. ``latents``: the sampler's latent-sized buffers (:func:`sampler_latent_bytes`);
    ``working`` = activations + latents, what must fit whatever happens to the weights. ``peak`` assumes
    every weight resident on the device; a host that streams weights needs only ``working`` plus the
    layers in flight.
    """
    weights = dit_weight_bytes(config, weight_dtype)
    per_forward = batch * (cfg_passes if cfg_batched else 1)
    activations = dit_activation_bytes(config, per_forward, frames, height, width, compute_dtype, chunk_tokens)
    latents = sampler_latent_bytes(config, batch, frames, height, width, cfg_passes)
    return {"weights": weights, "activations": activations, "latents": latents, "working": activations + latents,
            "peak": weights + activations + latents, "tokens": dit_tokens(frames, height, width, config.patch_size)}


def human_bytes(count):
    """'12.3 GiB' / '45 MiB' / '512 KiB'."""
    for unit, size in (("GiB", GIB), ("MiB", 1024 ** 2)):
        if count >= size:
            return f"{count / size:.1f} {unit}" if unit == "GiB" else f"{count / size:.0f} {unit}"
    return f"{count / 1024:.0f} KiB"


def describe_estimate(estimate, device_bytes=None, available_bytes=None):
    """One human line for logs and the node's report (device_bytes: total; available_bytes: free now)."""
    text = (f"{estimate['tokens']:,} tokens per sample; DiT weights {human_bytes(estimate['weights'])}, "
            f"activations {human_bytes(estimate['activations'])}, latent buffers {human_bytes(estimate['latents'])}, "
            f"peak with all weights resident {human_bytes(estimate['peak'])}")
    if device_bytes:
        text += f"; device has {human_bytes(device_bytes)}"
        if available_bytes is not None:
            text += f", {human_bytes(available_bytes)} available"
        if estimate["peak"] > (device_bytes if available_bytes is None else available_bytes):
            text += " (weights will be streamed from CPU memory)"
    return text
