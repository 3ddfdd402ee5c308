"""Text-encoder loader and prompt encoding -> standard CONDITIONING."""

import os

import torch

import comfy.model_management
import folder_paths

from ..model_loaders.conditioning import to_conditioning
from ..model_loaders.embedding_cache import DEFAULT_LIMIT_MB
from ..model_loaders.text_encoding import StepVideoTextEncoder, compose_prompts
from .host import CATEGORY, Progress, model_choices, model_path

TEXT_ENCODER_TYPE = "STEPVIDEO_TEXT_ENCODER"
DEVICES = ("default", "cpu", "gpu")
LLM_WEIGHT_DTYPES = {"bf16": torch.bfloat16, "fp8_e4m3fn": torch.float8_e4m3fn}
STREAMING_BUDGET = 2 * 1024 ** 3  # device bytes for offloaded encoders (one layer + activations)
MAGIC_CHOICES = {"T2V official": ("t2v", True), "TI2V official": ("ti2v", True), "none": ("t2v", False)}


def embedding_cache_dir():
    return os.path.join(folder_paths.get_user_directory(), "stepvideo", "embeddings")


def _files_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


class StepVideoTextEncoderLoader:
    DISPLAY_NAME = "StepVideo Text Encoder Loader"
    DESCRIPTION = ("Step-LLM + HunyuanCLIP (the bilingual encoders). Nothing is loaded here: the encoders load when "
                   "a prompt is not in the embedding cache and are freed right after encoding, so the 20B Step-LLM "
                   "never sits in memory during sampling. Lists official folders in models/stepvideo/ and single "
                   "files in models/text_encoders/.")
    CATEGORY = CATEGORY + "/loaders"
    RETURN_TYPES = (TEXT_ENCODER_TYPE,)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "step_llm": (model_choices("step_llm", "text_encoders"),
                         {"tooltip": "Official folder (its step_llm/) or a single-file Step-LLM (.safetensors, or a "
                                     "pre-quantized .gguf / scaled-fp8 file from scripts/quantize_stepvideo.py)."}),
            "hunyuan_clip": (model_choices("hunyuan_clip", "text_encoders"),
                             {"tooltip": "Official folder (its hunyuan_clip/) or a single-file HunyuanCLIP."}),
            "device": (list(DEVICES), {"default": "default",
                       "tooltip": "Where the encoders run. default = ComfyUI's text-encoder device; cpu works "
                                  "everywhere (slow for the 20B Step-LLM); gpu = the main GPU."}),
            "offload": ("BOOLEAN", {"default": True,
                        "tooltip": "Keep weights in CPU memory and stream each layer to the GPU as it runs (little "
                                   "VRAM). bf16 or pre-quantized weights stay memory-mapped, about one layer in RAM "
                                   "at a time; fp8 converted here needs ~20 GB RAM."}),
            "llm_weight_dtype": (list(LLM_WEIGHT_DTYPES), {"default": "bf16",
                                 "tooltip": "fp8 halves the Step-LLM's memory; computes in bf16. Ignored for "
                                            "pre-quantized files."}),
            "cache": ("BOOLEAN", {"default": True,
                      "tooltip": "Disk cache of embeddings (ComfyUI/user/stepvideo/embeddings): a repeated prompt "
                                 "never loads the encoders."}),
        }, "optional": {
            "cache_limit_mb": ("INT", {"default": DEFAULT_LIMIT_MB, "min": 1, "max": 1 << 20,
                               "tooltip": "Size limit of the embedding cache folder; beyond it the least recently "
                                          "used prompts are deleted (about 4 MB per prompt with the real encoders)."}),
        }}

    def load(self, step_llm, hunyuan_clip, device, offload, llm_weight_dtype, cache, cache_limit_mb=DEFAULT_LIMIT_MB):
        llm_path = model_path("step_llm", "text_encoders", step_llm, "StepVideo Text Encoder Loader (step_llm)")
        clip_path = model_path("hunyuan_clip", "text_encoders", hunyuan_clip,
                               "StepVideo Text Encoder Loader (hunyuan_clip)")
        if device == "default":
            run_on = comfy.model_management.text_encoder_device()
        elif device == "gpu":
            run_on = comfy.model_management.get_torch_device()
        else:
            run_on = torch.device("cpu")
        encoder = StepVideoTextEncoder(llm_path, clip_path, cache_dir=embedding_cache_dir() if cache else None,
                                       device=run_on, offload=offload and run_on.type != "cpu",
                                       llm_weight_dtype=LLM_WEIGHT_DTYPES[llm_weight_dtype],
                                       cache_limit_mb=cache_limit_mb)
        return (encoder,)


class StepVideoTextEncode:
    DISPLAY_NAME = "StepVideo Text Encode"
    DESCRIPTION = ("Encodes a prompt and a negative prompt (Chinese and English both work) into positive and "
                   "negative CONDITIONING for the Step-Video DiT.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": (TEXT_ENCODER_TYPE,),
            "prompt": ("STRING", {"multiline": True, "default": "",
                                  "tooltip": "What the video shows. Chinese or English."}),
            "negative_prompt": ("STRING", {"multiline": True, "default": "",
                                           "tooltip": "What to avoid; may be empty."}),
            "magic": (list(MAGIC_CHOICES), {"default": "T2V official",
                      "tooltip": "Append the official quality suffixes (Chinese) to the prompt and the negative "
                                 "prompt, as the official pipeline does. TI2V official for image-to-video weights."}),
        }}

    def encode(self, text_encoder, prompt, negative_prompt, magic):
        variant, use_magic = MAGIC_CHOICES[magic]
        texts = compose_prompts(prompt, negative_prompt, variant=variant, use_magic=use_magic)
        if text_encoder.device.type != "cpu":  # make room next to models ComfyUI keeps on the GPU
            streamed = text_encoder.weights_device.type == "cpu"
            budget = STREAMING_BUDGET if streamed else sum(
                _files_bytes(p) for p in (text_encoder.step_llm_path, text_encoder.clip_path))
            comfy.model_management.free_memory(budget, text_encoder.device)
        positive, negative = text_encoder.encode(texts, on_progress=Progress(1)).split()
        return (to_conditioning(positive), to_conditioning(negative))

