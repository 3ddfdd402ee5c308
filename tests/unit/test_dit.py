"""DiT network + loader: full-size config detection, official folder layout, errors, fp8, chunking."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from harness.keylists import weights_from_key_list
from stepvideo_pack.model_loaders.dit_loader import detect_dit_config, dit_weights, load_dit
from stepvideo_pack.model_loaders.errors import CheckpointError
from stepvideo_pack.model_loaders.materialize import build_on_meta
from stepvideo_pack.networks.attention import resolve_backend
from stepvideo_pack.networks.dit import DiTConfig, StepVideoDiT
from harness.tiny_checkpoints import TINY_DIT, tiny_dit, write_transformer

RELEASED = DiTConfig()  # defaults = the released 30B model


def dit_inputs(config, batch=2, frames=3, height=4, width=6, seed=1):
    gen = torch.Generator().manual_seed(seed)
    llm_width, clip_width = config.caption_channels
    mask = torch.ones(batch, 77 + 20)
    mask[1, 77 + 12:] = 0
    return dict(
        hidden_states=torch.randn(batch, frames, config.in_channels, height, width, generator=gen),
        timestep=torch.tensor([0.25, 0.8])[:batch],
        encoder_hidden_states=torch.randn(batch, 20, llm_width, generator=gen),
        encoder_hidden_states_2=torch.randn(batch, 77, clip_width, generator=gen),
        encoder_attention_mask=mask)


@pytest.mark.parametrize("key_list, ti2v, params", [("dit_t2v.txt", False, 29_342_478_400),
                                                    ("dit_ti2v.txt", True, 29_382_205_504)])
def test_full_size_config_detected_from_official_keys(key_list, ti2v, params):
    weights = weights_from_key_list(key_list)
    config = detect_dit_config(weights)
    assert config == DiTConfig(image_condition=ti2v)
    assert (config.num_layers, config.num_heads, config.head_dim, config.in_channels) == (48, 48, 128, 64)
    model = build_on_meta(lambda: StepVideoDiT(config))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: weights.shape(k) for k in weights.keys()}
    assert sum(p.numel() for p in model.parameters()) == params


def test_sharded_official_folder_loads_and_matches_the_saved_model(tmp_path):
    reference = tiny_dit(seed=3)
    from stepvideo_pack.model_loaders.official_layout import save_transformer
    folder = save_transformer(reference.state_dict(), str(tmp_path), TINY_DIT, shards=3)
    assert len([n for n in os.listdir(folder) if n.endswith(".safetensors")]) == 3
    loaded = load_dit(folder)
    inputs = {k: v.to(torch.bfloat16) for k, v in dit_inputs(TINY_DIT).items()}
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), reference(**inputs))


def test_checkpoint_metadata_says_how_known_latents_are_seen(tmp_path):
    """The released weights carry no such metadata (re-noised known latents, ComfyUI's noise_mask);
    a checkpoint trained with clean context says so, and an unknown value is named."""
    from stepvideo_pack.model_loaders.dit_loader import KNOWN_LATENTS_KEY
    from stepvideo_pack.model_loaders.official_layout import save_transformer
    state = tiny_dit(seed=5).state_dict()
    assert load_dit(save_transformer(state, str(tmp_path / "plain"), TINY_DIT)).clean_known is False
    clean = save_transformer(state, str(tmp_path / "clean"), TINY_DIT, metadata={KNOWN_LATENTS_KEY: "clean"})
    assert load_dit(clean).clean_known is True
    odd = save_transformer(state, str(tmp_path / "odd"), TINY_DIT, metadata={KNOWN_LATENTS_KEY: "sharp"})
    with pytest.raises(CheckpointError, match="stepvideo.known_latents.*'sharp'.*'renoised', 'clean'"):
        load_dit(odd)


def test_single_file_with_comfy_prefix_loads(tmp_path):
    reference = tiny_dit(seed=4)
    path = tmp_path / "stepvideo_tiny.safetensors"
    save_file({"model.diffusion_model." + k: v for k, v in reference.state_dict().items()}, str(path))
    assert detect_dit_config(dit_weights(str(path))) == TINY_DIT


def test_truncated_shard_names_the_file_and_the_missing_bytes(tmp_path):
    folder = write_transformer(str(tmp_path), shards=2)
    shard = os.path.join(folder, "diffusion_pytorch_model-00002-of-00002.safetensors")
    size = os.path.getsize(shard)
    with open(shard, "r+b") as f:
        f.truncate(size - 1000)
    with pytest.raises(CheckpointError, match=r"00002-of-00002\.safetensors is truncated.*1,000 bytes missing"):
        load_dit(folder)


def test_missing_shard_and_missing_index_entry_are_named(tmp_path):
    folder = write_transformer(str(tmp_path), shards=2)
    index_path = os.path.join(folder, "diffusion_pytorch_model.safetensors.index.json")
    with open(index_path) as f:
        index = json.load(f)
    removed = sorted(index["weight_map"])[0]
    del index["weight_map"][removed]
    with open(index_path, "w") as f:
        json.dump(index, f)
    with pytest.raises(CheckpointError, match=r"1 tensors that .* does not list: '" + removed.replace(".", r"\.")):
        load_dit(folder)
    os.remove(os.path.join(folder, "diffusion_pytorch_model-00001-of-00002.safetensors"))
    with pytest.raises(CheckpointError, match=r"are missing from .*00001-of-00002"):
        load_dit(folder)


def test_vae_file_in_the_dit_slot_says_what_it_is(tmp_path):
    path = tmp_path / "vae_v2.safetensors"
    save_file({"encoder.conv_in.conv.weight": torch.zeros(4, 3, 3, 3, 3),
               "decoder.conv_in.conv.weight": torch.zeros(8, 4, 3, 3, 3)}, str(path))
    with pytest.raises(CheckpointError, match=r"is not a Step-Video DiT checkpoint: it looks like a Step-Video Video-VAE"):
        load_dit(str(path))


def test_missing_and_unexpected_keys_are_counted(tmp_path):
    state = tiny_dit().state_dict()
    state.pop("proj_out.bias")
    state["transformer_blocks.0.extra.weight"] = torch.zeros(2)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"1 of its \d+ expected tensors are missing \('proj_out.bias'\); "
                                              r"1 tensors are not part of it"):
        load_dit(str(path))


def test_integer_tensor_where_a_weight_belongs_is_a_dtype_error(tmp_path):
    state = tiny_dit().state_dict()
    state["proj_out.weight"] = state["proj_out.weight"].to(torch.int8)
    path = tmp_path / "int.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"'proj_out.weight' is stored as torch.int8 but .* floating-point"):
        load_dit(str(path))


def test_other_size_is_a_shape_error_naming_the_tensor(tmp_path):
    folder = write_transformer(str(tmp_path / "ti2v"), config=DiTConfig(**{**TINY_DIT.__dict__, "image_condition": True}))
    weights = dit_weights(folder)
    model = build_on_meta(lambda: StepVideoDiT(TINY_DIT))
    from stepvideo_pack.model_loaders.materialize import load_into
    with pytest.raises(CheckpointError):
        load_into(model, weights, "Step-Video DiT")


def test_fp8_storage_runs_in_bf16_close_to_bf16_weights(tmp_path):
    folder = write_transformer(str(tmp_path), seed=5)
    bf16 = load_dit(folder, weight_dtype=torch.bfloat16)
    fp8 = load_dit(folder, weight_dtype=torch.float8_e4m3fn)
    assert fp8.transformer_blocks[0].attn1.wqkv.weight.dtype == torch.float8_e4m3fn
    assert fp8.transformer_blocks[0].norm1.weight.dtype == torch.bfloat16
    bytes_of = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())  # noqa: E731
    assert bytes_of(fp8) < 0.6 * bytes_of(bf16)
    inputs = {k: v.to(torch.bfloat16) for k, v in dit_inputs(TINY_DIT).items()}
    with torch.no_grad():
        a, b = bf16(**inputs).float(), fp8(**inputs).float()
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    # e4m3 keeps 3 mantissa bits (relative step 1/16): outputs stay within a few percent of bf16.
    assert (a - b).norm() / a.norm() < 0.08


def test_token_chunking_gives_the_same_result():
    model = tiny_dit(seed=6, dtype=torch.float32)
    inputs = dit_inputs(TINY_DIT, frames=3, height=4, width=6)
    with torch.no_grad():
        full = model(**inputs)
        model.chunk_tokens = 7  # 72 tokens -> 11 chunks, the last one short
        chunked = model(**inputs)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-6)


def test_padding_mask_hides_llm_tokens_beyond_the_valid_length():
    model = tiny_dit(seed=7, dtype=torch.float32)
    inputs = dit_inputs(TINY_DIT, batch=2)
    with torch.no_grad():
        before = model(**inputs)
        inputs["encoder_hidden_states"][:, 12:] = 100.0  # masked in row 1, valid in row 0
        after = model(**inputs)
    assert torch.equal(before[1], after[1])
    assert not torch.allclose(before[0], after[0])


def test_unavailable_attention_backend_falls_back_with_one_line():
    backend, message = resolve_backend("flash_attn")
    if backend == "sdpa":
        assert message and "\n" not in message and "using PyTorch SDPA" in message
    with pytest.raises(ValueError, match="unknown attention backend"):
        resolve_backend("xformers")
