"""3-D rotary position embedding of the Step-Video DiT.

Each 128-wide head is split into contiguous bands [64, 32, 32] rotated by the token's frame, row
and column index (raw integers, no centring or scaling). Inside a band of width D the rotation is
"rotate-half": with a = first half, b = second half, angle_k = pos / 10000^(2k/D) (k < D/2),
a' = a cos - b sin, b' = b cos + a sin. Angles are computed in float32 and rounded to the
activation dtype before cos/sin, as the official code does, so bf16 runs match it bit for bit.
"""

import torch

BANDS = (64, 32, 32)  # head channels rotated by (frame, row, column)
BASE = 10000.0


def rope_grid(frames, height, width, device=None):
    """Integer (frame, row, column) of every token in frame-major order: (frames*height*width, 3)."""
    f = torch.arange(frames, device=device)
    y = torch.arange(height, device=device)
    x = torch.arange(width, device=device)
    return torch.cartesian_prod(f, y, x).reshape(-1, 3)


def rope_tables(grid, dtype, bands=BANDS):
    """cos and sin for every token and head channel: two (tokens, sum(bands)) tensors in ``dtype``."""
    angles = []
    for axis, width in enumerate(bands):
        inv_freq = 1.0 / (BASE ** (torch.arange(0, width, 2, device=grid.device).float() / width))
        band = grid[:, axis].float()[:, None] * inv_freq[None]
        angles.append(torch.cat([band, band], dim=-1))
    angles = torch.cat(angles, dim=-1).to(dtype)
    return angles.cos(), angles.sin()


def _rotate_half_per_band(x, bands):
    out = []
    for part in torch.split(x, bands, dim=-1):
        first, second = part.chunk(2, dim=-1)
        out.append(torch.cat([-second, first], dim=-1))
    return torch.cat(out, dim=-1)


def apply_rope(x, cos, sin, bands=BANDS):
    """Rotate ``x`` (B, tokens, heads, head_dim) by tables (tokens, head_dim) from :func:`rope_tables`."""
    cos = cos[None, :, None, :]
    sin = sin[None, :, None, :]
    return x * cos + _rotate_half_per_band(x, bands) * sin
