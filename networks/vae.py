"""The Step-Video v2 Video-VAE (official ``AutoencoderKL(version=2)``) in plain PyTorch.

Geometry (released model): 16x spatial and causal 8x temporal compression, z = 64 latent channels.
Video is processed in independent chunks of ``frame_len`` = 17 pixel frames <-> ``latent_len`` = 3
latent frames; a final shorter chunk of 1 + 8k frames encodes to 1 + k latents (a single image
-> 1 latent) and a chunk of n latents decodes to 8(n - 1) + 1 frames. Decoding blends the two
frames at each chunk border (0.6 / 0.4, see :func:`blend_seam`). No latent scale or shift.

Layouts, as the official API: video (B, T, 3, H, W) in [-1, 1]; latents (B, T', z, H/16, W/16).

``VideoVAE.decode`` always streams: one latent chunk at a time, each finished chunk copied to
the output (on ``output_device``) before the next starts, so the compute device holds one chunk.
With ``tile_px`` it also splits each chunk into overlapping spatial tiles (see vae_tiling.py).
Without tiles the result equals the official full decode exactly.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from .ops import DEFAULT_OPERATIONS
from .vae_blocks import (AttentionBlock3D, CausalConv3d, Downsample2D, Downsample3D, PatchifyConv,
                         ResnetBlock3D, UnpatchifyConv, Upsample2D, Upsample3D, average_channel_groups,
                         channels_last, depth_to_space, duplicate_channels, group_norm_layer, group_norm_silu,
                         per_frame, space_to_depth)
from .vae_tiling import map_tiles, plan_tiles

RGB = 3
LATENT_CHUNK = 3  # latent frames per independent chunk (official ``latent_len``)
PATCH_FACTOR = 2  # space-to-depth factor of the v2 heads
PATCH_CHANNELS_PER_Z = 4 * PATCH_FACTOR ** 3  # width of the v2 patchify layers, per latent channel
LOGVAR_RANGE = (-30.0, 20.0)
SEAM_KEEP = 0.6  # weight a frame keeps of itself when the chunk-border frames are blended


def chunk_spans(length, chunk):
    """[(start, stop), ...] covering range(length) in pieces of ``chunk`` (the last may be shorter)."""
    return [(start, min(length, start + chunk)) for start in range(0, length, chunk)]


@dataclass(frozen=True)
class VAEEncoderConfig:
    """Official ``VideoEncoder`` arguments (released values as defaults)."""

    ch: int = 32
    ch_mult: tuple = (4, 8, 16, 16)
    z_channels: int = 64
    num_res_blocks: int = 2
    down_sampling_layer: tuple = (1, 2)  # levels whose downsampling is 3-D (the others halve H, W only)
    double_z: bool = True  # output [mean ; logvar]

    @property
    def widths(self):
        return tuple(self.ch * m for m in self.ch_mult)

    @property
    def time_factor(self):
        return 2 ** (len(self.down_sampling_layer) + 1)

    @property
    def spatial_factor(self):
        return 2 ** len(self.ch_mult)


@dataclass(frozen=True)
class VAEDecoderConfig:
    """Official ``VideoDecoder`` arguments (released values as defaults)."""

    ch: int = 128
    ch_mult: tuple = (1, 2, 4, 4)
    z_channels: int = 64
    num_res_blocks: int = 2
    temporal_up_layers: tuple = (2, 3)  # levels whose upsampling is 3-D (the others double H, W only)
    temporal_downsample: int = 4  # the decoder drops its first temporal_downsample - 1 frames

    def __post_init__(self):
        if self.temporal_downsample != 2 ** len(self.temporal_up_layers):
            raise ValueError(f"temporal_downsample {self.temporal_downsample} does not match "
                             f"{len(self.temporal_up_layers)} temporal upsampling levels (expected "
                             f"{2 ** len(self.temporal_up_layers)}); chunks would not decode to 8k+1 frames.")

    @property
    def widths(self):
        return tuple(self.ch * m for m in self.ch_mult)

    @property
    def time_factor(self):
        return 2 ** (len(self.temporal_up_layers) + 1)

    @property
    def spatial_factor(self):
        return 2 ** len(self.ch_mult)

    def frames_for(self, latent_frames):
        """Pixel frames decoded from one chunk of ``latent_frames`` latents: 3 -> 17, 1 -> 1."""
        return self.time_factor * (latent_frames - 1) + 1


@dataclass(frozen=True)
class VAEConfig:
    encoder: VAEEncoderConfig = field(default_factory=VAEEncoderConfig)
    decoder: VAEDecoderConfig = field(default_factory=VAEDecoderConfig)
    latent_len: int = LATENT_CHUNK

    def __post_init__(self):
        enc, dec = self.encoder, self.decoder
        if (enc.z_channels, enc.time_factor, enc.spatial_factor) != (dec.z_channels, dec.time_factor,
                                                                     dec.spatial_factor):
            raise ValueError(
                f"encoder and decoder do not fit together: encoder z {enc.z_channels}, compression "
                f"{enc.time_factor}x time / {enc.spatial_factor}x space; decoder z {dec.z_channels}, "
                f"{dec.time_factor}x / {dec.spatial_factor}x.")

    @property
    def frame_len(self):
        """Pixel frames per chunk (17 for the released model)."""
        return self.decoder.frames_for(self.latent_len)

    @property
    def spatial_factor(self):
        return self.decoder.spatial_factor

    @property
    def time_factor(self):
        return self.decoder.time_factor

    def encoded_frames(self, frames):
        """Latent frames for ``frames`` pixel frames (17 -> 3, 34 -> 6, 1 -> 1, 18 -> 4); ValueError if impossible.

        Chunks of ``frame_len`` frames, then a remainder that must have 1 + 8k frames.
        """
        total = 0
        for start, stop in chunk_spans(frames, self.frame_len):
            if (stop - start - 1) % self.time_factor:
                valid = ", ".join(str(1 + self.time_factor * k) for k in range(self.latent_len))
                raise ValueError(
                    f"cannot encode {frames} frames: the VAE encodes chunks of {self.frame_len} frames and the "
                    f"last chunk has {stop - start}; it must have {valid} frames.")
            total += (stop - start - 1) // self.time_factor + 1
        return total

    def decoded_frames(self, latent_frames):
        """Pixel frames for ``latent_frames`` latents (3 -> 17, 6 -> 34, 1 -> 1, 4 -> 18)."""
        return sum(self.decoder.frames_for(stop - start) for start, stop in chunk_spans(latent_frames, self.latent_len))


def mid_block(width, operations, device, dtype):
    """Resnet, token-causal attention, Resnet (official ``mid`` with block_1 / attn_1 / block_2)."""
    mid = nn.Module()
    mid.block_1 = ResnetBlock3D(width, width, operations, device, dtype)
    mid.attn_1 = AttentionBlock3D(width, operations, device, dtype)
    mid.block_2 = ResnetBlock3D(width, width, operations, device, dtype)
    return mid


def run_mid(mid, h):
    return mid.block_2(mid.attn_1(mid.block_1(h)))


class VideoEncoder(nn.Module):
    """One chunk of video -> posterior moments: (B, 3, T, H, W) -> (B, 2z, (T-1)/8 + 1, H/16, W/16).

    conv_in; per level ``num_res_blocks`` Resnets then a 2-D or 3-D stride-2 downsampling (none at
    the last level); mid; GroupNorm + SiLU; v2 head: h = conv_patchify(x) + channel-averaged
    space-to-depth(x); out = conv_out(h) + channel-averaged h.
    """

    def __init__(self, config: VAEEncoderConfig, operations=DEFAULT_OPERATIONS, device=None, dtype=None):
        super().__init__()
        self.config = config
        widths = config.widths
        self.conv_in = CausalConv3d(RGB, config.ch, 3, operations=operations, device=device, dtype=dtype)
        self.down = nn.ModuleList()
        width = config.ch
        for level, level_width in enumerate(widths):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(config.num_res_blocks):
                stage.block.append(ResnetBlock3D(width, level_width, operations, device, dtype))
                width = level_width
            if level < len(widths) - 1:
                resample = Downsample3D if level in config.down_sampling_layer else Downsample2D
                stage.downsample = resample(width, operations, device, dtype)
            self.down.append(stage)
        self.mid = mid_block(width, operations, device, dtype)
        self.norm_out = group_norm_layer(width, operations, device, dtype)
        patch_channels = PATCH_CHANNELS_PER_Z * config.z_channels
        out_channels = 2 * config.z_channels if config.double_z else config.z_channels
        self.conv_patchify = PatchifyConv(width, patch_channels, PATCH_FACTOR, operations, device, dtype)
        self.conv_out = CausalConv3d(patch_channels, out_channels, 3, operations=operations, device=device, dtype=dtype)

    def forward(self, video):
        h = self.conv_in(video)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = run_mid(self.mid, h)
        h = per_frame(group_norm_silu(self.norm_out), h, h)
        patch_channels = self.conv_out.conv.in_channels
        shortcut = average_channel_groups(space_to_depth(h, PATCH_FACTOR), patch_channels)
        h = self.conv_patchify(h).add_(shortcut)
        shortcut = average_channel_groups(h, self.conv_out.conv.out_channels)
        return self.conv_out(h).add_(shortcut)


class VideoDecoder(nn.Module):
    """One chunk of latents -> video: (B, z, T', h, w) -> (B, 3, 8(T'-1) + 1, 16h, 16w).

    v2 head: h = conv_in(z) + channel-duplicated z; h = conv_unpatchify(h) + depth-to-space of
    channel-duplicated h; mid; levels from the coarsest (``up[-1]``) to the finest (``up[0]``), each
    ``num_res_blocks + 1`` Resnets then (except level 0) a 3-D or 2-D x2 upsampling; GroupNorm + SiLU;
    causal conv_out; the first ``temporal_downsample - 1`` frames are dropped.
    """

    def __init__(self, config: VAEDecoderConfig, operations=DEFAULT_OPERATIONS, device=None, dtype=None):
        super().__init__()
        self.config = config
        widths = config.widths
        patch_channels = PATCH_CHANNELS_PER_Z * config.z_channels
        width = widths[-1]
        self.conv_in = CausalConv3d(config.z_channels, patch_channels, 3, operations=operations,
                                    device=device, dtype=dtype)
        self.conv_unpatchify = UnpatchifyConv(patch_channels, width, PATCH_FACTOR, operations, device, dtype)
        self.mid = mid_block(width, operations, device, dtype)
        stages = {}
        for level in reversed(range(len(widths))):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                stage.block.append(ResnetBlock3D(width, widths[level], operations, device, dtype))
                width = widths[level]
            if level > 0:
                resample = Upsample3D if level in config.temporal_up_layers else Upsample2D
                stage.upsample = resample(width, operations, device, dtype)
            stages[level] = stage
        self.up = nn.ModuleList(stages[level] for level in range(len(widths)))
        self.norm_out = group_norm_layer(width, operations, device, dtype)
        self.conv_out = CausalConv3d(width, RGB, 3, operations=operations, device=device, dtype=dtype)

    def forward(self, z):
        patch_channels = self.conv_in.conv.out_channels
        h = self.conv_in(z).add_(duplicate_channels(z, patch_channels))
        width = self.conv_unpatchify.conv.conv.out_channels // PATCH_FACTOR ** 3
        shortcut = depth_to_space(duplicate_channels(h, width * PATCH_FACTOR ** 3), PATCH_FACTOR)
        h = self.conv_unpatchify(h).add_(shortcut)
        del shortcut
        h = run_mid(self.mid, h)
        pending_upsample = None  # a 2-D up-sampling is fused into the next Resnet (never built whole)
        for stage in reversed(self.up):
            for block in stage.block:
                h = block(h, pending_upsample)
                pending_upsample = None
            if isinstance(getattr(stage, "upsample", None), Upsample2D):
                pending_upsample = stage.upsample
            elif hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out.stream(h, group_norm_silu(self.norm_out))[:, :, self.config.temporal_downsample - 1:]


def blend_seam(last_frame, first_frame):
    """Official chunk-border blend, in place: first = 0.6 first + 0.4 last, then last = 0.6 last + 0.4 first
    (the second line uses the already-updated first frame)."""
    mix = 1.0 - SEAM_KEEP
    first_frame.copy_(first_frame * SEAM_KEEP + last_frame * mix)
    last_frame.copy_(last_frame * SEAM_KEEP + first_frame * mix)


class WorkCounter:
    """Counts finished work units (chunks x tiles) and calls ``on_progress(done, total)`` after each; the
    callback may raise (the nodes pass a host progress bar that checks for interruption)."""

    def __init__(self, total, on_progress):
        self.done, self.total, self.on_progress = 0, total, on_progress

    def step(self):
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


class VideoVAE(nn.Module):
    """Encoder + decoder with the official chunked API, streaming and optional spatial tiling.

    Computation runs on the device and in the dtype of the parameters; inputs may live anywhere.
    """

    def __init__(self, config: VAEConfig, operations=DEFAULT_OPERATIONS, device=None, dtype=None):
        super().__init__()
        self.config = config
        self.encoder = VideoEncoder(config.encoder, operations, device, dtype)
        self.decoder = VideoDecoder(config.decoder, operations, device, dtype)

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    @property
    def device(self):
        return next(self.parameters()).device

    # --- encoding --------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_moments(self, video, tile_px=None, overlap_px=None, on_progress=None, output_device=None):
        """video (B, T, 3, H, W) in [-1, 1] -> (mean, logvar), each (B, T', z, H/16, W/16).

        Every 17-frame chunk is encoded independently; logvar is clamped to [-30, 20]. ``tile_px``
        (pixels) encodes each chunk in overlapping spatial tiles blended in latent space.
        ``on_progress(done, total)`` is called after each chunk (or tile).
        """
        batch, frames, channels, height, width = video.shape
        self._check_pixels(video.shape)
        factor = self.config.spatial_factor
        spans = chunk_spans(frames, self.config.frame_len)
        tiles = plan_tiles(height // factor, width // factor, tile_px, overlap_px, factor)
        progress = WorkCounter(len(spans) * len(tiles), on_progress)
        out_channels = self.encoder.conv_out.conv.out_channels
        moments = torch.empty(
            (batch, self.config.encoded_frames(frames), out_channels, height // factor, width // factor),
            dtype=self.dtype, device=output_device or video.device)
        latent_start = 0
        for start, stop in spans:
            chunk = channels_last(video[:, start:stop].to(device=self.device, dtype=self.dtype).transpose(1, 2))
            encoded = map_tiles(self.encoder, chunk, tiles, factor, 1, moments.device, progress.step)
            latent_stop = latent_start + encoded.shape[2]
            moments[:, latent_start:latent_stop].copy_(encoded.transpose(1, 2))
            latent_start = latent_stop
            progress.step()
        mean, logvar = moments.chunk(2, dim=2)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, video, generator=None, sample=True, **tiling):
        """video (B, T, 3, H, W) -> latents (B, T', z, H/16, W/16).

        sample=True (official): mean + exp(logvar / 2) * N(0, 1), the noise drawn from ``generator``
        (a seeded torch.Generator makes it reproducible); sample=False: the mean.
        ``tiling``: tile_px, overlap_px, on_progress, output_device as for :meth:`encode_moments`.
        """
        mean, logvar = self.encode_moments(video, **tiling)
        if not sample:
            return mean
        noise_device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, device=noise_device).to(mean.device, mean.dtype)
        return mean + torch.exp(0.5 * logvar) * noise

    # --- decoding --------------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, latent, tile_px=None, overlap_px=None, on_progress=None, output_device=None, out=None):
        """latent (B, T', z, h, w) -> video (B, T, 3, 16h, 16w), T = ``config.decoded_frames(T')``.

        Streams chunks of 3 latents: each decoded chunk is written to ``out`` (allocated on
        ``output_device``, default the latent's device, if not given) and blended with the previous
        one before the next chunk starts, so the result equals the official full decode. With
        ``tile_px`` (pixels; the nodes size it from free memory with vae_tiling.auto_tile_px) each chunk
        is decoded in overlapping spatial tiles blended with linear ramps over ``overlap_px`` (an
        approximation: peak memory follows the tile).
        ``on_progress(done, total)`` is called after every tile/chunk; if it raises, decoding stops
        there and every chunk already in ``out`` is complete (the last one not yet seam-blended).
        """
        batch, frames, channels, height, width = latent.shape
        if channels != self.config.decoder.z_channels:
            raise ValueError(f"latents have {channels} channels but this VAE expects {self.config.decoder.z_channels} "
                             f"(layout (B, T, C, H, W)); got shape {list(latent.shape)}.")
        factor = self.config.spatial_factor
        spans = chunk_spans(frames, self.config.latent_len)
        tiles = plan_tiles(height, width, tile_px, overlap_px, factor)
        progress = WorkCounter(len(spans) * len(tiles), on_progress)
        shape = (batch, self.config.decoded_frames(frames), RGB, height * factor, width * factor)
        if out is None:
            out = torch.empty(shape, dtype=self.dtype, device=output_device or latent.device)
        elif tuple(out.shape) != shape:
            raise ValueError(f"out has shape {list(out.shape)}; decoding {list(latent.shape)} needs {list(shape)}.")
        frame_start = 0
        for start, stop in spans:
            chunk = channels_last(latent[:, start:stop].to(device=self.device, dtype=self.dtype).transpose(1, 2))
            decoded = map_tiles(self.decoder, chunk, tiles, 1, factor, out.device, progress.step)
            frame_stop = frame_start + decoded.shape[2]
            out[:, frame_start:frame_stop].copy_(decoded.transpose(1, 2))
            del decoded
            if frame_start:
                blend_seam(out[:, frame_start - 1], out[:, frame_start])
            frame_start = frame_stop
            progress.step()
        return out

    def _check_pixels(self, shape):
        batch, frames, channels, height, width = shape
        factor = self.config.spatial_factor
        if channels != RGB or height % factor or width % factor or frames < 1:
            raise ValueError(f"video must be (B, T, 3, H, W) with H and W multiples of {factor}; got {list(shape)}.")
