"""Step-LLM, the 20B bilingual decoder Step-Video uses as its main text encoder (official ``Step1Model``).

Token embedding (no positional table) -> N pre-norm blocks ``x += Attn(RMSNorm(x)); x += FFN(RMSNorm(x))``
-> the last block's output for every position. There is no final norm and no LM head.

Attention is grouped-query: ``wqkv`` rows are [Q of all heads, head-major ; for each KV group (k ; v)],
query head h reads KV group h // (heads / groups). It is causal with the "sqrt-ALiBi" additive bias
``-slope_h * sqrt(i - j)`` (see :func:`alibi_slopes`), computed in float32 and cast back to the
activation dtype — our plain-PyTorch stand-in for the closed-source CUDA op of the official code.
The official encoder passes an attention mask that this op ignores: every position attends causally
over all positions, padding included. Padding is at the end, so causality alone keeps the valid
positions independent of it. Module and parameter names equal the official state-dict keys.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .norms import RMSNorm
from .ops import DEFAULT_OPERATIONS

FFN_MULTIPLE = 256  # the official FeedForward rounds ffn_hidden_size up to a multiple of this


def ffn_width(ffn_hidden_size):
    """The FFN width the official code builds for a configured ``ffn_hidden_size`` (rounded up to 256)."""
    return FFN_MULTIPLE * math.ceil(ffn_hidden_size / FFN_MULTIPLE)


@dataclass(frozen=True)
class StepLLMConfig:
    """Sizes of a Step-LLM; the released model (19.6 B parameters) is the default."""

    hidden_size: int = 6144
    num_layers: int = 48
    num_heads: int = 48
    num_groups: int = 8  # KV groups (GQA)
    ffn_width: int = 16896  # already rounded to a multiple of 256
    vocab_size: int = 65536
    eps: float = 1e-5

    @property
    def head_dim(self):
        return self.hidden_size // self.num_heads

    @property
    def wqkv_rows(self):
        return self.hidden_size + 2 * self.num_groups * self.head_dim


def alibi_slopes(num_heads):
    """ALiBi slopes (num_heads,) float32: with p the largest power of two <= num_heads, heads 0..p-1 get
    2^(-8(h+1)/p) and the remaining heads 2^(-4(2m+1)/p), m = 0, 1, ..."""
    p = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = [2.0 ** (-8.0 * (h + 1) / p) for h in range(p)]
    slopes += [2.0 ** (-4.0 * (2 * m + 1) / p) for m in range(num_heads - p)]
    return torch.tensor(slopes, dtype=torch.float32)


def sqrt_alibi_bias(num_heads, length, device=None):
    """Additive float32 attention bias (num_heads, L, L): -slope_h * sqrt(i - j) for j <= i, -inf above."""
    pos = torch.arange(length, device=device)
    distance = (pos[:, None] - pos[None, :]).float()
    bias = -alibi_slopes(num_heads).to(device)[:, None, None] * distance.clamp(min=0).sqrt()
    return bias.masked_fill(distance < 0, float("-inf"))


class GroupedQueryAttention(nn.Module):
    def __init__(self, config: StepLLMConfig, operations, device=None, dtype=None):
        super().__init__()
        self.heads, self.groups, self.head_dim = config.num_heads, config.num_groups, config.head_dim
        self.wqkv = operations.Linear(config.hidden_size, config.wqkv_rows, bias=False, device=device, dtype=dtype)
        self.wo = operations.Linear(config.hidden_size, config.hidden_size, bias=False, device=device, dtype=dtype)

    def forward(self, x, bias):
        """x (B, L, D), bias float32 (heads, L, L) from :func:`sqrt_alibi_bias` -> (B, L, D)."""
        q, kv = self.wqkv(x).split([self.heads * self.head_dim, 2 * self.groups * self.head_dim], dim=-1)
        q = q.unflatten(-1, (self.heads, self.head_dim))
        k, v = kv.unflatten(-1, (self.groups, 2 * self.head_dim)).chunk(2, dim=-1)
        per_group = self.heads // self.groups
        k, v = (t.repeat_interleave(per_group, dim=2) for t in (k, v))  # head h -> group h // per_group
        q, k, v = (t.transpose(1, 2).float() for t in (q, k, v))  # (B, heads, L, d), float32 as the op
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.head_dim ** -0.5)
        return self.wo(out.transpose(1, 2).flatten(-2).to(x.dtype))


class SwiGLU(nn.Module):
    """``w1`` = [gate ; up] (2 * ffn_width rows), out = w2(SiLU(gate) * up); no biases."""

    def __init__(self, dim, width, operations, device=None, dtype=None):
        super().__init__()
        self.w1 = operations.Linear(dim, 2 * width, bias=False, device=device, dtype=dtype)
        self.w2 = operations.Linear(width, dim, bias=False, device=device, dtype=dtype)

    def forward(self, x):
        gate, up = self.w1(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class StepLLMBlock(nn.Module):
    def __init__(self, config: StepLLMConfig, operations, device=None, dtype=None):
        super().__init__()
        self.attention_norm = RMSNorm(config.hidden_size, config.eps, device=device, dtype=dtype)
        self.attention = GroupedQueryAttention(config, operations, device, dtype)
        self.ffn_norm = RMSNorm(config.hidden_size, config.eps, device=device, dtype=dtype)
        self.feed_forward = SwiGLU(config.hidden_size, config.ffn_width, operations, device, dtype)

    def forward(self, x, bias):
        x = x + self.attention(self.attention_norm(x), bias)
        return x + self.feed_forward(self.ffn_norm(x))


class StepLLM(nn.Module):
    """Step-LLM text encoder: ``forward(input_ids (B, L) int64) -> hidden states (B, L, hidden_size)``.

    The activations (and the output) take ``activation_dtype`` when set (loaders set it when the weights
    stay in their stored dtypes, e.g. a quantized file), else the embedding table's dtype (the compute
    dtype the model was loaded in).
    """

    def __init__(self, config: StepLLMConfig, operations=DEFAULT_OPERATIONS, device=None, dtype=None):
        super().__init__()
        if config.hidden_size % config.num_heads or config.num_heads % config.num_groups:
            raise ValueError(f"Step-LLM: hidden size {config.hidden_size}, {config.num_heads} heads and "
                             f"{config.num_groups} KV groups do not divide evenly.")
        self.config = config
        self.tok_embeddings = nn.Module()
        self.tok_embeddings.word_embeddings = operations.Embedding(config.vocab_size, config.hidden_size,
                                                                   device=device, dtype=dtype)
        self.transformer = nn.Module()
        self.transformer.layers = nn.ModuleList(
            [StepLLMBlock(config, operations, device, dtype) for _ in range(config.num_layers)])
        self.activation_dtype = None

    def forward(self, input_ids):
        """input_ids (B, L): rows [BOS=1, ids..., EOS=2, PAD=2...]. Returns (B, L, D) for every position."""
        x = self.tok_embeddings.word_embeddings(input_ids)
        if self.activation_dtype is not None:
            x = x.to(self.activation_dtype)
        bias = sqrt_alibi_bias(self.config.num_heads, input_ids.shape[1], device=x.device)
        for block in self.transformer.layers:
            x = block(x, bias)
        return x
