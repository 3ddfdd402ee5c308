"""The VAE nodes' tiling modes, on the real default host imported in this process (tests/harness/host_runtime.py):
"auto" sizes tiles from the free memory ComfyUI reports for the VAE's device, "on" takes the user's tile,
"off" decodes whole frames."""

import pytest
import torch

from harness.host_runtime import import_host

import_host()

import comfy.model_management  # noqa: E402
from stepvideo_pack.networks.vae import VAEConfig, VAEDecoderConfig, VAEEncoderConfig, VideoVAE  # noqa: E402
from stepvideo_pack.networks.vae_tiling import auto_tile_px, work_bytes_per_px  # noqa: E402
from stepvideo_pack.nodes.vae import StepVideoVAE, ready_with_tiles  # noqa: E402

pytestmark = pytest.mark.host

TINY = VAEConfig(VAEEncoderConfig(ch=32, ch_mult=(1, 1, 1, 2), z_channels=4),
                 VAEDecoderConfig(ch=32, ch_mult=(1, 1, 1, 2), z_channels=4))


def handle():
    return StepVideoVAE(VideoVAE(TINY).eval().requires_grad_(False))


def test_auto_tiles_only_a_frame_whose_work_exceeds_what_the_host_reports_free():
    vae_handle = handle()
    _, whole = ready_with_tiles(vae_handle, "decode", "auto", 512, 256, 448)
    assert whole is None  # a small frame's work fits: decoded whole, exactly
    per_px = work_bytes_per_px(vae_handle.vae, "decode")
    side = 16 * int((2 * comfy.model_management.get_free_memory(torch.device("cpu")) / per_px) ** 0.5 // 16)
    vae, tile = ready_with_tiles(vae_handle, "decode", "auto", 512, side, side)  # ~2x what is free: nothing allocated
    free = comfy.model_management.get_free_memory(vae.device)  # (RAM moves a little between two readings)
    assert isinstance(tile, int) and 128 <= tile < side
    low, high = (auto_tile_px(share * free, per_px, side, side, TINY.spatial_factor) for share in (0.9, 1.1))
    assert low <= tile <= high
    assert tile * tile * per_px <= 1.1 * free  # the tile's work fits in what the host reports free


def test_on_takes_the_users_tile_and_off_decodes_whole_frames():
    vae_handle = handle()
    assert ready_with_tiles(vae_handle, "encode", "on", 192, 544, 992)[1] == 192
    assert ready_with_tiles(vae_handle, "decode", "off", 192, 544, 992)[1] is None
