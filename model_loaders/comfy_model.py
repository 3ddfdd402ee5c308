"""ComfyUI glue: the Step-Video DiT as a standard MODEL (BaseModel + the host's model patcher, flow sampling).

Importing this module needs a ComfyUI host (``comfy``). Everything host-specific about the DiT is
here: the latent format (16x spatial, 17 frames -> 3 latents, a preview map fitted to the VAE), the
model config (flow sampling, shift 13 by default), the conversion of ComfyUI's call (x (B, C, T, H,
W), timestep = sigma * 1000, text conditioning, extra conds) to the official DiT call, run through the
host's diffusion-model wrappers with its transformer_options passed down to the blocks and attention,
the host's attention function as the "comfy" backend, and the LoRA key formats of this model.

The text conditioning layout is defined in :mod:`.conditioning`. TI2V weights take the image latent
as ``concat_latent_image`` (B, 64, T_img, h, w) and a ``motion_score`` float in the conditioning dict
(the image-to-video node sets both).
"""

import logging

import torch

import comfy.conds
import comfy.latent_formats
import comfy.ldm.modules.attention as host_attention
import comfy.lora
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.supported_models_base
import comfy.utils

from ..networks.attention import register_host_attention, resolve_backend
from ..networks.dit import DEFAULT_MOTION_SCORE, StepVideoDiT
from ..samplers.flow_schedule import DEFAULT_SHIFT, comfy_velocity, timestep_from_sigma
from ..samplers.video_geometry import FRAMES_PER_CHUNK, LATENTS_PER_CHUNK, SPATIAL, to_comfy, to_official
from .comfy_quantized import QuantizedModelPatcher, QuantizedOps
from .conditioning import CLIP_KEY, LLM_MASK_KEY, check_text_conditioning, dit_text_inputs
from .dit_loader import WHAT, detect_dit_config, dit_weights, trained_clean_known
from .materialize import FP8_DTYPES, default_compute_dtype, load_into
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
CHUNK_OPTION = "stepvideo_chunk_tokens"  # transformer_options key set by the memory-options node
# The host's model-patcher class: newer hosts name the one their memory manager wants (e.g. a dynamic-VRAM
# patcher) CoreModelPatcher; older ones have only ModelPatcher.
MODEL_PATCHER = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


class StepVideoLatentFormat(comfy.latent_formats.LatentFormat):
    """Video latents: 16x spatial, 17 frames -> 3 latent frames per chunk, no scale or shift.

    ``temporal_downscale_ratio`` 17/3 makes the host's formula for a video latent's length,
    (frames - 1) // ratio + 1, exact for every whole number of chunks (17 k -> 3 k) and one frame (-> 1).
    The live-preview map (``latent_rgb_factors`` and bias) comes from ``preview_map(channels)``, asked the
    first time the host wants it (None: no live previews).
    """

    latent_dimensions = 3
    scale_factor = 1.0
    spacial_downscale_ratio = SPATIAL  # the host's spelling
    temporal_downscale_ratio = FRAMES_PER_CHUNK / LATENTS_PER_CHUNK

    def __init__(self, channels=64, preview_map=None):
        self.latent_channels = channels
        self.preview_map = preview_map or (lambda channels: None)
        self._fitted = None

    def _map(self):
        """The fitted map, {} when none is known yet (asked again next time) or fitting failed (not again)."""
        if self._fitted is None:
            try:
                fitted = self.preview_map(self.latent_channels)
            except Exception as e:  # a preview must never stop a run
                log.warning("Step-Video: no live previews: fitting the preview colours failed: %s", e)
                fitted = {}
            if fitted is None:
                return {}
            self._fitted = fitted
        return self._fitted

    @property
    def latent_rgb_factors(self):
        return self._map().get("factors")

    @property
    def latent_rgb_factors_bias(self):
        return self._map().get("bias")


class StepVideoModelConfig(comfy.supported_models_base.BASE):
    unet_config = {}
    unet_extra_config = {}
    sampling_settings = {"shift": DEFAULT_SHIFT, "multiplier": 1000}
    latent_format = StepVideoLatentFormat
    supported_inference_dtypes = [torch.bfloat16, torch.float32]
    memory_usage_factor = 1.0

    def __init__(self, dit_config, shift=DEFAULT_SHIFT, preview_map=None):
        super().__init__({"config": dit_config})
        self.sampling_settings["shift"] = shift
        self.latent_format = StepVideoLatentFormat(dit_config.out_channels, preview_map)


def comfy_host_attention(q, k, v, mask=None, options=None):
    """The host's attention function in the layout of networks.attention: q (B, Lq, H, D) -> (B, Lq, H, D).

    A bool mask (True = attend) becomes the additive mask every host implementation accepts.
    ``options`` (transformer_options) reach the host's attention wrappers where the host has them.
    """
    heads = q.shape[2]
    function = host_attention.optimized_attention
    extra = {}
    if mask is not None:
        function = host_attention.optimized_attention_masked
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(
            ~mask.to(q.device), torch.finfo(q.dtype).min)
    if options is not None and hasattr(host_attention, "wrap_attn"):
        extra["transformer_options"] = options
    out = function(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), heads, mask=mask, skip_reshape=True,
                   **extra)
    return out.unflatten(-1, (heads, q.shape[-1]))


register_host_attention(comfy_host_attention)


class ComfyStepVideoDiT(StepVideoDiT):
    """StepVideoDiT called the ComfyUI way; the only place the sigma/velocity conventions meet."""

    def __init__(self, config, dtype=None, device=None, operations=None, **_):
        super().__init__(config, operations=operations, device=device)
        self.dtype = dtype

    def forward(self, x, timestep, context=None, pooled_output=None, llm_mask=None, motion_score=None,
                transformer_options=None, **kwargs):
        """The host's diffusion-model call, through the wrappers registered on it (caches, compile, ...)."""
        options = {} if transformer_options is None else transformer_options
        wrappers = comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, options)
        if wrappers:
            # A wrapper may hand back its input updated in place (EasyCache does on a reused step), and when the
            # model computes in float32 that input is the very tensor the host then computes x0 from: give the
            # wrappers a copy.
            x = x.clone()
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timestep, context, pooled_output, llm_mask, motion_score, options, **kwargs)

    def _forward(self, x, timestep, context, pooled_output, llm_mask, motion_score, transformer_options, **kwargs):
        """x (B, C[+C_cond], T, H, W); timestep = sigma * 1000 (B,) -> (noise - data) (B, C, T, H, W)."""
        inputs = self.official_inputs(x, timestep, context, pooled_output, llm_mask, motion_score, transformer_options)
        return to_comfy(comfy_velocity(super().forward(**inputs, transformer_options=transformer_options)))

    def official_inputs(self, x, timestep, context, pooled_output, llm_mask, motion_score, transformer_options):
        """The host's call as keyword arguments of the official forward (StepVideoDiT.forward), without the
        transformer_options themselves; the result (official velocity) goes back with
        ``to_comfy(comfy_velocity(v))``."""
        channels = self.config.in_channels
        llm_states, clip_states, mask = dit_text_inputs(context, pooled_output, llm_mask)
        return dict(
            hidden_states=to_official(x[:, :channels]), timestep=timestep_from_sigma(timestep.float() / 1000.0),
            encoder_hidden_states=llm_states, encoder_hidden_states_2=clip_states, encoder_attention_mask=mask,
            condition_hidden_states=to_official(x[:, channels:]) if self.config.image_condition else None,
            motion_score=DEFAULT_MOTION_SCORE if motion_score is None else float(motion_score),
            chunk_tokens=transformer_options.get(CHUNK_OPTION))


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
        """The conds of one CONDITIONING entry, checked to be Step-Video text conditioning first."""
        out = super().extra_conds(**kwargs)
        config = self.diffusion_model.config
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            check_text_conditioning(cross_attn, kwargs.get(CLIP_KEY), kwargs.get(LLM_MASK_KEY),
                                    config.caption_channels[0],
                                    config.caption_channels[1] if len(config.caption_channels) > 1 else None)
            # CONDRegular: conds of different lengths (ConditioningConcat) run as separate batches, never padded
            out["c_crossattn"] = comfy.conds.CONDRegular(cross_attn)
        for key in (CLIP_KEY, LLM_MASK_KEY):
            if kwargs.get(key) is not None:
                out[key] = comfy.conds.CONDRegular(kwargs[key])
        if config.image_condition:
            out["motion_score"] = comfy.conds.CONDConstant(float(kwargs.get("motion_score", DEFAULT_MOTION_SCORE)))
        return out

    def memory_required(self, input_shape, cond_shapes={}):
        """Activation bytes of one forward over ``input_shape`` (B, C, T, H, W), from the memory model."""
        batch, _, frames, height, width = input_shape
        dtype = self.manual_cast_dtype or self.get_dtype()
        return dit_activation_bytes(self.diffusion_model.config, batch, frames, height, width,
                                    dtype=dtype, chunk_tokens=self.diffusion_model.chunk_tokens)


def stepvideo_lora_keys(state_dict_keys):
    """{LoRA key prefix: model weight key} for the LoRA formats people train for this DiT.

    The host maps ``diffusion_model.<name>`` and kohya's ``lora_unet_<name with _>`` itself; this adds the
    diffusers/PEFT-style ``transformer.<name>`` and DiffSynth's bare ``<name>`` (official module names).
    """
    keys = {}
    for key in state_dict_keys:
        if key.startswith("diffusion_model.") and key.endswith(".weight"):
            name = key[len("diffusion_model."):-len(".weight")]
            keys["transformer." + name] = key
            keys[name] = key
    return keys


def _add_lora_key_formats():
    """Teach the host's LoRA key map this model's formats (idempotent).

    The host has no per-model registry for LoRA key formats (it branches on its own model classes in
    comfy.lora.model_lora_keys_unet), so its function is wrapped once, adding our keys for our model only.
    """
    original = comfy.lora.model_lora_keys_unet
    if getattr(original, "stepvideo_formats", False):
        return

    def model_lora_keys_unet(model, key_map={}):  # noqa: B006 (the host's signature)
        key_map = original(model, key_map)
        if isinstance(model, StepVideoBaseModel):
            for lora_key, weight_key in stepvideo_lora_keys(model.state_dict().keys()).items():
                key_map.setdefault(lora_key, weight_key)
        return key_map

    model_lora_keys_unet.stepvideo_formats = True
    comfy.lora.model_lora_keys_unet = model_lora_keys_unet


_add_lora_key_formats()


def load_stepvideo_model(path, weight_dtype="default (bf16)", attention="comfy", shift=DEFAULT_SHIFT,
                         chunk_tokens=None, preview_map=None):
    """A model patcher around the DiT at ``path`` (official transformer/ folder, index or single file).

    The DiT is built on the meta device and filled tensor by tensor (one copy in RAM); weights are
    stored as ``weight_dtype`` (fp8 runs in bf16 through ComfyUI's casting layers) and ComfyUI's model
    management loads/offloads them like any native model. ``preview_map(channels)`` gives the live-preview
    colours (see StepVideoLatentFormat).
    """
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"unknown weight dtype {weight_dtype!r}; choose one of {', '.join(WEIGHT_DTYPES)}")
    storage = WEIGHT_DTYPES[weight_dtype]
    weights = dit_weights(path)
    dit_config = detect_dit_config(weights)
    model_config = StepVideoModelConfig(dit_config, shift=shift, preview_map=preview_map)
    load_device = comfy.model_management.get_torch_device()
    quantized = is_quantized(weights)  # pre-quantized file: kept as stored, memory-mapped (comfy_quantized.py)
    if quantized:
        storage, model_config.custom_operations = torch.bfloat16, QuantizedOps
    compute = default_compute_dtype(storage)
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
    model.diffusion_model.weights_path = path  # the multi-GPU workers load their copies from here
    log.info("Step-Video DiT %s: %d layers, %d heads x %d, weights %s, compute %s, attention %s",
             dit_config.variant, dit_config.num_layers, dit_config.num_heads, dit_config.head_dim,
             weights.quantization if quantized else storage, manual_cast or compute, backend)
    # quantized weights keep LoRA patches for call time (comfy_quantized.py), on the host's plain patcher class
    patcher = QuantizedModelPatcher if quantized else MODEL_PATCHER
    return patcher(model, load_device=load_device, offload_device=comfy.model_management.unet_offload_device())
