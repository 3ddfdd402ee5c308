"""Memory model of a Step-Video run: DiT weights and activations (VAE decode lives with the VAE).

All functions return bytes. Activation counts are in units of L*D (tokens x hidden width) at the
peak of one transformer block; benchmarks/dit_memory.py checks them against measurements.

Peak inside a block (no chunking), per sample:
    residual stream x                      1 L*D
    norm/modulated input h                 1
    fused qkv + split/normed/roped q, k    ~6
    attention output + wo output           2
  feed-forward: inner activation and its GELU (4D wide each)   8 (replaces the attention part)
so about 11 L*D, dominated by the feed-forward. With token chunking the 4D-wide temporaries only
exist for ``chunk_tokens`` tokens, leaving about 7 L*D (the fused qkv of all tokens stays).
"""

import torch

BLOCK_PEAK_UNITS = 11.0          # L*D units at the peak of an unchunked block
CHUNKED_BLOCK_PEAK_UNITS = 7.0   # ... with feed-forward/attention chunked over tokens


def dtype_bytes(dtype):
    return torch.empty((), dtype=dtype).element_size()


def dit_tokens(frames, height, width, patch_size=1):
    """Video tokens of a latent of frames x height x width (latent units)."""
    return frames * (height // patch_size) * (width // patch_size)


def dit_weight_bytes(config, weight_dtype=torch.bfloat16):
    """Bytes of the DiT parameters with matmul weights in ``weight_dtype`` (norms/tables stay 2 bytes)."""
    d, inner, layers = config.hidden_size, config.ff_inner_dim, config.num_layers
    block_matmul = d * 3 * d + d * d + d * d + 2 * d * d + d * d + 2 * d * inner
    block_small = 6 * d + 4 * d + 4 * config.head_dim
    llm, clip = config.caption_channels[0], (config.caption_channels[1] if len(config.caption_channels) > 1 else 0)
    patch_in = config.in_channels * (2 if config.image_condition else 1)
    embedders = 2 if config.image_condition else 1
    other_matmul = (patch_in * d * config.patch_size ** 2 + embedders * (256 * d + d * d) + d * 6 * d
                    + llm * d + d * d + clip * d + d * config.out_channels * config.patch_size ** 2)
    return (layers * block_matmul + other_matmul) * dtype_bytes(weight_dtype) + \
        (layers * block_small + 16 * d) * 2


def dit_activation_bytes(config, batch, frames, height, width, dtype=torch.bfloat16, chunk_tokens=None,
                         attention_matrix=False):
    """Peak activation bytes of one DiT forward for a (batch, frames, height, width) latent.

    attention_matrix: True when the attention kernel materialises the (heads, L, L) score matrix
    (PyTorch's math fallback, e.g. on CPU); flash/memory-efficient kernels do not.
    """
    tokens = dit_tokens(frames, height, width, config.patch_size)
    units = CHUNKED_BLOCK_PEAK_UNITS if chunk_tokens and chunk_tokens < tokens else BLOCK_PEAK_UNITS
    size = dtype_bytes(dtype)
    total = units * tokens * config.hidden_size * size
    if attention_matrix:
        rows = min(tokens, chunk_tokens or tokens)
        total += config.num_heads * rows * tokens * 4
    return int(batch * total)
