"""Video-VAE loader: config detection from shapes, accepted layouts, and a clear message for each wrong file."""

import os

import pytest
import torch
from safetensors.torch import save_file

from harness.keylists import weights_from_key_list
from stepvideo_pack.model_loaders.errors import CheckpointError
from stepvideo_pack.model_loaders.materialize import build_on_meta
from stepvideo_pack.model_loaders.vae_loader import detect_vae_config, load_vae, module_to_file_key
from stepvideo_pack.model_loaders.weight_files import open_weights
from stepvideo_pack.networks.vae import VAEConfig, VAEDecoderConfig, VAEEncoderConfig, VideoVAE

TINY = VAEConfig(VAEEncoderConfig(ch=32, ch_mult=(1, 1, 2), z_channels=2, down_sampling_layer=(1,)),
                 VAEDecoderConfig(ch=32, ch_mult=(1, 2, 2), z_channels=2, num_res_blocks=1,
                                  temporal_up_layers=(2,), temporal_downsample=2))


@pytest.fixture(scope="module")
def tiny_state():
    """A tiny VAE's weights under the FILE key names (decoder.conv_out.weight, not .conv.weight)."""
    torch.manual_seed(0)
    model = VideoVAE(TINY)
    return {module_to_file_key(k): v.contiguous() for k, v in model.state_dict().items()}


def write(path, state):
    save_file(state, str(path))
    return str(path)


def test_detects_config_and_loads_strictly(tmp_path, tiny_state):
    path = write(tmp_path / "vae_v2.safetensors", tiny_state)
    assert detect_vae_config(open_weights(path)) == TINY
    vae = load_vae(path, dtype=torch.bfloat16)
    assert vae.dtype == torch.bfloat16 and vae.config == TINY
    stored = tiny_state["decoder.conv_out.weight"]
    assert torch.equal(vae.decoder.conv_out.conv.weight.float(), stored.bfloat16().float())
    assert vae.decode(torch.randn(1, 3, 2, 2, 2).bfloat16()).shape == (1, 9, 3, 16, 16)  # 4x time with one 3-D level


def test_official_folder_and_prefixed_single_file(tmp_path, tiny_state):
    folder = tmp_path / "vae"
    folder.mkdir()
    write(folder / "vae_v2.safetensors", tiny_state)
    write(folder / "vae.safetensors", {"decoder.conv_in.conv.weight": torch.zeros(1)})  # the v1 file beside it
    assert load_vae(str(folder)).config == TINY
    prefixed = write(tmp_path / "checkpoint.safetensors", {"first_stage_model." + k: v for k, v in tiny_state.items()})
    assert load_vae(prefixed).config == TINY


def test_released_config_and_module_keys_from_the_full_key_list():
    weights = weights_from_key_list("vae_v2.txt")
    config = detect_vae_config(weights)
    assert config.encoder == VAEEncoderConfig(ch=32, ch_mult=(4, 8, 16, 16), z_channels=64, num_res_blocks=2,
                                              down_sampling_layer=(1, 2), double_z=True)
    assert config.decoder == VAEDecoderConfig(ch=128, ch_mult=(1, 2, 4, 4), z_channels=64, num_res_blocks=2,
                                              temporal_up_layers=(2, 3), temporal_downsample=4)
    assert (config.frame_len, config.latent_len, config.spatial_factor) == (17, 3, 16)
    model = build_on_meta(lambda: VideoVAE(config))
    shapes = {module_to_file_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(weights.shape(k)) for k in weights.keys()}
    assert sum(v.numel() for v in model.parameters()) == 498_818_819


def expect_error(path, *fragments):
    with pytest.raises(CheckpointError) as info:
        load_vae(path)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return str(info.value)


def test_truncated_file(tmp_path, tiny_state):
    path = write(tmp_path / "vae_v2.safetensors", tiny_state)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1000)
    expect_error(path, path, "truncated", "1,000 bytes missing")


def test_dit_in_the_vae_slot(tmp_path):
    dit_keys = {"transformer_blocks.0.attn1.wqkv.weight": torch.zeros(6, 2), "pos_embed.proj.weight": torch.zeros(2, 1)}
    path = write(tmp_path / "diffusion_pytorch_model.safetensors", dit_keys)
    expect_error(path, "is not a Step-Video Video-VAE", "looks like a Step-Video DiT", "vae_v2.safetensors")


def test_unused_v1_vae(tmp_path, tiny_state):
    v1_like = {k: v for k, v in tiny_state.items() if "patchify" not in k}
    expect_error(write(tmp_path / "vae.safetensors", v1_like), "v1 VAE", "does not use", "vae_v2.safetensors")


def test_missing_tensor(tmp_path, tiny_state):
    state = dict(tiny_state)
    del state["decoder.mid.attn_1.q.conv.bias"]
    expect_error(write(tmp_path / "vae_v2.safetensors", state), "1 of its", "'decoder.mid.attn_1.q.conv.bias'")


def test_integer_tensor_where_a_float_is_expected(tmp_path, tiny_state):
    state = dict(tiny_state)
    state["encoder.norm_out.weight"] = state["encoder.norm_out.weight"].to(torch.int32)
    expect_error(write(tmp_path / "vae_v2.safetensors", state),
                 "'encoder.norm_out.weight' is stored as torch.int32", "floating-point")
