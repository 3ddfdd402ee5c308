"""Normalisation and embedding helpers shared by the DiT and Step-LLM."""

import math

import torch
from torch import nn

from .ops import cast_to


class RMSNorm(nn.Module):
    """RMS normalisation over the last dim: statistics in float32, result cast back, then x weight.

    Used for the DiT's per-head QK-norm (eps 1e-6, dim = head_dim) and Step-LLM's pre-norms
    (eps = layernorm_epsilon). ``weight`` has shape (dim,).
    """

    def __init__(self, dim, eps=1e-6, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x):
        x32 = x.float()
        normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return normed * cast_to(self.weight, x)


def sinusoidal_embedding(values, channels=256, max_period=10000.0):
    """Sinusoidal features of a 1-D tensor of values, cosine half first.

    values: (N,) any float dtype -> (N, channels) float32. Frequencies f_k = exp(-ln(max_period) k / (channels/2)),
    k = 0..channels/2-1; output [cos(v f_k) for all k] ++ [sin(v f_k) for all k].
    """
    half = channels // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    angles = values[:, None].float() * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
