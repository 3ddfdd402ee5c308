"""Loader nodes: the DiT as a standard MODEL (the VAE and text-encoder loaders live beside their types)."""

from ..model_loaders import discovery
from ..model_loaders.comfy_model import WEIGHT_DTYPES, load_stepvideo_model
from ..model_loaders.vae_loader import load_vae
from ..networks.attention import BACKENDS, HOST
from ..samplers.flow_schedule import DEFAULT_SHIFT
from .host import CATEGORY, STEPVIDEO_FOLDER, folders, model_choices, model_path, preview_maps, require_finite


def preview_map_for(model_name):
    """f(latent channels) -> the live-preview map of a DiT: fitted to the VAE of the same official folder, else
    to the VAE a StepVideo VAE Loader opened last for this channel count (None before any)."""
    sibling = discovery.official_parts(folders(STEPVIDEO_FOLDER), "vae").get(model_name)

    def fitted(channels):
        maps = preview_maps()
        path = sibling or maps.latest(channels)
        return maps.for_vae(path, load_vae) if path else None

    return fitted


class StepVideoDiTLoader:
    DISPLAY_NAME = "StepVideo DiT Loader"
    DESCRIPTION = ("Loads the Step-Video DiT (T2V, TI2V or Turbo) as a standard MODEL: KSampler, "
                   "SamplerCustomAdvanced, ModelSamplingSD3 and ComfyUI's automatic offloading work with it. "
                   "Lists official download folders in models/stepvideo/ (their transformer/) and single files "
                   "in models/diffusion_models/ and models/unet/, pre-quantized ones (GGUF Q8_0/Q6_K/Q5_K/Q4_K, "
                   "scaled fp8) included: those are memory-mapped and dequantized layer by layer.")
    CATEGORY = CATEGORY + "/loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (model_choices("transformer", "diffusion_models"),
                           {"tooltip": "An official download folder (uses its transformer/) or a single-file DiT "
                                       "(.safetensors, or a pre-quantized .gguf / scaled-fp8 file)."}),
            "weight_dtype": (list(WEIGHT_DTYPES), {"default": "default (bf16)",
                             "tooltip": "Storage of the matmul weights. fp8 halves memory (30 GB instead of 60 GB) "
                                        "and computes in bf16. Ignored for pre-quantized files (they keep their "
                                        "format; compute bf16 on GPU, fp32 on CPU)."}),
            "attention": (list(BACKENDS), {"default": HOST,
                          "tooltip": "comfy = ComfyUI's own attention (its --use-sage-attention / "
                                     "--use-flash-attention / --use-pytorch-cross-attention flags and other nodes' "
                                     "attention patches apply). sdpa = PyTorch SDPA as the official code runs it. "
                                     "flash_attn / sage = those kernels for self-attention when importable on a CUDA "
                                     "GPU, otherwise SDPA with a one-line notice."}),
            "shift": ("FLOAT", {"default": DEFAULT_SHIFT, "min": 1.0, "max": 100.0, "step": 0.1,
                                "tooltip": "Flow shift for ComfyUI's schedulers (KSampler): 13 base, 17 Turbo."}),
        }}

    def load(self, model_name, weight_dtype, attention, shift):
        require_finite("StepVideo DiT Loader", shift=shift)
        path = model_path("transformer", "diffusion_models", model_name, "StepVideo DiT Loader")
        return (load_stepvideo_model(path, weight_dtype=weight_dtype, attention=attention, shift=shift,
                                     preview_map=preview_map_for(model_name)),)
