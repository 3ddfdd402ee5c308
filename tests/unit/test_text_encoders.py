"""Step-LLM and HunyuanCLIP: full-size config detection, official layouts, single files, loader errors."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from stepvideo_pack.model_loaders import single_files
from harness.keylists import weights_from_key_list
from stepvideo_pack.model_loaders.errors import CheckpointError
from stepvideo_pack.model_loaders.materialize import build_on_meta
from stepvideo_pack.model_loaders.official_layout import save_sharded
from stepvideo_pack.model_loaders.text_encoder_loader import (
    EMBEDDED_FILES, detect_hunyuan_clip_config, detect_step_llm_config, embed_file, hunyuan_clip_view,
    load_clip_tokenizer, load_hunyuan_clip, load_step_llm, load_step_tokenizer, step_llm_view)
from stepvideo_pack.model_loaders.weight_files import TensorInfo, WeightFiles
from stepvideo_pack.networks.hunyuan_clip import HunyuanClip, HunyuanClipConfig
from stepvideo_pack.networks.step_llm import StepLLM, StepLLMConfig, alibi_slopes, ffn_width

PARITY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "parity")
TINY_LLM = os.path.join(PARITY, "step_llm_tiny")
TINY_CLIP = os.path.join(PARITY, "hunyuan_clip_tiny")
STEP_TOKENIZER = os.path.join(PARITY, "step_tokenizer", "step1_chat_tokenizer.model")
HUB_STEP_LLM_CONFIG = {"hidden_size": 6144, "num_layers": 48, "num_attention_heads": 48, "num_attention_groups": 8,
                       "kv_channels": 128, "ffn_hidden_size": 16896, "padded_vocab_size": 65536,
                       "layernorm_epsilon": 1e-5}


def tiny_llm_config():
    with open(os.path.join(TINY_LLM, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)["official_config"]


def official_step_llm_folder(root, shards=2):
    """The tiny parity Step-LLM as an official step_llm/ folder (shards, index, config.json, tokenizer)."""
    folder = save_sharded(load_file(os.path.join(TINY_LLM, "model.safetensors")), os.path.join(root, "step_llm"),
                          "model", shards, config=tiny_llm_config())
    shutil.copy(STEP_TOKENIZER, folder)
    return folder


def official_clip_folder(root):
    """The tiny parity HunyuanCLIP as an official hunyuan_clip/ folder."""
    folder = os.path.join(root, "hunyuan_clip")
    for part in ("clip_text_encoder", "tokenizer"):
        shutil.copytree(os.path.join(TINY_CLIP, part), os.path.join(folder, part))
    return folder


def token_ids(vocab, batch=2, length=12, seed=0):
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# --- full-size structure -----------------------------------------------------------------------------------

def test_alibi_slopes_follow_the_documented_formula():
    expected = [2.0 ** (-(h + 1) / 4) for h in range(32)] + [2.0 ** (-(2 * m + 1) / 8) for m in range(16)]
    assert torch.equal(alibi_slopes(48), torch.tensor(expected, dtype=torch.float32))
    assert alibi_slopes(6).tolist() == [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3]
    for name in ("step_llm_tiny", "step_llm_mqa"):
        with open(os.path.join(PARITY, name, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        heads = manifest["official_config"]["num_attention_heads"]
        assert alibi_slopes(heads).tolist() == manifest["attention"]["alibi_slopes"]


def test_ffn_width_rounds_up_to_256():
    assert [ffn_width(n) for n in (16896, 384, 256, 257)] == [16896, 512, 256, 512]


@pytest.mark.parametrize("config", [None, HUB_STEP_LLM_CONFIG, {"kv_channels": 128}])
def test_full_size_step_llm_detected_from_official_keys(config):
    weights = step_llm_view(weights_from_key_list("step_llm.txt"))
    detected = detect_step_llm_config(weights, [(config, "hub config.json")])
    assert detected == StepLLMConfig()
    assert (detected.num_layers, detected.num_heads, detected.head_dim, detected.num_groups, detected.ffn_width,
            detected.vocab_size) == (48, 48, 128, 8, 16896, 65536)
    model = build_on_meta(lambda: StepLLM(detected))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: weights.shape(k) for k in weights.keys()}
    assert sum(p.numel() for p in model.parameters()) == 19_579_600_896


def test_step_llm_config_contradicting_the_shapes_is_refused():
    weights = step_llm_view(weights_from_key_list("step_llm.txt"))
    with pytest.raises(CheckpointError, match=r"num_layers = 40 in my config.*tensors say 48"):
        detect_step_llm_config(weights, [({**HUB_STEP_LLM_CONFIG, "num_layers": 40}, "my config")])
    with pytest.raises(CheckpointError, match=r"ffn_hidden_size"):
        detect_step_llm_config(weights, [({"ffn_hidden_size": 11008}, "my config")])
    with pytest.raises(CheckpointError, match=r"cannot be split into 40 query heads"):
        detect_step_llm_config(weights, [({"num_attention_heads": 40}, "my config")])
    with pytest.raises(CheckpointError, match=r"config.json says num_attention_heads = 48 but the given config"):
        detect_step_llm_config(weights, [({"num_attention_heads": 48}, "config.json"),
                                         ({"num_attention_heads": 24}, "the given config")])


def bert_large_key_list():
    """Synthetic key list of HunyuanCLIP's pytorch_model.bin (BERT-large, vocab 47020), as stored."""
    hidden, inner, vocab = 1024, 4096, 47020
    shapes = {"bert.embeddings.word_embeddings.weight": (vocab, hidden),
              "bert.embeddings.position_embeddings.weight": (512, hidden),
              "bert.embeddings.token_type_embeddings.weight": (2, hidden),
              "bert.embeddings.LayerNorm.weight": (hidden,), "bert.embeddings.LayerNorm.bias": (hidden,),
              "bert.pooler.dense.weight": (hidden, hidden), "bert.pooler.dense.bias": (hidden,),
              "cls.predictions.bias": (vocab,), "cls.predictions.transform.dense.weight": (hidden, hidden),
              "cls.predictions.transform.dense.bias": (hidden,),
              "cls.predictions.transform.LayerNorm.weight": (hidden,),
              "cls.predictions.transform.LayerNorm.bias": (hidden,), "cls.predictions.decoder.weight": (vocab, hidden)}
    for i in range(24):
        layer = f"bert.encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[layer + name + ".weight"], shapes[layer + name + ".bias"] = (hidden, hidden), (hidden,)
        shapes[layer + "intermediate.dense.weight"] = (inner, hidden)
        shapes[layer + "intermediate.dense.bias"] = (inner,)
        shapes[layer + "output.dense.weight"], shapes[layer + "output.dense.bias"] = (hidden, inner), (hidden,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[layer + norm + ".weight"], shapes[layer + norm + ".bias"] = (hidden,), (hidden,)
    info = {k: TensorInfo(s, torch.float32, "pytorch_model.bin", k) for k, s in shapes.items()}
    info["bert.embeddings.position_ids"] = TensorInfo((1, 512), torch.int64, "pytorch_model.bin",
                                                      "bert.embeddings.position_ids")
    return WeightFiles("hunyuan_clip/clip_text_encoder/pytorch_model.bin", info)


def test_full_size_hunyuan_clip_detected_from_bert_large_keys():
    weights = hunyuan_clip_view(bert_large_key_list())
    config_json = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
                   "vocab_size": 47020, "max_position_embeddings": 512, "type_vocab_size": 2,
                   "layer_norm_eps": 1e-12, "hidden_act": "gelu", "position_embedding_type": "absolute"}
    detected = detect_hunyuan_clip_config(weights, config_json, "config.json")
    assert detected == HunyuanClipConfig()
    model = build_on_meta(lambda: HunyuanClip(detected))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: weights.shape(k) for k in weights.keys()}
    with pytest.raises(CheckpointError, match=r"num_hidden_layers = 12 in config.json, but the tensors say 24"):
        detect_hunyuan_clip_config(weights, {**config_json, "num_hidden_layers": 12}, "config.json")


# --- numerics beyond the parity fixtures ------------------------------------------------------------------

def test_hunyuan_clip_matches_transformers_bert_with_padding(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                                     intermediate_size=80, max_position_embeddings=40, layer_norm_eps=1e-7)
    torch.manual_seed(0)
    reference = transformers.BertModel(config).eval()
    folder = tmp_path / "clip_text_encoder"
    folder.mkdir()
    torch.save({"bert." + k: v for k, v in reference.state_dict().items()}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(config.to_json_string())
    ids = token_ids(97, batch=3, length=20)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 3:] = 0
    model = load_hunyuan_clip(folder)
    assert model.config.num_heads == 3 and model.config.layer_norm_eps == 1e-7
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        assert (model(ids, mask) - expected).abs().max() < 1e-5


def test_step_llm_valid_positions_ignore_padding_and_batch_neighbours():
    model = load_step_llm(os.path.join(TINY_LLM, "model.safetensors"), dtype=torch.float32, config=tiny_llm_config())
    ids = token_ids(600)
    padded = ids.clone()
    padded[1, 7:] = 2
    with torch.no_grad():
        together, alone = model(padded), model(padded[1:])
    assert torch.allclose(together[1], alone[0], atol=1e-5)
    # causal: the padding changes nothing before it
    assert torch.allclose(together[1, :7], model(ids[1:, :7])[0], atol=1e-5)


# --- official layouts, single files, fp8 -------------------------------------------------------------------

def test_official_step_llm_folder_reads_its_config_json(tmp_path):
    folder = official_step_llm_folder(str(tmp_path))
    ids = token_ids(600)
    single = load_step_llm(os.path.join(TINY_LLM, "model.safetensors"), config=tiny_llm_config())
    from_folder = load_step_llm(folder)  # heads from step_llm/config.json
    assert from_folder.config == single.config
    with torch.no_grad():
        assert torch.equal(from_folder(ids), single(ids))
    with pytest.raises(CheckpointError, match="says num_layers = 2 but the given config says 3"):
        load_step_llm(folder, config={"num_layers": 3})


def test_step_llm_fp8_weight_storage(tmp_path):
    path = os.path.join(TINY_LLM, "model.safetensors")
    bf16 = load_step_llm(path, config=tiny_llm_config())
    fp8 = load_step_llm(path, config=tiny_llm_config(), weight_dtype=torch.float8_e4m3fn)
    layer = fp8.transformer.layers[0]
    assert layer.attention.wqkv.weight.dtype == torch.float8_e4m3fn
    assert layer.attention_norm.weight.dtype == torch.bfloat16
    assert fp8.tok_embeddings.word_embeddings.weight.dtype == torch.bfloat16
    ids = token_ids(600)
    with torch.no_grad():
        reference, approx = bf16(ids).float(), fp8(ids)
    assert approx.dtype == torch.bfloat16
    assert (approx.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_single_file_round_trip_carries_tokenizer_and_config(tmp_path):
    llm_folder = official_step_llm_folder(str(tmp_path))
    clip_folder = official_clip_folder(str(tmp_path))
    llm_file, clip_file = str(tmp_path / "step_llm.safetensors"), str(tmp_path / "hunyuan_clip.safetensors")
    assert single_files.convert(llm_folder, llm_file)[0] == "step_llm"
    assert single_files.convert(clip_folder, clip_file)[0] == "hunyuan_clip"
    prompts = ["一只小猫 a small cat", ""]
    for folder, file, loader, tokenizer_loader, vocab in [
            (llm_folder, llm_file, lambda p: load_step_llm(p, dtype=torch.float32), load_step_tokenizer, 600),
            (clip_folder, clip_file, load_hunyuan_clip, load_clip_tokenizer, 801)]:
        ids_folder, mask_folder = tokenizer_loader(folder)(prompts, max_length=20)
        ids_file, mask_file = tokenizer_loader(file)(prompts, max_length=20)
        assert torch.equal(ids_folder, ids_file) and torch.equal(mask_folder, mask_file)
        ids = token_ids(vocab)
        with torch.no_grad():
            if vocab == 600:
                assert torch.equal(loader(folder)(ids), loader(file)(ids))
            else:
                assert torch.equal(loader(folder)(ids, torch.ones_like(ids)), loader(file)(ids, torch.ones_like(ids)))
    assert EMBEDDED_FILES["config.json"] in load_file(llm_file)


def test_single_file_finds_a_tokenizer_beside_it_or_says_what_it_looked_for(tmp_path):
    path = str(tmp_path / "my_llm.safetensors")
    shutil.copy(os.path.join(TINY_LLM, "model.safetensors"), path)
    with pytest.raises(CheckpointError, match=r"no Step-LLM tokenizer found .*tokenizer.sentencepiece_model.*"
                                              r"my_llm\.model.*step1_chat_tokenizer\.model"):
        load_step_tokenizer(path)
    shutil.copy(STEP_TOKENIZER, tmp_path / "my_llm.model")
    assert load_step_tokenizer(path)(["a"], max_length=4)[0][0, 0] == 1
    clip_path = str(tmp_path / "my_clip.safetensors")
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 2)}, clip_path)
    with pytest.raises(CheckpointError, match=r"no HunyuanCLIP tokenizer found .*my_clip_tokenizer"):
        load_clip_tokenizer(clip_path)
    shutil.copytree(os.path.join(TINY_CLIP, "tokenizer"), tmp_path / "my_clip_tokenizer")
    assert load_clip_tokenizer(clip_path)(["a"], max_length=4)[0][0, 0] == 2


def test_clip_accepts_every_official_entry_point_and_unprefixed_keys(tmp_path):
    folder = official_clip_folder(str(tmp_path))
    reference = load_hunyuan_clip(folder)
    for path in (os.path.join(folder, "clip_text_encoder"),
                 os.path.join(folder, "clip_text_encoder", "pytorch_model.bin")):
        assert load_hunyuan_clip(path).config == reference.config
        assert load_clip_tokenizer(path).source == os.path.join(folder, "tokenizer")
    state = torch.load(os.path.join(folder, "clip_text_encoder", "pytorch_model.bin"), weights_only=True)
    plain = {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith("cls.")}
    with open(os.path.join(folder, "clip_text_encoder", "config.json"), "rb") as f:
        plain[EMBEDDED_FILES["config.json"]] = embed_file(f.read())  # 2 heads; without it: width / 64 = 1
    save_file(plain, str(tmp_path / "plain.safetensors"))
    ids = token_ids(801)
    with torch.no_grad():
        assert torch.equal(load_hunyuan_clip(str(tmp_path / "plain.safetensors"))(ids, torch.ones_like(ids)),
                           reference(ids, torch.ones_like(ids)))


# --- loader errors ---------------------------------------------------------------------------------------

def test_missing_shard_is_named(tmp_path):
    folder = official_step_llm_folder(str(tmp_path))
    os.remove(os.path.join(folder, "model-00002-of-00002.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 are missing .*model-00002-of-00002\.safetensors"):
        load_step_llm(folder)


def test_index_missing_an_entry_is_named(tmp_path):
    folder = official_step_llm_folder(str(tmp_path))
    index_path = os.path.join(folder, "model.safetensors.index.json")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    del index["weight_map"]["transformer.layers.1.ffn_norm.weight"]
    with open(index_path, "w", encoding="utf-8") as f:
        json.dump(index, f)
    with pytest.raises(CheckpointError, match=r"does not list: 'transformer\.layers\.1\.ffn_norm\.weight'"):
        load_step_llm(folder)


def test_truncated_file_reports_the_missing_bytes(tmp_path):
    path = str(tmp_path / "step_llm.safetensors")
    shutil.copy(os.path.join(TINY_LLM, "model.safetensors"), path)
    os.truncate(path, os.path.getsize(path) - 1000)
    with pytest.raises(CheckpointError, match=r"truncated.*1,000 bytes missing"):
        load_step_llm(path, config=tiny_llm_config())


def test_missing_tensor_is_named(tmp_path):
    state = load_file(os.path.join(TINY_LLM, "model.safetensors"))
    del state["transformer.layers.1.feed_forward.w1.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match=r"not a complete Step-LLM .*transformer\.layers\.1\.feed_forward\.w1"):
        load_step_llm(str(tmp_path / "partial.safetensors"), config=tiny_llm_config())


def test_wrong_dtype_is_refused(tmp_path):
    state = load_file(os.path.join(TINY_LLM, "model.safetensors"))
    key = "transformer.layers.0.attention.wo.weight"
    state[key] = state[key].to(torch.int16)
    save_file(state, str(tmp_path / "ints.safetensors"))
    with pytest.raises(CheckpointError, match=r"'transformer\.layers\.0\.attention\.wo\.weight' is stored as "
                                              r"torch\.int16"):
        load_step_llm(str(tmp_path / "ints.safetensors"), config=tiny_llm_config())


@pytest.mark.parametrize("slot", ["step_llm", "hunyuan_clip"])
def test_other_models_in_a_text_encoder_slot_are_named(tmp_path, slot):
    vae = str(tmp_path / "vae_v2.safetensors")
    save_file({"decoder.conv_in.conv.weight": torch.zeros(2, 2), "encoder.conv_in.weight": torch.zeros(2)}, vae)
    dit = str(tmp_path / "dit.safetensors")
    save_file({"transformer_blocks.0.attn1.wqkv.weight": torch.zeros(2, 2)}, dit)
    load = load_step_llm if slot == "step_llm" else load_hunyuan_clip
    with pytest.raises(CheckpointError, match=r"vae_v2\.safetensors is not a .* checkpoint: it looks like a "
                                              r"Step-Video Video-VAE"):
        load(vae)
    with pytest.raises(CheckpointError, match=r"looks like a Step-Video DiT"):
        load(dit)
    other = (os.path.join(TINY_CLIP, "clip_text_encoder") if slot == "step_llm"
             else os.path.join(TINY_LLM, "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"looks like a (HunyuanCLIP|Step-LLM) text encoder"):
        load(other)


def test_unknown_extra_clip_key_is_an_error(tmp_path):
    folder = official_clip_folder(str(tmp_path))
    bin_path = os.path.join(folder, "clip_text_encoder", "pytorch_model.bin")
    state = torch.load(bin_path, weights_only=True)
    state["bert.encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(2)
    torch.save(state, bin_path)
    with pytest.raises(CheckpointError, match=r"1 tensors are not part of it .*rotary"):
        load_hunyuan_clip(folder)
