"""Spatial tiling for the Video-VAE: overlapping tiles, linear-ramp blending, automatic tile size.

Temporal streaming in the official 17-frame chunks is exact (vae.py). Spatial tiles are an
approximation: each tile is decoded (or encoded) on its own, so the per-frame GroupNorm statistics,
the mid attention and the zero padding at tile borders see the tile instead of the whole frame.
Overlapping tiles are blended with weights that ramp linearly from the inner edges of each tile,
normalised by their sum, which hides the seams. In exchange the peak memory is set by the tile.

Tiles are planned on the latent grid (units of 16 pixels), so pixel tiles and latent tiles line up
exactly for both directions.

Memory model (activations only, one chunk): convolutions stream over time slabs and the 2-D
up-sampling is fused into the next Resnet (vae_blocks.py), so decoding peaks in the Resnets of the
finest level, each holding its input and its output (2 * widths[0] channels) for all
2^k (2*3 - 1) = 20 internal frames: 2 * 128 * 20 = 5 120 values per output pixel for the released
decoder, 20 KB in float32, 10 KB in bfloat16. Encoding peaks in the full-resolution Resnets the
same way: 2 * widths[0] channels for 17 frames. The margins cover slab temporaries, convolution
workspace and allocator slack; measured on CPU (benchmarks/vae_decode.py, released decoder, fp32,
one chunk): 25.5 KB per output pixel at 256x448 untiled, 25.6 KB per tile pixel with 160 px tiles.
"""

import math

import torch

DEFAULT_OVERLAP_PX = 64
DECODE_MARGIN = 1.3
ENCODE_MARGIN = 1.3
FREE_MEMORY_SHARE = 0.8  # of the free memory, what a tile may use (the rest: weights in flight, fragmentation)


def tile_spans(size, tile, overlap):
    """[(start, stop), ...] tiles of length ``tile`` covering range(size), neighbours overlapping by at
    least ``overlap`` (the last tile is moved back to end at ``size``)."""
    if tile >= size:
        return [(0, size)]
    starts = list(range(0, size - tile, tile - overlap)) + [size - tile]
    return [(start, start + tile) for start in starts]


def edge_ramp(start, stop, size, ramp):
    """Blend weights (stop - start,) of one tile along one axis: linear ramps of length ``ramp`` at the
    edges that are inside the frame, 1 elsewhere; all weights > 0."""
    position = torch.arange(start, stop, dtype=torch.float32) + 0.5
    weight = torch.ones(stop - start)
    if ramp > 0 and start > 0:
        weight = torch.minimum(weight, (position - start) / ramp)
    if ramp > 0 and stop < size:
        weight = torch.minimum(weight, (stop - position) / ramp)
    return weight


class TileGrid:
    """Overlapping tiles of a (height, width) grid (latent units), with blend weights at any scale."""

    def __init__(self, height, width, tile=None, overlap=0):
        self.height, self.width, self.overlap = height, width, overlap
        tile = tile or max(height, width)
        self.tiles = [(rows, cols) for rows in tile_spans(height, tile, overlap)
                      for cols in tile_spans(width, tile, overlap)]

    def __len__(self):
        return len(self.tiles)

    def weights(self, index, scale):
        """(rows, cols) blend weights of tile ``index`` on the grid scaled by ``scale`` (16 = pixels)."""
        (r0, r1), (c0, c1) = self.tiles[index]
        ramp = self.overlap * scale
        rows = edge_ramp(r0 * scale, r1 * scale, self.height * scale, ramp)
        cols = edge_ramp(c0 * scale, c1 * scale, self.width * scale, ramp)
        return rows[:, None] * cols[None, :]


def plan_tiles(height, width, tile_px, overlap_px, factor):
    """The TileGrid for a (height, width) latent grid given pixel sizes (None: one tile, the whole frame)."""
    if tile_px is None:
        return TileGrid(height, width)
    overlap_px = DEFAULT_OVERLAP_PX if overlap_px is None else overlap_px
    if tile_px % factor or overlap_px % factor or tile_px <= overlap_px:
        raise ValueError(f"tile size {tile_px} px and overlap {overlap_px} px must be multiples of {factor} "
                         f"with the tile larger than the overlap.")
    return TileGrid(height, width, tile_px // factor, overlap_px // factor)


def map_tiles(fn, x, grid, in_scale, out_scale, out_device, on_tile=None):
    """``fn`` applied to each tile of ``x`` (B, C, T, H, W) and blended: (B, C', T', H', W') on ``out_device``.

    Tile (rows, cols) of ``grid`` covers rows*in_scale of x and rows*out_scale of the result.
    ``on_tile()`` is called after every tile but the last (the caller reports that one once it
    has stored the result). A single tile is just ``fn(x)``.
    """
    if len(grid) == 1:
        return fn(x).to(out_device)
    blended = weight_sum = None
    for index, ((r0, r1), (c0, c1)) in enumerate(grid.tiles):
        part = fn(x[..., r0 * in_scale:r1 * in_scale, c0 * in_scale:c1 * in_scale]).to(out_device)
        if blended is None:
            shape = part.shape[:3] + (grid.height * out_scale, grid.width * out_scale)
            blended = torch.zeros(shape, dtype=torch.float32, device=out_device)
            weight_sum = torch.zeros(shape[3:], dtype=torch.float32, device=out_device)
        weight = grid.weights(index, out_scale).to(out_device)
        rows, cols = slice(r0 * out_scale, r1 * out_scale), slice(c0 * out_scale, c1 * out_scale)
        blended[..., rows, cols].addcmul_(part, weight)
        weight_sum[rows, cols] += weight
        del part
        if index < len(grid) - 1 and on_tile is not None:
            on_tile()
    return blended.div_(weight_sum).to(x.dtype)


# --- automatic tile size -------------------------------------------------------------------------

def decode_bytes_per_px(decoder_config, element_size, latent_frames=3):
    """Peak activation bytes per output pixel when decoding one chunk of ``latent_frames`` (module docstring)."""
    frames = 2 ** len(decoder_config.temporal_up_layers) * (2 * latent_frames - 1)
    return DECODE_MARGIN * 2 * decoder_config.widths[0] * frames * element_size


def encode_bytes_per_px(encoder_config, element_size, frames=17):
    """Peak activation bytes per input pixel when encoding one chunk of ``frames`` frames."""
    return ENCODE_MARGIN * 2 * encoder_config.widths[0] * frames * element_size


def auto_tile_px(free_bytes, bytes_per_px, height, width, factor=16, min_px=128):
    """The largest tile (pixels, a multiple of ``factor``) whose activations fit in ``free_bytes``.

    Tiles are squares of side s clipped to the frame, so a tile covers min(s, H) * min(s, W)
    pixels. Returns None when the whole frame fits (no tiling: exact), else s >= ``min_px``.
    """
    area = FREE_MEMORY_SHARE * free_bytes / bytes_per_px
    if height * width <= area:
        return None
    short = min(height, width)
    side = area / short if area / short >= short else math.sqrt(area)
    return max(min_px, int(side) // factor * factor)


def work_bytes_per_px(vae, direction):
    """Peak activation bytes per output pixel of one chunk of ``vae`` in its dtype; direction "decode" or
    "encode" (the one estimate the tile planner and the nodes' memory requests share)."""
    element_size = torch.empty((), dtype=vae.dtype).element_size()
    if direction == "decode":
        return decode_bytes_per_px(vae.config.decoder, element_size, vae.config.latent_len)
    return encode_bytes_per_px(vae.config.encoder, element_size, vae.config.frame_len)
