"""The small model's Video-VAE: our v2 network with weights set in closed form, not learnt.

Why constructed: training this architecture from scratch did not converge on the 2-core CPU budget
(TRAINING.md: 16.7 dB on 32 px crops after 400 steps, unusable at full size), while the closed-form
codec below reaches ~26 dB on the synthetic clips and keeps colour and motion readable. It is exactly
``networks.vae.VideoVAE`` of :data:`VAE_CONFIG`, loaded by ``load_vae`` like any official file.

The codec (z = 16 latent channels per 16 x 16 pixel cell):

* latent frame t stores, scaled by :data:`LATENT_SCALE`, the RGB means of the four 8 x 8 blocks of its
  cell at pixel frame 8t (channels 4c + 2i + j for colour c, block row i, column j) and the cell's
  mean RGB at pixel frame 8t - 4 (channels 12 + c; zero for t = 0); channel 15 is zero;
* the decoder puts those block colours back (8 x 8 nearest up-sampling), filling frame 8t - 4 by
  linear interpolation between frames 8t - 8 and 8t corrected to the stored cell mean, and fills the
  three frames between two of the five key frames (0, 4, 8, 12, 16) of a chunk by linear
  interpolation (3/4, 1/2, 1/4 of the earlier key), so every decoded frame is a different picture.
  The v2 decoder doubles the frames twice by nearest up-sampling; the residual of the second
  up-sampling replaces the first copy of every doubled frame by the mean of it and the frame before
  (:func:`_midpoint_upsample`), which turns each key x_k into (mid(x_{k-1}, x_k), x_k, x_k, x_k), and
  conv_out averages the frames t - 2 and t, which makes those (3/4, 1/2, 1/4, 0) of x_{k-1}.

How the network computes it: the convolutions are averaging / selection kernels, every residual
branch, attention output and up-sampling refinement but the midpoint step's is zero (their Resnets are
identities), and the GroupNorm (+ SiLU) layers on the paths used are made linear with constant
companion channels.
A per-frame GroupNorm of a group {s, -s, K, -K} (encoder, 4 channels per group) has mean 0 and
standard deviation sqrt((K^2 + E[s^2]) / 2), i.e. it only rescales s (by 1 +- 1e-3 for K = 10); one of
{s, -s, K} (decoder, 3 per group) subtracts the known K / 3 and rescales within 1.5%. The SiLU after
each is undone exactly downstream as silu(s) - silu(-s) = s. (With one channel per group, as a
32-wide layer has, GroupNorm would erase each frame's mean colour, which is why the last decoder
level is 96 wide and the top encoder level 128, and why level 2, where the midpoint step runs, is 96
wide too: three channels per group.)
"""

import math

import torch

from stepvideo_pack.networks.vae import VAEConfig, VAEDecoderConfig, VAEEncoderConfig, VideoVAE

Z_CHANNELS = 16
VAE_CONFIG = VAEConfig(
    encoder=VAEEncoderConfig(ch=32, ch_mult=(1, 1, 1, 4), z_channels=Z_CHANNELS, num_res_blocks=1),
    decoder=VAEDecoderConfig(ch=32, ch_mult=(3, 1, 3, 2), z_channels=Z_CHANNELS, num_res_blocks=0))
LATENT_SCALE = 2.0  # latent = scale * colour in [-1, 1]: about unit standard deviation on the clips
LOGVAR = -12.0  # posterior std e^-6: encode(sample=True) adds ~0.0025 noise
K = 10.0  # constant companion channels of the linearised GroupNorms
TYPICAL_SQUARE = 0.4  # E[s^2] the GroupNorm gains are centred on
TYPICAL_STEP = 0.01  # E[d^2] of the midpoint step d (half a key-frame difference: mostly zero background)
NEGATIVE = -30.0  # norm2 bias of the up-sampling refinements: silu(x - 30) ~ 0, so they add nothing
STEP = 9  # first channel of the midpoint step's {d, -d, K} groups (after the three {s, -s, K} groups)
RGB = 3
BLUR = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 1.0])) / 16  # 3x3 binomial
NOW, CENTRE = 2, 1  # kernel index of the current frame (causal k = 3) and of the spatial centre


def _tap(conv, out_channel, in_channel, value, time=NOW):
    """Set the current-frame, centre tap of a CausalConv3d / Conv3d weight."""
    weight = conv.weight
    if weight.dim() == 5:
        weight[out_channel, in_channel, time, CENTRE, CENTRE] = value
    else:
        weight[out_channel, in_channel, CENTRE, CENTRE] = value


@torch.no_grad()
def build_constructed_vae(dtype=torch.float32):
    """A VideoVAE of :data:`VAE_CONFIG` with the closed-form weights described in the module docstring."""
    vae = VideoVAE(VAE_CONFIG)
    for name, p in vae.named_parameters():
        p.zero_()
        if name.endswith("weight") and p.dim() == 1:  # GroupNorm scales
            p.fill_(1.0)
    for name, module in vae.named_modules():
        if name.endswith("upsample.conv3d"):  # Res3DBlockUpsample: x + silu(x - 30) ~ x
            module.norm2.bias.fill_(NEGATIVE)
    _encoder(vae.encoder)
    _decoder(vae.decoder)
    return vae.to(dtype)


def _encoder(encoder):
    # full resolution: the three colours pass through channels 0..2
    for c in range(RGB):
        _tap(encoder.conv_in.conv, c, c, 1.0)
    top = encoder.down[-1].block[0]  # Resnet 32 -> 128 whose 1x1 shortcut builds the {s, -s, K, -K} groups
    for level, stage in enumerate(encoder.down):
        if hasattr(stage, "downsample"):
            conv = stage.downsample.conv
            weight = conv.weight if hasattr(conv, "weight") else conv.conv.weight
            for c in range(RGB):
                if weight.dim() == 4:  # Downsample2D: rows/cols 2y, 2y+1 are kernel taps 0, 1
                    weight[c, c, 0:2, 0:2] = 0.25
                else:  # Downsample3D (causal, stride 2): frame 2t is tap 2, rows 2y, 2y+1 taps 1, 2
                    weight[c, c, NOW, 1:3, 1:3] = 0.25
    shortcut = top.nin_shortcut.conv
    for c in range(RGB):
        shortcut.weight[4 * c, c] = 1.0
        shortcut.weight[4 * c + 1, c] = -1.0
        shortcut.bias[4 * c + 2] = K
        shortcut.bias[4 * c + 3] = -K
    gain = math.sqrt((K * K + TYPICAL_SQUARE) / 2)
    norm = encoder.norm_out
    norm.weight.zero_()
    for c in range(RGB):
        norm.weight[4 * c] = norm.weight[4 * c + 1] = gain  # -> silu(s), silu(-s)
    # head: conv_patchify output channel 2c+1 = silu(s) - silu(-s) = s; after space-to-depth colour c sits in
    # h[16c + 8 + 4 i_t + 2 i + j] (block (i, j) of temporal half i_t); the parameter-free shortcut fills
    # h[16c : 16c + 8] with pair-averages of silu(+-s)
    for c in range(RGB):
        _tap(encoder.conv_patchify.conv.conv, 2 * c + 1, 4 * c, 1.0)
        _tap(encoder.conv_patchify.conv.conv, 2 * c + 1, 4 * c + 1, -1.0)
    out = encoder.conv_out.conv
    patch = out.in_channels
    group = patch // out.out_channels  # the channel-averaging shortcut of conv_out
    for c in range(RGB):
        for block in range(4):
            latent = 4 * c + block
            _tap(out, latent, 16 * c + 8 + 4 + block, LATENT_SCALE)
            _tap(out, 12 + c, 16 * c + 8 + block, LATENT_SCALE / 4)
    for latent in range(out.out_channels):  # cancel the shortcut's average where it is not zero
        for j in range(latent * group, (latent + 1) * group):
            if j < 16 * RGB:
                out.weight[latent, j, NOW, CENTRE, CENTRE] -= 1.0 / group
    out.bias[Z_CHANNELS:] = LOGVAR


def _decoder(decoder):
    conv = decoder.conv_in.conv  # h = conv_in(z) + z duplicated 32x; we want h = D(z)
    repeat = conv.out_channels // Z_CHANNELS
    for j in range(conv.out_channels):
        _tap(conv, j, j // repeat, -1.0)
    for c in range(RGB):
        for block in range(4):
            latent = 4 * c + block
            now = c * 8 + 4 + block  # top channel c, temporal half 1, block
            before = c * 8 + block  # temporal half 0 (frame 8t - 4)
            _tap(conv, now, latent, conv.weight[now, latent, NOW, CENTRE, CENTRE] + 1.0 / LATENT_SCALE)
            for time in (NOW - 1, NOW):  # half 0 = mean of the neighbours' blocks - their cell means + stored mean
                _tap(conv, before, latent, conv.weight[before, latent, time, CENTRE, CENTRE] + 0.5 / LATENT_SCALE,
                     time)
                for other in range(4):
                    _tap(conv, before, 4 * c + other,
                         conv.weight[before, 4 * c + other, time, CENTRE, CENTRE] - 0.125 / LATENT_SCALE, time)
            _tap(conv, before, 12 + c, conv.weight[before, 12 + c, NOW, CENTRE, CENTRE] + 1.0 / LATENT_SCALE)
    # conv_unpatchify stays zero: the top level is depth-to-space(h) (its parameter-free shortcut).
    # Levels, coarsest first (the Resnets not named here are identities, their residual branches zero):
    # 3 (64 wide): colour c in channel c, nearest x2 up-sampling (its refinement adds nothing);
    # 2 (96): the Resnet's shortcut -> {s, -s, K} groups, the up-sampling adds a midpoint step in channels
    #    9..17; 1 (32): the shortcut adds it back to channel c, then 2-D up-sampling (blur); 0 (96):
    #    {s, -s, K} groups for the output norm; conv_out averages frames t - 2 and t.
    _sign_groups(decoder.up[2].block[0].nin_shortcut.conv)
    _midpoint_upsample(decoder.up[2].upsample.conv3d)
    shortcut = decoder.up[1].block[0].nin_shortcut.conv
    for c in range(RGB):  # s' = (s - (-s)) / 2 + (silu(d) - silu(-d))
        for channel, value in ((3 * c, 0.5), (3 * c + 1, -0.5), (STEP + 3 * c, 1.0), (STEP + 3 * c + 1, -1.0)):
            shortcut.weight[c, channel] = value
    _sign_groups(decoder.up[0].block[0].nin_shortcut.conv)
    for c in range(RGB):  # Upsample2D: nearest x2 then a 3x3 binomial blur (softens the block edges)
        decoder.up[1].upsample.conv.weight[c, c] = BLUR
    gain = math.sqrt(2 * K * K / 9 + 2 * TYPICAL_SQUARE / 3)
    norm = decoder.norm_out
    norm.weight.zero_()
    for c in range(RGB):
        norm.weight[3 * c] = norm.weight[3 * c + 1] = gain
        norm.bias[3 * c] = norm.bias[3 * c + 1] = K / 3  # group mean is K / 3
        for time in (NOW - 2, NOW):
            decoder.conv_out.conv.weight[c, 3 * c, time] = BLUR / 2
            decoder.conv_out.conv.weight[c, 3 * c + 1, time] = -BLUR / 2


def _sign_groups(shortcut):
    """1x1 shortcut: colour c (input channel c) -> the group {s, -s, K} in channels 3c .. 3c + 2."""
    for c in range(RGB):
        shortcut.weight[3 * c, c] = 1.0
        shortcut.weight[3 * c + 1, c] = -1.0
        shortcut.bias[3 * c + 2] = K


def _linear_norm(norm, first, typical):
    """GroupNorm of the groups {x, -x, K} starting at channel ``first`` (one per colour) -> x, -x, K again
    (mean K / 3 exactly; the deviation sqrt(2 K^2 / 9 + 2 E[x^2] / 3) is taken at E[x^2] = typical)."""
    gain = math.sqrt(2 * K * K / 9 + 2 * typical / 3)
    for c in range(RGB):
        norm.weight[first + 3 * c: first + 3 * c + 3] = gain
        norm.bias[first + 3 * c: first + 3 * c + 3] = K / 3


def _step(conv, source, target, scale):
    """conv output group {d, -d, K} at ``target`` for each colour, d = scale (x(t-1) - x(t)) with x read as
    the difference of input channels ``source`` + 3c and ``source`` + 3c + 1 (x, -x, or silu(x), silu(-x))."""
    for c in range(RGB):
        for sign, out in ((1.0, target + 3 * c), (-1.0, target + 3 * c + 1)):
            for time, weight in ((NOW - 1, scale), (NOW, -scale)):
                _tap(conv, out, source + 3 * c, sign * weight, time)
                _tap(conv, out, source + 3 * c + 1, -sign * weight, time)
        conv.bias[target + 3 * c + 2] = K


def _pass_pairs(conv, first):
    """conv: channel first + 3c = silu(d) - silu(-d) = d, first + 3c + 1 = -d, first + 3c + 2 = K."""
    for c in range(RGB):
        for sign, out in ((1.0, first + 3 * c), (-1.0, first + 3 * c + 1)):
            _tap(conv, out, first + 3 * c, sign)
            _tap(conv, out, first + 3 * c + 1, -sign)
        conv.bias[first + 3 * c + 2] = K


def _midpoint_upsample(block):
    """Res3DBlockUpsample u + silu(u + r) on u = nearest x2 of {s, -s, K} groups: r = -30 on those (so they
    pass unchanged) and r = {d, -d, K} on channels STEP.. with d = (s(t-1) - s(t)) / 2, so the output holds
    silu(d), silu(-d) there and the next shortcut adds silu(d) - silu(-d) = d to s."""
    _step(block.conv1.conv, 0, STEP, 0.25)  # s = (u_{3c} - u_{3c+1}) / 2
    _linear_norm(block.norm1, STEP, TYPICAL_STEP)
    _pass_pairs(block.conv2.conv, STEP)
    _linear_norm(block.norm2, STEP, TYPICAL_STEP)


# --- the same codec in a few lines (for the DiT's training latents, checked against the network) ----------

def encode_reference(video):
    """video (B, 3, T, H, W) in [-1, 1], T = 17 or 1 -> latent means (B, 16, T', H/16, W/16), what the
    constructed encoder computes (up to its ~1e-3 GroupNorm approximation)."""
    batch, _, frames, height, width = video.shape
    keys = video[:, :, ::8]  # pixel frames 0, 8, 16 (or the single frame)
    blocks = torch.nn.functional.avg_pool3d(keys, (1, 8, 8))  # (B, 3, T', H/8, W/8)
    latent = torch.zeros(batch, Z_CHANNELS, keys.shape[2], height // 16, width // 16, dtype=video.dtype)
    for c in range(RGB):
        for i in range(2):
            for j in range(2):
                latent[:, 4 * c + 2 * i + j] = blocks[:, c, :, i::2, j::2]
    if frames > 1:
        halves = torch.nn.functional.avg_pool3d(video[:, :, 4::8], (1, 16, 16))  # frames 4, 12
        latent[:, 12:15, 1:] = halves
    return LATENT_SCALE * latent
