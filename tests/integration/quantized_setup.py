"""Session setup for the pre-quantized-file tests: the tiny T2V DiT and Step-LLM converted with the
pack's converter into the standard model folders, a LoRA for the DiT, and the LoRA merged into the
dequantized weights as a plain float32 file (what the quantized model + LoRA must compute)."""

import os

import pytest
import torch
from safetensors.torch import save_file

from stepvideo_pack.model_loaders.dit_loader import dit_weights
from stepvideo_pack.model_loaders.quantized_files import PackedWeight
from stepvideo_pack.model_loaders.quantized_writer import convert
from stepvideo_pack.networks.quant_formats import dequantize
from harness.workflow_specs import T2V

GGUF_DIT = "stepvideo_tiny_Q4_K.gguf"            # models/unet/
FP8_DIT = "stepvideo_tiny_fp8_scaled.safetensors"  # models/diffusion_models/
LORA_BASE = "stepvideo_tiny_Q8_0.gguf"           # models/diffusion_models/
MERGED = "stepvideo_tiny_Q8_0_lora_merged_fp32.safetensors"
GGUF_LLM = "step_llm_tiny_Q4_K.gguf"             # models/text_encoders/
LORA = "stepvideo_tiny_lora.safetensors"          # models/loras/
LORA_LAYERS = ("transformer_blocks.0.attn1.wqkv", "transformer_blocks.1.ff.net.0.proj")
LORA_RANK = 4


def lora_tensors(weights, seed=7):
    """{LoRA file key: tensor} (ComfyUI's lora_unet_* naming, alpha = rank) and {model key: delta (out, in)}."""
    gen = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for layer in LORA_LAYERS:
        out_features, in_features = weights.shape(layer + ".weight")
        up = torch.randn(out_features, LORA_RANK, generator=gen) * 0.2
        down = torch.randn(LORA_RANK, in_features, generator=gen) * 0.2
        name = "lora_unet_" + layer.replace(".", "_")
        tensors.update({f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down,
                        f"{name}.alpha": torch.tensor(float(LORA_RANK))})
        deltas[layer + ".weight"] = up @ down
    return tensors, deltas


def merged_state(path, deltas):
    """The quantized DiT at ``path`` dequantized to float32, with ``deltas`` added."""
    weights = dit_weights(path)
    state = {}
    for key in weights.keys():
        value = weights.load(key)
        if isinstance(value, PackedWeight):
            value = dequantize(value.data, value.format, value.shape, torch.float32, value.scale)
        state[key] = value.float() + deltas.get(key, 0)
    return state


@pytest.fixture(scope="session")
def quantized_models(host_models_dir, stepvideo_models):
    """{name: path} of the converted files in the standard folders of the session server."""
    folders = {name: os.path.join(host_models_dir, name) for name in
               ("unet", "diffusion_models", "text_encoders", "loras")}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    official = stepvideo_models[T2V]
    transformer = os.path.join(official, "transformer")
    paths = {GGUF_DIT: os.path.join(folders["unet"], GGUF_DIT),
             FP8_DIT: os.path.join(folders["diffusion_models"], FP8_DIT),
             LORA_BASE: os.path.join(folders["diffusion_models"], LORA_BASE),
             GGUF_LLM: os.path.join(folders["text_encoders"], GGUF_LLM)}
    convert(transformer, paths[GGUF_DIT], "Q4_K")
    convert(transformer, paths[FP8_DIT], "fp8_scaled")
    convert(transformer, paths[LORA_BASE], "Q8_0")
    convert(os.path.join(official, "step_llm"), paths[GGUF_LLM], "Q4_K")
    tensors, deltas = lora_tensors(dit_weights(paths[LORA_BASE]))
    paths[LORA] = os.path.join(folders["loras"], LORA)
    save_file(tensors, paths[LORA])
    paths[MERGED] = os.path.join(folders["diffusion_models"], MERGED)
    save_file(merged_state(paths[LORA_BASE], deltas), paths[MERGED])
    return paths
