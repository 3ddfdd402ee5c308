"""HunyuanCLIP, Step-Video's second text encoder: HunyuanDiT's bilingual BERT text tower.

A plain post-norm BERT encoder (no pooler): embeddings (word + absolute position + token type 0)
-> LayerNorm, then N layers of [self-attention with the padding mask on the keys -> dense ->
residual -> LayerNorm ; intermediate dense -> activation -> output dense -> residual -> LayerNorm].
The output is the last layer's sequence (``last_hidden_state``) for every position, padding included.
Module and parameter names equal Hugging Face ``BertModel``'s (the checkpoint adds a ``bert.`` prefix).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .ops import DEFAULT_OPERATIONS

ACTIVATIONS = {  # BERT config ``hidden_act`` -> function ("gelu" is the exact erf GELU)
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass(frozen=True)
class HunyuanClipConfig:
    """Sizes of the BERT tower; the released HunyuanCLIP (Chinese BERT-large) is the default."""

    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    vocab_size: int = 47020
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"


class BertEmbeddings(nn.Module):
    def __init__(self, config: HunyuanClipConfig, operations, device=None, dtype=None):
        super().__init__()
        width = config.hidden_size
        self.word_embeddings = operations.Embedding(config.vocab_size, width, device=device, dtype=dtype)
        self.position_embeddings = operations.Embedding(config.max_positions, width, device=device, dtype=dtype)
        self.token_type_embeddings = operations.Embedding(config.type_vocab_size, width, device=device, dtype=dtype)
        self.LayerNorm = operations.LayerNorm(width, eps=config.layer_norm_eps, device=device, dtype=dtype)

    def forward(self, input_ids):
        """input_ids (B, L) -> (B, L, H); positions 0..L-1, token type 0 everywhere."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings(torch.zeros_like(positions))
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, config: HunyuanClipConfig, operations, device=None, dtype=None):
        super().__init__()
        width = config.hidden_size
        self.heads = config.num_heads
        self.query = operations.Linear(width, width, device=device, dtype=dtype)
        self.key = operations.Linear(width, width, device=device, dtype=dtype)
        self.value = operations.Linear(width, width, device=device, dtype=dtype)

    def forward(self, x, key_mask):
        """x (B, L, H), key_mask bool (B, 1, 1, L) True = attend -> (B, L, H)."""
        q, k, v = (proj(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask).transpose(1, 2).flatten(-2)


class DenseResidualNorm(nn.Module):
    """``LayerNorm(dense(x) + residual)`` — BERT's ``attention.output`` and ``output`` sub-layers."""

    def __init__(self, in_features, config: HunyuanClipConfig, operations, device=None, dtype=None):
        super().__init__()
        self.dense = operations.Linear(in_features, config.hidden_size, device=device, dtype=dtype)
        self.LayerNorm = operations.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, device=device, dtype=dtype)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class BertLayer(nn.Module):
    def __init__(self, config: HunyuanClipConfig, operations, device=None, dtype=None):
        super().__init__()
        self.attention = nn.Module()
        self.attention.self = BertSelfAttention(config, operations, device, dtype)
        self.attention.output = DenseResidualNorm(config.hidden_size, config, operations, device, dtype)
        self.intermediate = nn.Module()
        self.intermediate.dense = operations.Linear(config.hidden_size, config.intermediate_size,
                                                    device=device, dtype=dtype)
        self.output = DenseResidualNorm(config.intermediate_size, config, operations, device, dtype)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, x, key_mask):
        x = self.attention.output(self.attention.self(x, key_mask), x)
        return self.output(self.activation(self.intermediate.dense(x)), x)


class HunyuanClip(nn.Module):
    """``forward(input_ids (B, L), attention_mask (B, L) 0/1) -> last_hidden_state (B, L, hidden_size)``."""

    def __init__(self, config: HunyuanClipConfig, operations=DEFAULT_OPERATIONS, device=None, dtype=None):
        super().__init__()
        if config.hidden_act not in ACTIVATIONS:
            raise ValueError(f"HunyuanCLIP: unsupported hidden_act {config.hidden_act!r} "
                             f"(supported: {', '.join(ACTIVATIONS)}).")
        if config.hidden_size % config.num_heads:
            raise ValueError(f"HunyuanCLIP: hidden size {config.hidden_size} is not a multiple of "
                             f"{config.num_heads} heads.")
        self.config = config
        self.embeddings = BertEmbeddings(config, operations, device, dtype)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([BertLayer(config, operations, device, dtype)
                                            for _ in range(config.num_layers)])

    def forward(self, input_ids, attention_mask):
        if input_ids.shape[1] > self.config.max_positions:
            raise ValueError(f"HunyuanCLIP: {input_ids.shape[1]} tokens exceed its "
                             f"{self.config.max_positions} positions.")
        x = self.embeddings(input_ids)
        key_mask = attention_mask.to(device=x.device, dtype=torch.bool)[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, key_mask)
        return x
