"""The combined text encoder (prompts -> DiT conditioning) and its disk cache of embeddings."""

import logging
import os
import shutil

import pytest
import torch

from stepvideo_pack.model_loaders import text_encoding
from stepvideo_pack.model_loaders.errors import CheckpointError
from stepvideo_pack.model_loaders.official_layout import save_sharded
from stepvideo_pack.model_loaders.text_encoder_loader import (load_clip_tokenizer, load_hunyuan_clip, load_step_llm,
                                                              load_step_tokenizer)
from stepvideo_pack.model_loaders.text_encoding import (T2V_NEGATIVE_MAGIC, T2V_POSITIVE_MAGIC, TI2V_NEGATIVE_MAGIC,
                                                        TI2V_POSITIVE_MAGIC, StepVideoTextEncoder, TextEmbeddings,
                                                        compose_prompts)
from stepvideo_pack.networks.dit import DiTConfig, StepVideoDiT
from stepvideo_pack.networks.step_llm import StepLLM, StepLLMConfig

PARITY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "parity")
STEP_TOKENIZER = os.path.join(PARITY, "step_tokenizer", "step1_chat_tokenizer.model")
TINY_CLIP = os.path.join(PARITY, "hunyuan_clip_tiny")
# the tiny tokenizer has 1000 pieces, so this Step-LLM has 1000 embeddings
TINY_LLM = StepLLMConfig(hidden_size=256, num_layers=2, num_heads=2, num_groups=1, ffn_width=256, vocab_size=1000)
HUB_NAMES = {"hidden_size": 256, "num_layers": 2, "num_attention_heads": 2, "num_attention_groups": 1,
             "ffn_hidden_size": 256, "padded_vocab_size": 1000, "layernorm_epsilon": 1e-5}
PROMPTS = ["一只可爱的小猫在草地上追逐蝴蝶。", "A drone shot of a red car at sunset.", "超高清4K画质, a panda 在竹林里。"]


def random_state(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {k: 0.02 * torch.randn(v.shape, generator=gen) + (1 if v.ndim == 1 else 0)  # norm scales around 1
            for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    """Official step_llm/ and hunyuan_clip/ folders with tiny random weights and the fixture tokenizers."""
    root = tmp_path_factory.mktemp("stepvideo")
    state = {k: v.to(torch.bfloat16) for k, v in random_state(StepLLM(TINY_LLM)).items()}
    llm = save_sharded(state, str(root / "step_llm"), "model", 2, config=HUB_NAMES)
    shutil.copy(STEP_TOKENIZER, llm)
    for part in ("clip_text_encoder", "tokenizer"):
        shutil.copytree(os.path.join(TINY_CLIP, part), root / "hunyuan_clip" / part)
    return root


def make_encoder(root, **options):
    return StepVideoTextEncoder(str(root / "step_llm"), str(root / "hunyuan_clip"), **options)


def forbid_loading(monkeypatch):
    """Any attempt of the combined encoder to load an encoder or tokenizer fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("an encoder was loaded although every prompt was cached")
    for name in ("load_step_llm", "load_hunyuan_clip", "load_step_tokenizer", "load_clip_tokenizer"):
        monkeypatch.setattr(text_encoding, name, refuse)


def test_bilingual_prompts_give_dit_shapes_mask_and_official_values(model_root):
    encoder = make_encoder(model_root)
    out = encoder.encode(PROMPTS)
    assert out.llm_states.shape == (3, 320, 256) and out.llm_states.dtype == torch.bfloat16
    assert out.clip_states.shape == (3, 77, 64) and out.clip_states.dtype == torch.bfloat16
    assert out.mask.shape == (3, 397) and out.mask.dtype == torch.int64
    llm_ids, llm_mask = load_step_tokenizer(model_root / "step_llm")(PROMPTS, max_length=320)
    clip_ids, clip_mask = load_clip_tokenizer(model_root / "hunyuan_clip")(PROMPTS, max_length=77)
    assert (out.mask[:, :77] == 1).all() and torch.equal(out.mask[:, 77:], llm_mask)
    with torch.no_grad():
        assert torch.equal(out.llm_states, load_step_llm(model_root / "step_llm")(llm_ids))
        clip = load_hunyuan_clip(model_root / "hunyuan_clip")(clip_ids, clip_mask)
    assert torch.equal(out.clip_states, clip.to(torch.bfloat16))
    assert encoder.step_llm is None and encoder.clip is None  # freed after encoding by default


def test_keep_loaded_keeps_both_encoders(model_root):
    encoder = make_encoder(model_root, keep_loaded=True)
    encoder.encode(["a"])
    assert encoder.step_llm is not None and encoder.clip is not None
    encoder.unload()
    assert encoder.step_llm is None and encoder.clip is None


def test_offloaded_weights_give_the_same_embeddings(model_root):
    reference = make_encoder(model_root).encode(PROMPTS[:2])
    offloaded = make_encoder(model_root, offload=True)  # weights stay on the CPU, layers cast as they run
    out = offloaded.encode(PROMPTS[:2])
    assert torch.equal(out.llm_states, reference.llm_states) and torch.equal(out.clip_states, reference.clip_states)


def test_second_encoder_reads_the_cache_without_loading_anything(model_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    positive, negative = compose_prompts("一只熊猫 a panda")
    first = make_encoder(model_root, cache_dir=str(cache)).encode([positive, negative])
    assert len(os.listdir(cache)) == 2  # one entry per prompt text
    forbid_loading(monkeypatch)
    second = make_encoder(model_root, cache_dir=str(cache)).encode([positive, negative])
    for name in ("llm_states", "clip_states", "mask"):
        assert torch.equal(getattr(first, name), getattr(second, name))


def test_only_uncached_prompts_are_encoded(model_root, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    make_encoder(model_root, cache_dir=cache).encode([T2V_NEGATIVE_MAGIC])
    batches = []
    real_load = text_encoding.load_step_llm

    def spying_load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: batches.append(inputs[0].shape[0]))
        return model

    monkeypatch.setattr(text_encoding, "load_step_llm", spying_load)
    out = make_encoder(model_root, cache_dir=cache).encode(["new prompt", T2V_NEGATIVE_MAGIC, "new prompt"])
    assert batches == [1] and out.llm_states.shape[0] == 3
    assert torch.equal(out.llm_states[0], out.llm_states[2])


def test_corrupt_cache_file_is_ignored_and_rewritten(model_root, tmp_path, caplog, monkeypatch):
    cache_dir = tmp_path / "cache"
    reference = make_encoder(model_root, cache_dir=str(cache_dir)).encode(["a cat"])
    (entry,) = os.listdir(cache_dir)
    (cache_dir / entry).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with caplog.at_level(logging.WARNING):
        again = make_encoder(model_root, cache_dir=str(cache_dir)).encode(["a cat"])
    assert "unreadable text-embedding cache file" in caplog.text
    assert torch.equal(again.llm_states, reference.llm_states)
    forbid_loading(monkeypatch)  # the rewritten entry serves the next run
    assert torch.equal(make_encoder(model_root, cache_dir=str(cache_dir)).encode(["a cat"]).clip_states,
                       reference.clip_states)


def test_cache_key_follows_lengths_and_encoder_files(model_root, tmp_path):
    cache_dir = tmp_path / "cache"
    make_encoder(model_root, cache_dir=str(cache_dir)).encode(["a cat"])
    make_encoder(model_root, cache_dir=str(cache_dir), llm_max_length=64).encode(["a cat"])
    assert len(os.listdir(cache_dir)) == 2
    shard = model_root / "step_llm" / "model-00001-of-00002.safetensors"
    stat = os.stat(shard)
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a re-downloaded file
    make_encoder(model_root, cache_dir=str(cache_dir)).encode(["a cat"])
    assert len(os.listdir(cache_dir)) == 3
    (model_root / "step_llm" / ".cache").mkdir()
    (model_root / "step_llm" / ".cache" / "download.lock").write_text("bookkeeping")
    make_encoder(model_root, cache_dir=str(cache_dir)).encode(["a cat"])
    assert len(os.listdir(cache_dir)) == 3


def test_unwritable_cache_only_warns(model_root, tmp_path, caplog):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING):
        out = make_encoder(model_root, cache_dir=str(blocker)).encode(["a cat"])
    assert out.llm_states.shape == (1, 320, 256)
    assert "could not write the text-embedding cache" in caplog.text


def test_mismatched_tokenizer_and_weights_are_named(model_root, tmp_path):
    small = tmp_path / "step_llm"
    config = StepLLMConfig(hidden_size=256, num_layers=1, num_heads=2, num_groups=1, ffn_width=256, vocab_size=100)
    save_sharded({k: v.to(torch.bfloat16) for k, v in random_state(StepLLM(config)).items()}, str(small), "model", 1,
                 config={**HUB_NAMES, "num_layers": 1, "padded_vocab_size": 100})
    shutil.copy(STEP_TOKENIZER, small)
    encoder = StepVideoTextEncoder(str(small), str(model_root / "hunyuan_clip"))
    with pytest.raises(CheckpointError, match=r"produced token id \d+, but the text encoder .* has only 100 token"):
        encoder.encode([PROMPTS[0]])


def test_prompt_composition_uses_the_official_magic():
    assert compose_prompts("一只猫") == ["一只猫" + T2V_POSITIVE_MAGIC, T2V_NEGATIVE_MAGIC]
    assert compose_prompts("cat", variant="ti2v") == ["cat" + TI2V_POSITIVE_MAGIC, TI2V_NEGATIVE_MAGIC]
    assert compose_prompts("cat", negative_prompt="blurry") == ["cat" + T2V_POSITIVE_MAGIC, "blurry" + T2V_NEGATIVE_MAGIC]
    assert compose_prompts("cat", negative_prompt="blurry", use_magic=False) == ["cat", "blurry"]
    assert compose_prompts("cat", use_magic=False) == ["cat", ""]
    assert T2V_POSITIVE_MAGIC.startswith("超高清、HDR 视频") and T2V_NEGATIVE_MAGIC.endswith("用户名、模糊。")
    assert TI2V_NEGATIVE_MAGIC.endswith("畸形手指")
    with pytest.raises(ValueError, match="unknown Step-Video variant"):
        compose_prompts("cat", variant="t2i")


def test_embeddings_drive_the_dit(model_root):
    out = make_encoder(model_root).encode(compose_prompts("一只熊猫 a panda"))
    positive, negative = out.split()
    assert isinstance(positive, TextEmbeddings) and positive.mask.shape == (1, 397)
    assert torch.equal(negative.llm_states[0], out.llm_states[1])
    config = DiTConfig(num_heads=2, head_dim=128, in_channels=4, out_channels=4, num_layers=1,
                       caption_channels=(256, 64), ff_inner_dim=256)
    dit = StepVideoDiT(config).to(torch.bfloat16)
    latents = torch.randn(2, 1, 4, 2, 2, dtype=torch.bfloat16)
    with torch.no_grad():
        velocity = dit(latents, torch.tensor([0.5, 0.5]), **out.dit_inputs())
    assert velocity.shape == latents.shape and torch.isfinite(velocity).all()


def test_encoding_reports_progress_per_layer_and_not_on_a_cache_hit(model_root, tmp_path):
    calls = []
    encoder = make_encoder(model_root, cache_dir=str(tmp_path / "cache"))
    encoder.encode(["a red circle", "红色圆形"], on_progress=lambda done, total: calls.append((done, total)))
    llm_layers, clip_layers = 2, 2
    assert calls[:llm_layers] == [(1, llm_layers + 1), (2, llm_layers + 1)]
    assert calls[llm_layers:] == [(3, 4), (4, 4)] and len(calls) == llm_layers + clip_layers
    calls.clear()
    encoder.encode(["a red circle"], on_progress=lambda done, total: calls.append((done, total)))
    assert calls == []


def rewrite_entry(path, change):
    """Rewrite a cache file keeping its key (metadata) with ``change(tensors)`` applied."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file({k: v.contiguous() for k, v in change(tensors).items()}, str(path), metadata=metadata)


@pytest.mark.parametrize("change, problem", [
    (lambda t: {**t, "llm_states": t["llm_states"][:, :128]}, "llm_states is (320, 128) torch.bfloat16, expected "
                                                              "(320, 256) torch.bfloat16"),
    (lambda t: {**t, "clip_states": t["clip_states"].float()}, "clip_states is (77, 64) torch.float32, expected "
                                                              "(77, 64) torch.bfloat16"),
    (lambda t: {**t, "llm_mask": t["llm_mask"].int()}, "llm_mask is (320,) torch.int32"),
    (lambda t: {k: v for k, v in t.items() if k != "clip_states"}, "no 'clip_states'"),
])
def test_an_entry_that_does_not_fit_the_encoders_is_recomputed_and_named(model_root, tmp_path, caplog, change,
                                                                          problem):
    cache_dir = tmp_path / "cache"
    reference = make_encoder(model_root, cache_dir=str(cache_dir)).encode(["a cat"])
    (entry,) = os.listdir(cache_dir)
    rewrite_entry(cache_dir / entry, change)
    with caplog.at_level(logging.WARNING):
        again = make_encoder(model_root, cache_dir=str(cache_dir)).encode(["a cat"])
    assert f"{cache_dir / entry} does not fit the encoders" in caplog.text and problem in caplog.text
    for name in ("llm_states", "clip_states", "mask"):
        assert torch.equal(getattr(again, name), getattr(reference, name)), name
    assert again.clip_states.dtype == torch.bfloat16


def test_a_prompt_with_a_lone_surrogate_is_encoded_and_cached(model_root, tmp_path, caplog, monkeypatch):
    cache_dir = str(tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        out = make_encoder(model_root, cache_dir=cache_dir).encode(["a cat \ud800 on a mat"])
    assert "1 lone surrogate" in caplog.text
    replaced = make_encoder(model_root).encode(["a cat \ufffd on a mat"])
    assert torch.equal(out.llm_states, replaced.llm_states)
    forbid_loading(monkeypatch)  # cached under the cleaned text
    make_encoder(model_root, cache_dir=cache_dir).encode(["a cat \udfff on a mat"])


def test_the_cache_keeps_its_size_limit_evicting_the_least_recently_used(model_root, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    encoder = make_encoder(model_root, cache_dir=str(cache_dir), keep_loaded=True)
    encoder.encode(["first"])
    (entry,) = os.listdir(cache_dir)
    size = os.path.getsize(cache_dir / entry)
    encoder.cache.limit_bytes = 3 * size  # three prompts fit
    for prompt in ("second", "third"):
        encoder.encode([prompt])
    paths = {p: encoder.cache.path_for(encoder.cache_key(p)) for p in ("first", "second", "third", "fourth")}
    past = os.stat(paths["third"]).st_mtime_ns - 10 ** 9
    for age, prompt in enumerate(("first", "second", "third")):  # distinct times, oldest first
        os.utime(paths[prompt], ns=(past + age, past + age))
    encoder.encode(["first"])  # a hit makes "first" the most recently used
    encoder.encode(["fourth"])
    assert sorted(os.listdir(cache_dir)) == sorted(os.path.basename(paths[p]) for p in ("first", "third", "fourth"))
    assert sum(os.path.getsize(cache_dir / name) for name in os.listdir(cache_dir)) <= 3 * size
