"""Bad input costs no memory, data or clarity (issue 24): the pure checks behind the nodes."""

import json
import os
import shutil
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from harness.host_runtime import import_host

import_host()

from stepvideo_pack.media.frames import cover_and_crop, crop_to_multiple  # noqa: E402
from stepvideo_pack.media.mp4 import NotAVideo, open_video, read_mp4_frames, write_mp4  # noqa: E402
from stepvideo_pack.model_loaders.errors import CheckpointError  # noqa: E402
from stepvideo_pack.model_loaders.memory import SAMPLER_LATENT_BUFFERS, latent_bytes, run_estimate  # noqa: E402
from stepvideo_pack.model_loaders.text_encoder_loader import (locate_clip_tokenizer,  # noqa: E402
                                                              locate_step_tokenizer)
from stepvideo_pack.model_loaders.weight_files import open_weights, read_safetensors_header  # noqa: E402
from stepvideo_pack.networks.dit import DiTConfig  # noqa: E402
from stepvideo_pack.nodes import memory as node_memory  # noqa: E402
from stepvideo_pack.nodes.host import require_finite, require_finite_tensor  # noqa: E402
from stepvideo_pack.nodes.sampling import SEED_RANGE, OfficialEulerSampler, window_seed  # noqa: E402
from stepvideo_pack.samplers.video_geometry import frames_within  # noqa: E402

pytestmark = pytest.mark.host

PARITY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "parity")
TINY_CLIP = os.path.join(PARITY, "hunyuan_clip_tiny")
TINY_LLM = os.path.join(PARITY, "step_llm_tiny")
GIB = 1024 ** 3


# --- non-finite numbers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_floats_are_refused_naming_node_and_input(value):
    with pytest.raises(ValueError, match=r"^StepVideo Sampler: shift is .*finite number"):
        require_finite("StepVideo Sampler", cfg=5.0, shift=value)
    require_finite("StepVideo Sampler", cfg=5.0, shift=13.0, denoise=0.0)


def test_non_finite_latent_values_are_counted_and_named():
    latent = torch.zeros(1, 4, 3, 2, 2)
    require_finite_tensor("StepVideo Sampler (latent)", latent)
    latent[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"StepVideo Sampler \(latent\): 4 of 48 values are NaN"):
        require_finite_tensor("StepVideo Sampler (latent)", latent)


def test_sampling_stops_at_the_step_whose_prediction_is_not_finite():
    calls = []

    def model_wrap(x, sigma, **kwargs):
        calls.append(float(sigma[0]))
        return torch.full_like(x, float("nan")) if len(calls) == 3 else x * 0.5

    sigmas = torch.linspace(1, 0, 6)
    with pytest.raises(FloatingPointError, match=r"step 3 of 5 \(noise level 0\.6000\)"):
        OfficialEulerSampler().sample(model_wrap, sigmas, {}, None, torch.randn(1, 4, 3, 2, 2))
    assert len(calls) == 3  # stopped there, nothing sampled after the bad step


# --- seeds ------------------------------------------------------------------------------------------------

def test_window_seeds_stay_in_the_hosts_range():
    assert window_seed(5, 2) == 7
    assert window_seed(SEED_RANGE - 1, 0) == SEED_RANGE - 1
    assert window_seed(SEED_RANGE - 1, 1) == 0
    assert window_seed(SEED_RANGE - 2, 3) == 1
    torch.Generator().manual_seed(window_seed(SEED_RANGE - 1, 5))  # a seed the host's noise accepts


# --- images and frames ------------------------------------------------------------------------------------

def old_cover_then_crop(images, width, height):
    """The previous preparation: resize to cover, then crop (cost grows with the upscaled intermediate)."""
    _, h, w, _ = images.shape
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    x = F.interpolate(images.permute(0, 3, 1, 2), size=(new_h, new_w), mode="bilinear", antialias=True)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return x[:, :, top:top + height, left:left + width].permute(0, 2, 3, 1)


def test_crop_first_matches_cover_then_crop_on_ordinary_images():
    ys, xs = torch.meshgrid(torch.arange(90.0), torch.arange(160.0), indexing="ij")
    image = torch.stack([0.5 + 0.4 * torch.sin(xs / 9), 0.5 + 0.4 * torch.cos(ys / 7), (xs + ys) / 250], -1)[None]
    for width, height in ((64, 64), (160, 96), (320, 176)):
        new, old = cover_and_crop(image, width, height), old_cover_then_crop(image, width, height)
        assert new.shape == (1, height, width, 3)
        assert (new - old).abs().mean() < 0.01, (width, height)  # the crops differ by under a source pixel


def test_an_extreme_aspect_ratio_costs_only_the_output():
    """A 2,000,000 x 1 strip into 256x256: the old path needed a 256 x 512,000,000 intermediate (~1.5 TB);
    cropping first reads one pixel."""
    strip = torch.zeros(1, 1, 2_000_000, 3)
    strip[0, 0, 999_999] = torch.tensor([1.0, 0.5, 0.25])  # the centre pixel
    out = cover_and_crop(strip, 256, 256)
    assert out.shape == (1, 256, 256, 3)
    assert torch.allclose(out[0, 128, 128], torch.tensor([1.0, 0.5, 0.25]))


def test_frames_are_centre_cropped_to_multiples_of_16():
    frames = torch.arange(1080 * 1920, dtype=torch.float32).reshape(1, 1080, 1920, 1).expand(2, -1, -1, 3)
    cropped = crop_to_multiple(frames, 16)
    assert cropped.shape == (2, 1072, 1920, 3)
    assert torch.equal(cropped, frames[:, 4:1076])
    assert crop_to_multiple(frames[:, :64, :96], 16).shape == (2, 64, 96, 3)
    with pytest.raises(ValueError, match="10x1080 pixels are too small"):
        crop_to_multiple(frames[:, :, :10], 16)


# --- video files ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def counting_clip(tmp_path_factory):
    """40 frames of 32x48, frame i filled with grey level 6 i (survives H.264 to within a few levels)."""
    frames = np.repeat(np.arange(40, dtype=np.uint8)[:, None, None, None] * 6, 32 * 48 * 3).reshape(40, 32, 48, 3)
    return write_mp4(str(tmp_path_factory.mktemp("video") / "count.mp4"), frames, crf=0)


def test_only_the_frames_asked_for_are_decoded(counting_clip):
    everything, fps = read_mp4_frames(counting_clip)
    assert everything.shape == (40, 32, 48, 3) and fps == 25.0
    info, frames = open_video(counting_clip, skip=5, limit=7)
    assert (info["width"], info["height"], info["frames"]) == (48, 32, 40)
    part = np.stack(list(frames))
    assert np.array_equal(part, everything[5:12])
    levels = part.reshape(7, -1).mean(axis=1) / 6
    assert np.allclose(levels, np.arange(5, 12), atol=0.5)
    assert np.array_equal(np.stack(list(open_video(counting_clip, skip=35)[1])), everything[35:])
    assert list(open_video(counting_clip, skip=40)[1]) == []


def test_a_file_that_is_not_a_video_gets_one_line(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are notes, not a video\n" * 20)
    with pytest.raises(NotAVideo) as info:
        open_video(str(fake))
    message = str(info.value)
    assert message.startswith(f"{fake} is not a video ffmpeg can read: ")
    assert "\n" not in message and "ffmpeg version" not in message and len(message) < 300


# --- memory checks ----------------------------------------------------------------------------------------

def test_the_estimate_counts_the_samplers_latent_buffers():
    config = DiTConfig()
    with_cfg = run_estimate(config, 1, 36, 34, 62)
    without = run_estimate(config, 1, 36, 34, 62, cfg_passes=1)
    one = latent_bytes((1, 64, 36, 34, 62))
    assert with_cfg["latents"] == SAMPLER_LATENT_BUFFERS[2] * one and without["latents"] == 12 * one
    assert with_cfg["working"] == with_cfg["activations"] + with_cfg["latents"]
    assert with_cfg["peak"] == with_cfg["weights"] + with_cfg["working"]


def with_free_memory(monkeypatch, ram, device):
    monkeypatch.setattr(node_memory, "cpu_free_bytes", lambda: ram)
    monkeypatch.setattr(node_memory, "available_bytes", lambda dev: device)


def test_a_latent_that_cannot_be_sampled_is_refused_with_what_fits(monkeypatch):
    with_free_memory(monkeypatch, 24 * GIB, 24 * GIB)
    shape = (2, 64, 180, 256, 256)  # Empty Latent's maximum with batch 2: 5.6 GiB, 17 buffers 95.6 GiB
    with pytest.raises(MemoryError) as info:
        node_memory.require_latent_fits("StepVideo Empty Latent", shape)
    message = str(info.value)
    assert message.startswith("StepVideo Empty Latent: the latent [2, 64, 180, 256, 256] (4096x4096 with batch 2) "
                              "is 5.6 GiB; sampling it takes 17 such buffers, 95.6 GiB")
    fit = int(0.9 * 24 * GIB) // (17 * latent_bytes((2, 64, 1, 256, 256)))  # latent frames
    assert f"at most {fit // 3 * 17} frames fit" in message
    node_memory.require_latent_fits("StepVideo Empty Latent", (2, 64, fit // 3 * 3, 256, 256))  # that many do


def test_ram_for_a_long_videos_whole_clip_is_checked(monkeypatch):
    with_free_memory(monkeypatch, 4 * GIB, 1024 * GIB)
    node_memory.require_latent_fits("StepVideo Long Video", (1, 64, 39, 34, 62))
    with pytest.raises(MemoryError, match=r"the latent \[1, 64, 9000, 34, 62\] .* of RAM, but 4.0 GiB"):
        node_memory.require_latent_fits("StepVideo Long Video", (1, 64, 39, 34, 62), stored_frames=9000)


def test_pixel_frames_of_a_latent_budget():
    assert [frames_within(n) for n in (0, 1, 2, 3, 5, 6, 36)] == [0, 1, 1, 17, 17, 34, 204]


# --- weight files -----------------------------------------------------------------------------------------

def write_header(path, header, data=b""):
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    return str(path)


@pytest.mark.parametrize("header, problem", [
    ([1, 2, 3], "a JSON list, not an object"),
    ({"w": [1, 2]}, "tensor 'w' is described by a JSON list"),
    ({"w": {"dtype": "F32", "shape": [2]}}, "tensor 'w' has data_offsets None"),
    ({"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}, "tensor 'w' has shape '2'"),
    ({"w": {"shape": [2], "data_offsets": [0, 8]}}, "tensor 'w' has no dtype"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, r"data_offsets \[8, 0\]"),
])
def test_malformed_safetensors_headers_name_the_file(tmp_path, header, problem):
    path = write_header(tmp_path / "bad.safetensors", header, b"\0" * 8)
    with pytest.raises(CheckpointError, match=problem) as info:
        read_safetensors_header(path)
    assert str(info.value).startswith(f"{path} has a malformed safetensors header")


@pytest.mark.parametrize("shard", ["../../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors",
                                   "..\\..\\x.safetensors"])
def test_shards_outside_the_index_folder_are_never_read(tmp_path, shard):
    secret = tmp_path / "outside.safetensors"
    secret.write_text("root:x:0:0:secret")
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(CheckpointError, match="points outside the index's folder") as info:
        open_weights(str(folder))
    assert "root:" not in str(info.value) and str(folder / "model.safetensors.index.json") in str(info.value)


def test_an_index_whose_weight_map_is_not_an_object_is_named(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["a.safetensors"]}))
    with pytest.raises(CheckpointError, match="'weight_map' is a list"):
        open_weights(str(tmp_path))


def test_an_old_format_bin_loads_and_garbage_is_named(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    old = tmp_path / "old.bin"
    torch.save(state, old, _use_new_zipfile_serialization=False)
    weights = open_weights(str(old))
    assert torch.equal(weights.load("w"), state["w"])
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\x01 definitely not a pickle" * 10)
    with pytest.raises(CheckpointError, match="old-format .*not a PyTorch file") as info:
        open_weights(str(garbage))
    assert str(info.value).startswith(str(garbage)) and "mmap" not in str(info.value)


def test_a_text_encoder_in_the_other_slot_is_named_as_what_it_is(tmp_path):
    clip_state = torch.load(os.path.join(TINY_CLIP, "clip_text_encoder", "pytorch_model.bin"), weights_only=True)
    clip_file = tmp_path / "clip_single.safetensors"
    save_file({k: v.contiguous() for k, v in clip_state.items()}, str(clip_file))
    with pytest.raises(CheckpointError, match="is not a Step-LLM text encoder checkpoint: it looks like a "
                                              "HunyuanCLIP"):
        locate_step_tokenizer(str(clip_file))
    with pytest.raises(CheckpointError, match="it looks like a HunyuanCLIP"):
        locate_step_tokenizer(TINY_CLIP)  # the official hunyuan_clip/ folder in the Step-LLM slot
    llm = tmp_path / "models" / "step_llm"
    llm.mkdir(parents=True)
    shutil.copy(os.path.join(TINY_LLM, "model.safetensors"), llm)
    with pytest.raises(CheckpointError, match="is not a HunyuanCLIP text encoder checkpoint: it looks like a "
                                              "Step-LLM"):
        locate_clip_tokenizer(str(llm))
    unreadable = tmp_path / "nothing_here"
    unreadable.mkdir()
    with pytest.raises(CheckpointError, match="no Step-LLM tokenizer found"):
        locate_step_tokenizer(str(unreadable))  # no weights to judge: the tokenizer message stays


def test_load_video_refuses_a_clip_that_cannot_fit_before_decoding_it(counting_clip, monkeypatch):
    import folder_paths

    from stepvideo_pack.nodes import video as video_node

    monkeypatch.setattr(folder_paths, "get_annotated_filepath", lambda name: counting_clip)
    per_frame = 48 * 32 * 3 * 5
    monkeypatch.setattr(video_node, "cpu_free_bytes", lambda: int(10 * per_frame / 0.9) + 1)  # 10 frames fit
    with pytest.raises(MemoryError, match=r"count.mp4: 40 frames of 48x32 need .* at most 10 frames fit"):
        video_node.StepVideoLoadVideo().load("count.mp4", 0, 0)
    with pytest.raises(MemoryError, match="30 frames of 48x32"):
        video_node.StepVideoLoadVideo().load("count.mp4", 10, 100000)
    images, fps = video_node.StepVideoLoadVideo().load("count.mp4", 30, 100000)
    assert images.shape == (10, 32, 48, 3) and images.dtype == torch.float32 and fps == 25.0


def test_a_decode_whose_output_cannot_fit_is_refused_before_the_vae_loads(monkeypatch):
    from types import SimpleNamespace

    from stepvideo_pack.networks.vae import VAEConfig
    from stepvideo_pack.nodes import vae as vae_node

    monkeypatch.setattr(node_memory, "cpu_free_bytes", lambda: 8 * GIB)
    handle = SimpleNamespace(vae=SimpleNamespace(config=VAEConfig()), ready=lambda budget: pytest.fail("loaded"))
    latent = torch.empty(1, 64, 36, 68, 120, device="meta")  # 204 frames of 1920x1088: 4.8 GiB, 3 copies
    with pytest.raises(MemoryError, match=r"StepVideo VAE Decode: decoding \[1, 64, 36, 68, 120\] to 1 x 204 "
                                          r"frames of 1920x1088 needs 14.3 GiB of RAM, but 8.0 GiB"):
        vae_node.decode_latent(handle, latent)
