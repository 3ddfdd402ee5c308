"""Writing state dicts in the OFFICIAL Step-Video file layouts (for converted, trained or test weights).

Layout of an official download (one folder per model under ComfyUI/models/stepvideo/):

    transformer/config.json, diffusion_pytorch_model-0000K-of-0000N.safetensors,
                diffusion_pytorch_model.safetensors.index.json
    vae/vae_v2.safetensors                       (file key decoder.conv_out.* )
    step_llm/config.json, model-0000K-of-0000N.safetensors, model.safetensors.index.json,
             step1_chat_tokenizer.model
    hunyuan_clip/clip_text_encoder/{config.json, pytorch_model.bin}, hunyuan_clip/tokenizer/...

The loaders read exactly these, so weights written here load through the user's code path.
"""

import json
import os

import torch
from safetensors.torch import save_file

from .vae_loader import V2_FILE, module_to_file_key

# The official file and folder names (one home; the loaders and the folder discovery read them from here).
TRANSFORMER_DIR = "transformer"
TRANSFORMER_STEM = "diffusion_pytorch_model"  # shards STEM-0000K-of-0000N.safetensors + STEM.safetensors.index.json
TRANSFORMER_INDEX = TRANSFORMER_STEM + ".safetensors.index.json"
VAE_FILE = os.path.join("vae", V2_FILE)
STEP_LLM_DIR = "step_llm"
STEP_TOKENIZER_FILE = "step1_chat_tokenizer.model"
CLIP_DIR = "hunyuan_clip"
CLIP_ENCODER_DIR, CLIP_TOKENIZER_DIR = "clip_text_encoder", "tokenizer"


def save_sharded(state_dict, folder, stem, shards=1, config=None, metadata=None):
    """Save ``state_dict`` as ``stem-0000K-of-0000N.safetensors`` shards + ``stem.safetensors.index.json``.

    Keys are spread over the shards in order, balanced by bytes. ``config`` (a dict) is written to
    ``config.json`` beside them when given. Returns the folder.
    """
    os.makedirs(folder, exist_ok=True)
    keys = list(state_dict)
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    budget = total / shards
    groups, current, size = [], [], 0
    for key in keys:
        nbytes = state_dict[key].numel() * state_dict[key].element_size()
        if current and size + nbytes > budget and len(groups) < shards - 1:
            groups.append(current)
            current, size = [], 0
        current.append(key)
        size += nbytes
    groups.append(current)
    weight_map = {}
    for index, group in enumerate(groups, start=1):
        name = f"{stem}-{index:05d}-of-{len(groups):05d}.safetensors"
        save_file({k: state_dict[k].contiguous() for k in group}, os.path.join(folder, name), metadata=metadata)
        weight_map.update({k: name for k in group})
    with open(os.path.join(folder, f"{stem}.safetensors.index.json"), "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    if config is not None:
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=1)
    return folder


def dit_hub_config(config):
    """The diffusers-style ``transformer/config.json`` for a DiTConfig (official field names)."""
    return {
        "_class_name": "StepVideoModel", "num_attention_heads": config.num_heads,
        "attention_head_dim": config.head_dim, "in_channels": config.in_channels,
        "out_channels": config.out_channels, "num_layers": config.num_layers,
        "caption_channels": list(config.caption_channels), "patch_size": config.patch_size,
        "use_additional_conditions": config.image_condition, "attention_type": "torch",
        "norm_elementwise_affine": False, "norm_eps": 1e-6, "norm_type": "ada_norm_single", "dropout": 0.0,
    }


def save_transformer(state_dict, root, config, shards=2, metadata=None):
    """The official ``transformer/`` folder under ``root`` (bf16 as released unless the tensors say otherwise);
    ``metadata``: safetensors string metadata for every shard (e.g. ``dit_loader.KNOWN_LATENTS_KEY``)."""
    return save_sharded(state_dict, os.path.join(root, TRANSFORMER_DIR), TRANSFORMER_STEM, shards,
                        config=dit_hub_config(config), metadata=metadata)


def save_vae(module_state_dict, root):
    """``vae/vae_v2.safetensors`` under ``root``, with the official file key names."""
    path = os.path.join(root, VAE_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({module_to_file_key(k): v.contiguous() for k, v in module_state_dict.items()}, path)
    return path


def save_clip_bin(state_dict, folder, config):
    """``clip_text_encoder/pytorch_model.bin`` (``bert.``-prefixed keys, torch.save) + ``config.json``."""
    os.makedirs(folder, exist_ok=True)
    torch.save({("bert." + k if not k.startswith("bert.") else k): v.contiguous() for k, v in state_dict.items()},
               os.path.join(folder, "pytorch_model.bin"))
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    return folder
