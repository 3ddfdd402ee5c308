"""Session setup for the Step-Video integration tests: tiny checkpoints in the OFFICIAL folder layout under
models/stepvideo/ (named as the README tells users: stepvideo-t2v, stepvideo-t2v-turbo, stepvideo-ti2v), a
deliberately damaged download, input images/clips/latents, and the edits that make the shipped
workflows small enough for a CPU (sizes, frames, steps — nothing else)."""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load, save_file

from harness import REPO, tiny_checkpoints
from stepvideo_pack.media.mp4 import write_mp4
from stepvideo_pack.model_loaders.dit_loader import KNOWN_LATENTS_KEY, detect_dit_config, dit_weights
from stepvideo_pack.model_loaders.official_layout import save_transformer
from stepvideo_pack.networks.dit import DiTConfig
from harness.workflow_specs import EMBEDDED, INPUT_FILES, T2V, TI2V, TURBO

WIDTH, HEIGHT = 96, 64
EMBEDDED_MERGED = "stepvideo-tiny-lora-merged"  # its DiT with LORA merged into the weights
LORA_RANK, LORA_ALPHA = 4, 2.0
LORA_FILES = {"comfy": "stepvideo_tiny_comfy.safetensors", "diffusers": "stepvideo_tiny_diffusers.safetensors",
              "kohya": "stepvideo_tiny_kohya.safetensors"}
LORA_TARGETS = ("transformer_blocks.{}.attn1.wqkv", "transformer_blocks.{}.attn2.wq", "transformer_blocks.{}.ff.net.2")
BROKEN = "stepvideo-broken"
CLEAN_CONTEXT = "stepvideo-t2v-clean-context"  # the t2v DiT, its checkpoint marked as trained with clean known latents
MISSING_SHARD = "diffusion_pytorch_model-00002-of-00002.safetensors"


def write_official_folder(root, ti2v=False):
    config = DiTConfig(**{**tiny_checkpoints.TINY_DIT.__dict__, "image_condition": ti2v})
    tiny_checkpoints.write_transformer(root, config=config, seed=3 if ti2v else 0)
    tiny_checkpoints.write_vae(root)
    tiny_checkpoints.write_step_llm(root)
    tiny_checkpoints.write_hunyuan_clip(root)
    return root


@pytest.fixture(scope="session")
def stepvideo_models(host_models_dir):
    """{name: path} of the official-layout folders in models/stepvideo/ of the session server."""
    root = os.path.join(host_models_dir, "stepvideo")
    folders = {T2V: write_official_folder(os.path.join(root, T2V)),
               TI2V: write_official_folder(os.path.join(root, TI2V), ti2v=True)}
    folders[TURBO] = shutil.copytree(folders[T2V], os.path.join(root, TURBO))
    broken = shutil.copytree(folders[T2V], os.path.join(root, BROKEN))
    os.remove(os.path.join(broken, "transformer", MISSING_SHARD))
    folders[BROKEN] = broken
    clean = shutil.copytree(folders[T2V], os.path.join(root, CLEAN_CONTEXT))
    shutil.rmtree(os.path.join(clean, "transformer"))
    tiny_checkpoints.write_transformer(clean, metadata={KNOWN_LATENTS_KEY: "clean"})
    folders[CLEAN_CONTEXT] = clean
    return folders


def lora_pairs(state, seed=0):
    """{module name: (down (r, in), up (out, r))} of a random rank-LORA_RANK LoRA on LORA_TARGETS of every block."""
    gen = torch.Generator().manual_seed(seed)
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("transformer_blocks."))
    pairs = {}
    for block in range(blocks):
        for target in LORA_TARGETS:
            name = target.format(block)
            out_features, in_features = state[name + ".weight"].shape
            pairs[name] = (torch.randn(LORA_RANK, in_features, generator=gen) * 0.2,
                           torch.randn(out_features, LORA_RANK, generator=gen) * 0.2)
    return pairs


def lora_file(pairs, style):
    """The same LoRA in a key format people produce: ComfyUI's, diffusers/PEFT's or kohya's."""
    tensors = {}
    for name, (down, up) in pairs.items():
        if style == "diffusers":  # PEFT: lora_A = down, lora_B = up, no alpha (scale 1): fold alpha / rank into B
            tensors[f"transformer.{name}.lora_A.weight"] = down
            tensors[f"transformer.{name}.lora_B.weight"] = up * (LORA_ALPHA / LORA_RANK)
            continue
        prefix = f"diffusion_model.{name}" if style == "comfy" else "lora_unet_" + name.replace(".", "_")
        tensors[f"{prefix}.lora_down.weight"] = down
        tensors[f"{prefix}.lora_up.weight"] = up
        tensors[f"{prefix}.alpha"] = torch.tensor(LORA_ALPHA)
    return tensors


@pytest.fixture(scope="session")
def embedded_models(comfy_host_unstarted):
    """models/stepvideo/stepvideo-tiny (the embedded model), one LoRA for its DiT in three key formats in
    models/loras/, and models/stepvideo/stepvideo-tiny-lora-merged: the same model with that LoRA merged at
    strength 1 (W + alpha / rank * up @ down, in float32). Returns {"lora_files": LORA_FILES}."""
    host_models_dir = comfy_host_unstarted.models_dir
    root = os.path.join(host_models_dir, "stepvideo")
    source = os.path.join(REPO, "weights", EMBEDDED)
    comfy_host_unstarted.offer_embedded_model()  # models/stepvideo/stepvideo-tiny, as `comfy_host.py serve` does
    weights = dit_weights(os.path.join(source, "transformer"))
    state = {k: weights.load(k).float() for k in weights.keys()}
    pairs = lora_pairs(state)
    loras = os.path.join(host_models_dir, "loras")
    os.makedirs(loras, exist_ok=True)
    for style, name in LORA_FILES.items():
        save_file(lora_file(pairs, style), os.path.join(loras, name))
    for name, (down, up) in pairs.items():
        state[name + ".weight"] = state[name + ".weight"] + (LORA_ALPHA / LORA_RANK) * up @ down
    merged = os.path.join(root, EMBEDDED_MERGED)
    save_transformer(state, merged, detect_dit_config(weights), metadata=weights.metadata())
    for part in ("vae", "step_llm", "hunyuan_clip"):
        os.symlink(os.path.join(source, part), os.path.join(merged, part), target_is_directory=True)
    return {"lora_files": LORA_FILES}


def _frames(count, hue_shift=0.0):
    """A moving bright square on a dark background: (count, HEIGHT, WIDTH, 3) floats."""
    frames = np.zeros((count, HEIGHT, WIDTH, 3), np.float32)
    frames[..., 2] = 0.25
    for i in range(count):
        x = 8 + (i * 2) % (WIDTH - 24)
        frames[i, 20:36, x:x + 16] = (0.9, 0.2 + hue_shift, 0.1)
    return frames


@pytest.fixture(scope="session")
def stepvideo_inputs(host_input_dir):
    """The input files the shipped workflows name (INPUT_FILES), written into input/."""
    first, last = _frames(1)[0], _frames(30)[-1]
    for name, frame in ((INPUT_FILES["image"], first), (INPUT_FILES["last_image"], last)):
        Image.fromarray((frame * 255).astype(np.uint8)).save(os.path.join(host_input_dir, name))
    write_mp4(os.path.join(host_input_dir, INPUT_FILES["video"]), _frames(34), fps=25)
    write_mp4(os.path.join(host_input_dir, INPUT_FILES["video_b"]), _frames(34, hue_shift=0.5), fps=25)
    latent = torch.randn(1, tiny_checkpoints.TINY_LATENT_CHANNELS, 3, HEIGHT // 16, WIDTH // 16,
                         generator=torch.Generator().manual_seed(0))
    save_file({"latent_tensor": latent, "latent_format_version_0": torch.tensor([])},
              os.path.join(host_input_dir, INPUT_FILES["latent"]))
    return {"clip_frames": 34, "latent_frames": 3}


# node type -> the inputs to shrink for a CPU run of the tiny models (a value, or old value -> new value)
SMALL = {
    "StepVideoEmptyLatent": {"width": WIDTH, "height": HEIGHT, "frames": lambda frames: min(frames, 17)},
    "StepVideoImageToVideo": {"width": WIDTH, "height": HEIGHT, "frames": 17},
    "StepVideoKeyframes": {"width": WIDTH, "height": HEIGHT, "frames": 35},
    "StepVideoExtendVideo": {"new_frames": 17},
    "StepVideoBridgeClips": {"new_frames": 17},
    "StepVideoLongVideo": {"width": WIDTH, "height": HEIGHT, "total_frames": 68, "window_frames": 34, "steps": 2},
    "StepVideoSampler": {"steps": 3},
    "KSampler": {"steps": 3},
    "StepVideoVAEDecode": {"tile_px": 64, "overlap_px": 32},
}


def shrink(prompt):
    """A copy of an API prompt with sizes/frames/steps reduced for the tiny models (widget values only)."""
    small = {}
    for node_id, node in prompt.items():
        inputs = dict(node["inputs"])
        for name, value in SMALL.get(node["class_type"], {}).items():
            if name in inputs and not isinstance(inputs[name], list):
                inputs[name] = value(inputs[name]) if callable(value) else value
        small[node_id] = {**node, "inputs": inputs}
    return small


def saved_latent(client, entry, node_id=None):
    """The latent tensor (B, C, T, h, w) of the one .latent file a history entry saved (of ``node_id``)."""
    files = [f for f in client.output_files(entry, node_id) if f["filename"].endswith(".latent")]
    assert len(files) == 1, entry["outputs"]
    return load(client.fetch_output(files[0]))["latent_tensor"]


def text_to_latent_graph(dit, step_llm, hunyuan_clip, size=(WIDTH, HEIGHT, 17), steps=3, cfg=3.0, shift=5.0, seed=5,
                         text="a red ball rolls", negative="", weight_dtype="default (bf16)", attention="sdpa",
                         prefix="StepVideo/latent"):
    """The API prompt the integration tests build on: load, encode ``text``, sample ``size`` = (width, height,
    frames) with StepVideo Sampler, save the LATENT. Node ids: "1" DiT loader (MODEL), "2" text encoder
    loader, "3" encode (positive, negative), "4" empty latent, "5" sampler, "6" SaveLatent."""
    width, height, frames = size
    return {
        "1": {"class_type": "StepVideoDiTLoader", "inputs": {"model_name": dit, "weight_dtype": weight_dtype,
                                                             "attention": attention, "shift": shift}},
        "2": {"class_type": "StepVideoTextEncoderLoader", "inputs": {
            "step_llm": step_llm, "hunyuan_clip": hunyuan_clip, "device": "cpu", "offload": False,
            "llm_weight_dtype": "bf16", "cache": True}},
        "3": {"class_type": "StepVideoTextEncode", "inputs": {"text_encoder": ["2", 0], "prompt": text,
                                                              "negative_prompt": negative, "magic": "none"}},
        "4": {"class_type": "StepVideoEmptyLatent", "inputs": {"width": width, "height": height, "frames": frames,
                                                               "batch_size": 1}},
        "5": {"class_type": "StepVideoSampler", "inputs": {
            "model": ["1", 0], "positive": ["3", 0], "negative": ["3", 1], "latent": ["4", 0], "seed": seed,
            "steps": steps, "cfg": cfg, "shift": shift, "denoise": 1.0, "cfg_stop_sigma": 0.0}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": prefix}},
    }
