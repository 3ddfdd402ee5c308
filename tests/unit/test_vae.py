"""Video-VAE v2: chunk geometry, exact streamed decode, progress/interrupt, tiling, posterior sampling.

Tiny configs with the official structure (numerical parity with the official code is checked by
the vae_v2_tiny fixture through test_parity.py).
"""

import pytest
import torch
import torch.nn.functional as F

from stepvideo_pack.networks import vae_blocks
from stepvideo_pack.networks.vae import VAEConfig, VAEDecoderConfig, VAEEncoderConfig, VideoVAE
from stepvideo_pack.networks.vae_blocks import (causal_conv3d_of_nearest_2x, channels_last, conv2d_of_nearest_2x,
                                                store_conv_weights_channels_last)
from stepvideo_pack.networks.vae_tiling import (TileGrid, auto_tile_px, decode_bytes_per_px, map_tiles,
                                                tile_spans)

TINY = VAEConfig(VAEEncoderConfig(ch=32, ch_mult=(1, 1, 1, 2), z_channels=4),
                 VAEDecoderConfig(ch=32, ch_mult=(1, 1, 1, 2), z_channels=4))


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    model = VideoVAE(TINY).eval().requires_grad_(False)
    for name, param in model.named_parameters():  # non-trivial norms, so per-frame statistics matter
        if "norm" in name:
            param.add_(torch.randn_like(param) * 0.2)
    return store_conv_weights_channels_last(model)


def latents(frames, height=2, width=3, seed=0):
    return torch.randn(1, frames, TINY.decoder.z_channels, height, width, generator=torch.Generator().manual_seed(seed))


def video(frames, height=32, width=48, seed=0):
    return torch.rand(1, frames, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def official_style_decode(model, latent):
    """The official decode, written out: independent 3-latent chunks, concatenated, then the border blend."""
    chunks = [model.decoder(channels_last(c.transpose(1, 2))).transpose(1, 2) for c in latent.split(3, dim=1)]
    x = torch.cat(chunks, dim=1)
    front, back = slice(16, x.shape[1] - 1, 17), slice(17, x.shape[1], 17)
    x[:, back] = x[:, back] * 0.6 + x[:, front] * 0.4
    x[:, front] = x[:, front] * 0.6 + x[:, back] * 0.4
    return x


@pytest.mark.parametrize("frames, latent_frames", [(17, 3), (34, 6), (1, 1), (18, 4), (26, 5)])
def test_chunk_geometry(vae, frames, latent_frames):
    assert TINY.encoded_frames(frames) == latent_frames
    mean, logvar = vae.encode_moments(video(frames))
    assert mean.shape == logvar.shape == (1, latent_frames, 4, 2, 3)
    decoded_frames = {3: 17, 6: 34, 1: 1, 4: 18, 5: 26}[latent_frames]
    assert TINY.decoded_frames(latent_frames) == decoded_frames
    assert vae.decode(latents(latent_frames)).shape == (1, decoded_frames, 3, 32, 48)


def test_frame_counts_that_cannot_be_encoded_are_refused(vae):
    with pytest.raises(ValueError, match="last chunk has 3"):
        vae.encode_moments(video(20))
    with pytest.raises(ValueError, match="multiples of 16"):
        vae.encode_moments(video(17, height=40))


def test_streamed_decode_equals_the_official_full_decode_exactly(vae):
    latent = latents(7)  # chunks 3 + 3 + 1: two seams, one next to a 1-frame chunk
    streamed = vae.decode(latent, output_device="cpu")
    assert torch.equal(streamed, official_style_decode(vae, latent))


def test_progress_is_reported_per_chunk_and_an_interrupt_leaves_finished_chunks_intact(vae):
    latent = latents(4, height=2, width=2)
    calls = []
    full = vae.decode(latent, on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]

    def interrupt_after_first(done, total):
        if done == 1:
            raise Interrupted

    out = torch.full_like(full, float("nan"))
    with pytest.raises(Interrupted):
        vae.decode(latent, on_progress=interrupt_after_first, out=out)
    first_chunk = vae.decoder(channels_last(latent[:, :3].transpose(1, 2))).transpose(1, 2)
    assert torch.equal(out[:, :17], first_chunk)  # complete (its seam with chunk 2 not blended yet)
    assert out[:, 17:].isnan().all()
    assert torch.equal(vae.decode(latent), full)  # nothing left behind by the interrupted call


def test_tiles_blend_to_the_exact_result_for_a_tile_local_function():
    """With a function that only looks at each position, overlapping tiles + ramps reproduce it exactly."""
    x = torch.randn(1, 2, 3, 6, 9)
    grid = TileGrid(6, 9, tile=4, overlap=2)
    upsample = lambda t: F.interpolate(t * 2 + 1, scale_factor=(1, 4, 4))  # noqa: E731
    calls = []
    blended = map_tiles(upsample, x, grid, 1, 4, "cpu", on_tile=lambda: calls.append(1))
    assert torch.allclose(blended, upsample(x), atol=1e-6)
    assert len(calls) == len(grid) - 1 == 2 * 4 - 1  # the caller reports the last tile itself
    assert tile_spans(9, 4, 2) == [(0, 4), (2, 6), (4, 8), (5, 9)]
    assert tile_spans(6, 8, 2) == [(0, 6)]


def test_tiled_decode_is_close_to_untiled_and_reports_every_tile(vae):
    latent = latents(3, height=5, width=5)
    untiled = vae.decode(latent)
    calls = []
    tiled = vae.decode(latent, tile_px=64, overlap_px=32, on_progress=lambda done, total: calls.append(total))
    assert calls == [4] * 4  # 1 chunk x (2 x 2) tiles of 4 latents, overlap 2, on a 5 x 5 grid
    assert torch.equal(vae.decode(latent, tile_px=80), untiled)  # a tile covering the frame is exact
    # Tiles differ from the whole frame through their own per-frame GroupNorm statistics, attention
    # context and zero borders; a random-weight tiny model, whose tiles here cover 44% of the frame,
    # amplifies that: measured mean error 32% of the mean |signal|, worst pixel 0.93 (|signal| <= 2.4).
    # A misplaced or unblended tile gives errors of the order of the signal itself.
    error = (tiled - untiled).abs()
    assert error.mean() < 0.45 * untiled.abs().mean()
    assert error.max() < 1.4


def test_tiled_encode_is_close_to_untiled(vae):
    clip = video(17, height=96, width=128)
    mean, logvar = vae.encode_moments(clip)
    calls = []
    tiled_mean, tiled_logvar = vae.encode_moments(clip, tile_px=64, overlap_px=32,
                                                  on_progress=lambda done, total: calls.append(total))
    assert calls == [6] * 6  # (6 x 8 latents) in tiles of 4, overlap 2: 2 x 3 tiles
    # Same effects as for decoding; measured mean error 43% of the mean |mean| on this random model.
    assert (tiled_mean - mean).abs().mean() < 0.6 * mean.abs().mean()
    assert tiled_logvar.shape == logvar.shape


def test_encode_samples_the_posterior_reproducibly_or_returns_the_mean(vae):
    clip = video(17)
    mean, logvar = vae.encode_moments(clip)
    assert logvar.min() >= -30 and logvar.max() <= 20
    a = vae.encode(clip, generator=torch.Generator().manual_seed(7))
    b = vae.encode(clip, generator=torch.Generator().manual_seed(7))
    c = vae.encode(clip, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    noise = (a - mean) / torch.exp(0.5 * logvar)
    expected = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(noise, expected, atol=1e-4)
    assert torch.equal(vae.encode(clip, sample=False), mean)


def test_fused_nearest_upsampling_convs_equal_upsample_then_conv():
    gen = torch.Generator().manual_seed(0)
    x = channels_last(torch.randn(2, 8, 3, 4, 5, generator=gen))
    weight, bias = torch.randn(6, 8, 3, 3, 3, generator=gen), torch.randn(6, generator=gen)
    up = F.pad(F.interpolate(x, scale_factor=2.0, mode="nearest"), (0, 0, 0, 0, 2, 0))
    expected = F.conv3d(up, weight, bias, padding=(0, 1, 1))
    assert torch.allclose(causal_conv3d_of_nearest_2x(x, weight, bias), expected, atol=1e-4)
    frames = x[:, :, 0].contiguous(memory_format=torch.channels_last)
    expected = F.conv2d(F.interpolate(frames, scale_factor=2.0, mode="nearest"), weight[:, :, 0], bias, padding=1)
    assert torch.allclose(conv2d_of_nearest_2x(frames, weight[:, :, 0], bias), expected, atol=1e-4)


def test_upsampling_folded_into_a_pointwise_shortcut_equals_upsample_then_shortcut():
    torch.manual_seed(0)
    upsample, shortcut = vae_blocks.Upsample2D(8), vae_blocks.CausalConv3d(8, 5, 1)
    x = channels_last(torch.randn(2, 8, 3, 4, 5))
    with torch.no_grad():
        expected = F.conv3d(upsample(x), shortcut.conv.weight, shortcut.conv.bias)
        folded = upsample.folded(shortcut.conv, x)(x)
    assert folded.shape == (2, 5, 3, 8, 10)
    assert torch.allclose(folded, expected, atol=1e-5)


@pytest.mark.parametrize("frames, slab_frames", [(1, 8), (2, 8), (7, 8), (7, 1), (7, 3)])
def test_streamed_causal_conv_equals_the_conv_of_zero_padded_input(frames, slab_frames, monkeypatch):
    """The first outputs skip the zero history taps; slabs (also shorter than the history) change nothing."""
    torch.manual_seed(0)
    conv = vae_blocks.CausalConv3d(4, 6, 3)
    x = channels_last(torch.randn(1, 4, frames, 5, 6))
    with torch.no_grad():
        expected = conv.conv(F.pad(x, (0, 0, 0, 0, 2, 0)))
        monkeypatch.setattr(vae_blocks, "SLAB_ELEMENTS", slab_frames * 6 * 5 * 6)
        assert torch.allclose(conv.stream(x), expected, atol=1e-5)


def test_time_slabs_of_one_frame_give_the_same_result(vae, monkeypatch):
    latent, clip = latents(4), video(9)
    decoded, (mean, logvar) = vae.decode(latent), vae.encode_moments(clip)
    monkeypatch.setattr(vae_blocks, "SLAB_ELEMENTS", 1)  # every streamed conv / per-frame op: one frame at a time
    assert torch.allclose(vae.decode(latent), decoded, atol=1e-5)
    slab_mean, slab_logvar = vae.encode_moments(clip)
    assert torch.allclose(slab_mean, mean, atol=1e-5) and torch.allclose(slab_logvar, logvar, atol=1e-5)


def test_large_conv_weights_run_in_output_channel_slices(vae, monkeypatch):
    latent = latents(3)
    whole = vae.decode(latent)
    monkeypatch.setattr(vae_blocks, "WEIGHT_SLICE_ELEMENTS", 5000)  # every 3x3x3 conv of width >= 32 slices
    assert torch.allclose(vae.decode(latent), whole, atol=1e-5)


def test_auto_tile_size_follows_free_memory():
    per_px = decode_bytes_per_px(VAEDecoderConfig(), 2)  # released decoder, bf16
    assert per_px == pytest.approx(1.3 * 2 * 128 * 20 * 2)
    assert auto_tile_px(64 << 30, per_px, 544, 992) is None  # whole frame fits: no tiling
    small = auto_tile_px(2 << 30, per_px, 544, 992)
    large = auto_tile_px(6 << 30, per_px, 544, 992)
    assert small % 16 == 0 and large % 16 == 0 and 128 <= small < large
    assert small * small * per_px <= 0.8 * (2 << 30)
    assert min(544, large) * min(992, large) * per_px <= 0.8 * (6 << 30)
