"""ComfyUI glue: the Step-Video DiT as a standard MODEL (BaseModel + ModelPatcher, flow sampling).

Importing this module needs a ComfyUI host (``comfy``). Everything host-specific about the DiT is
here: the latent format, the model config (flow sampling, shift 13 by default), the conversion of
ComfyUI's call (x (B, C, T, H, W), timestep = sigma * 1000, context, extra conds) to the official
DiT call, and the conditioning keys our text encoder writes:

    CONDITIONING entry = [llm_states (B, 320, D_llm), {"clip_states": (B, 77, D_clip),
                                                     "context_mask": (B, 77 + 320)}]

TI2V weights take the image latent as ``concat_latent_image`` (B, 64, T_img, h, w) and a
``motion_score`` float in the conditioning dict (the image-to-video node sets both).
"""

import logging

import torch

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models_base
import comfy.utils

from ..networks.attention import resolve_backend
from ..networks.dit import StepVideoDiT
from ..samplers.flow_schedule import DEFAULT_SHIFT, comfy_velocity, timestep_from_sigma
from .comfy_quantized import QuantizedModelPatcher, QuantizedOps
from .dit_loader import WHAT, detect_dit_config, dit_weights, trained_clean_known
from .materialize import FP8_DTYPES, load_into
from .memory import dit_activation_bytes
from .quantized_files import is_quantized

log = logging.getLogger(__name__)

WEIGHT_DTYPES = {
    "default (bf16)": torch.bfloat16,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
DEFAULT_MOTION_SCORE = 5.0
CHUNK_OPTION = "stepvideo_chunk_tokens"  # transformer_options key set by the memory-options node


class StepVideoLatentFormat(comfy.latent_formats.LatentFormat):
    """Video latents, 16x spatial, 17 frames -> 3 latents per chunk; no scale or shift. 64 channels for
    the released model; the model config sets the channel count of the loaded DiT (small trained
    models may use fewer), and ComfyUI resizes empty latents to it."""

    latent_channels = 64
    latent_dimensions = 3
    scale_factor = 1.0


class StepVideoModelConfig(comfy.supported_models_base.BASE):
    unet_config = {}
    unet_extra_config = {}
    sampling_settings = {"shift": DEFAULT_SHIFT, "multiplier": 1000}
    latent_format = StepVideoLatentFormat
    supported_inference_dtypes = [torch.bfloat16, torch.float32]
    memory_usage_factor = 1.0

    def __init__(self, dit_config, shift=DEFAULT_SHIFT):
        super().__init__({"config": dit_config})
        self.sampling_settings["shift"] = shift
        self.latent_format.latent_channels = dit_config.out_channels


class ComfyStepVideoDiT(StepVideoDiT):
    """StepVideoDiT called the ComfyUI way; the only place the sigma/velocity conventions meet."""

    def __init__(self, config, dtype=None, device=None, operations=None, **_):
        super().__init__(config, operations=operations, device=device)
        self.dtype = dtype

    def forward(self, x, timestep, context=None, clip_states=None, context_mask=None, motion_score=None,
                transformer_options=None, control=None, **kwargs):
        """x (B, C[+C_cond], T, H, W); timestep = sigma * 1000 (B,) -> (noise - data) (B, C, T, H, W)."""
        channels = self.config.in_channels
        latents = x[:, :channels].movedim(1, 2)
        condition = x[:, channels:].movedim(1, 2) if self.config.image_condition else None
        sigma = timestep.float() / 1000.0
        velocity = super().forward(
            latents, timestep_from_sigma(sigma), context, clip_states, context_mask,
            condition_hidden_states=condition,
            motion_score=DEFAULT_MOTION_SCORE if motion_score is None else float(motion_score),
            chunk_tokens=(transformer_options or {}).get(CHUNK_OPTION))
        return comfy_velocity(velocity).movedim(2, 1)


class StepVideoBaseModel(comfy.model_base.BaseModel):
    def __init__(self, model_config, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.FLOW, device=device,
                         unet_model=ComfyStepVideoDiT)

    def concat_cond(self, **kwargs):
        """TI2V: the image-condition latents (B, 64, T, h, w), zeros past the given frames; else None."""
        if not self.diffusion_model.config.image_condition:
            return None
        noise = kwargs["noise"]
        image = kwargs.get("concat_latent_image")
        if image is None:
            return torch.zeros_like(noise)
        image = image.to(device=noise.device, dtype=noise.dtype)
        frames = min(image.shape[2], noise.shape[2])
        condition = torch.zeros_like(noise)
        condition[:, :, :frames] = comfy.utils.resize_to_batch_size(image[:, :, :frames], noise.shape[0])
        return condition

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        if kwargs.get("cross_attn") is not None:
            out["c_crossattn"] = comfy.conds.CONDRegular(kwargs["cross_attn"])
        for key in ("clip_states", "context_mask"):
            if kwargs.get(key) is not None:
                out[key] = comfy.conds.CONDRegular(kwargs[key])
        if self.diffusion_model.config.image_condition:
            out["motion_score"] = comfy.conds.CONDConstant(float(kwargs.get("motion_score", DEFAULT_MOTION_SCORE)))
        return out

    def memory_required(self, input_shape, cond_shapes={}):
        """Activation bytes of one forward over ``input_shape`` (B, C, T, H, W), from the memory model."""
        batch, _, frames, height, width = input_shape
        dtype = self.manual_cast_dtype or self.get_dtype()
        return dit_activation_bytes(self.diffusion_model.config, batch, frames, height, width,
                                    dtype=dtype, chunk_tokens=self.diffusion_model.chunk_tokens)


def load_stepvideo_model(path, weight_dtype="default (bf16)", attention="sdpa", shift=DEFAULT_SHIFT,
                         chunk_tokens=None):
    """A ModelPatcher around the DiT at ``path`` (official transformer/ folder, index or single file).

    The DiT is built on the meta device and filled tensor by tensor (one copy in RAM); weights are
    stored as ``weight_dtype`` (fp8 runs in bf16 through ComfyUI's casting layers) and ComfyUI's model
    management loads/offloads them like any native model.
    """
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"unknown weight dtype {weight_dtype!r}; choose one of {', '.join(WEIGHT_DTYPES)}")
    storage = WEIGHT_DTYPES[weight_dtype]
    weights = dit_weights(path)
    dit_config = detect_dit_config(weights)
    model_config = StepVideoModelConfig(dit_config, shift=shift)
    load_device = comfy.model_management.get_torch_device()
    quantized = is_quantized(weights)  # pre-quantized file: kept as stored, memory-mapped (comfy_quantized.py)
    if quantized:
        storage, model_config.custom_operations = torch.bfloat16, QuantizedOps
    compute = torch.bfloat16 if storage in FP8_DTYPES else storage
    manual_cast = comfy.model_management.unet_manual_cast(storage, load_device, model_config.supported_inference_dtypes)
    if storage in FP8_DTYPES and manual_cast is None:
        manual_cast = compute
    model_config.set_inference_dtype(storage, manual_cast)
    model = StepVideoBaseModel(model_config, device="meta")
    load_into(model.diffusion_model, weights, WHAT, weight_dtype=None if quantized else storage,
              compute_dtype=None if quantized else manual_cast or compute,
              device=comfy.model_management.unet_offload_device())
    model.device = comfy.model_management.unet_offload_device()
    backend, message = resolve_backend(attention)
    if message:
        log.warning(message)
    model.diffusion_model.attention_backend = backend
    model.diffusion_model.chunk_tokens = chunk_tokens
    model.diffusion_model.clean_known = trained_clean_known(weights)
    log.info("Step-Video DiT %s: %d layers, %d heads x %d, weights %s, compute %s, attention %s",
             dit_config.variant, dit_config.num_layers, dit_config.num_heads, dit_config.head_dim,
             weights.quantization if quantized else storage, manual_cast or compute, backend)
    patcher = QuantizedModelPatcher if quantized else comfy.model_patcher.ModelPatcher
    return patcher(model, load_device=load_device, offload_device=comfy.model_management.unet_offload_device())
