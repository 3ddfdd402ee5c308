"""Sampling nodes: the official Euler flow-matching sampler, its schedule, and empty latents."""

import logging

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import latent_preview

from ..model_loaders.comfy_model import CHUNK_OPTION
from ..model_loaders.memory import describe_estimate, human_bytes, run_estimate
from ..samplers.flow_euler import guidance_at, sample_flow_euler
from ..samplers.flow_schedule import DEFAULT_SHIFT, partial_noise_levels
from ..samplers.modes import chain_windows, long_video_plan
from ..samplers.video_geometry import (FRAMES_PER_CHUNK, LATENTS_PER_CHUNK, latent_frames, snap_frames, snap_size,
                                      snapping_note)
from .host import (CATEGORY, LatentCheckpoint, Progress, check_interrupt, require_finite, require_finite_tensor,
                   video_samples)
from .memory import FREE_FRACTION, available_bytes, require_latent_fits

log = logging.getLogger(__name__)


SEED_RANGE = 1 << 64  # the host's seed widgets: 0 .. 2^64 - 1


def window_seed(seed, index):
    """The seed of window ``index`` of a run seeded ``seed``: seed + index, kept in the host's seed range."""
    return (seed + index) % SEED_RANGE


class OfficialEulerSampler(comfy.samplers.Sampler):
    """ComfyUI Sampler running samplers.flow_euler.sample_flow_euler on a CFG-guided ComfyUI model.

    The guider returns the CFG-combined denoised estimate x0; in the flow convention the velocity is
    (x - x0) / sigma, so every step is exactly the official x <- x + v (sigma_next - sigma).
    ``noise_mask`` is applied by our loop: known latents re-noised each step, or given clean to a DiT
    trained that way (``clean_known``), and copied exactly at the end.
    """

    def __init__(self, clean_known=False):
        self.clean_known = clean_known

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        total = len(sigmas) - 1

        def velocity(x, sigma):
            check_interrupt()
            s = torch.full((x.shape[0],), sigma, device=x.device, dtype=torch.float32)
            denoised = model_wrap(x, s, **extra_args)
            return (x - denoised) / sigma

        def on_step(i, x, denoised):
            if not bool(torch.isfinite(denoised).all()):
                raise FloatingPointError(
                    f"StepVideo sampling: the model's prediction at step {i + 1} of {total} (noise level "
                    f"{float(sigmas[i]):.4f}) holds NaN or infinite values; stopped there. Check the weights "
                    "(a damaged file, or fp16 overflow: use bf16) and the conditioning.")
            if callback is not None:
                callback(i, denoised, x, total)

        return sample_flow_euler(velocity, noise, sigmas.float().cpu(), latent=latent_image, mask=denoise_mask,
                                 callback=on_step, clean_known=self.clean_known)


class GuidanceIntervalGuider(comfy.samplers.CFGGuider):
    """ComfyUI's CFG guider with guidance stopped below a noise level (``flow_euler.guidance_at``).

    Below ``stop_sigma`` the scale is 1, which ComfyUI's ``sampling_function`` runs as the positive
    pass alone; ``stop_sigma`` 0 is exactly ``CFGGuider``.
    """

    def __init__(self, model_patcher, stop_sigma=0.0):
        super().__init__(model_patcher)
        self.stop_sigma = stop_sigma

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (ComfyUI's signature)
        scale = guidance_at(float(timestep.max()), self.cfg, self.stop_sigma)
        return comfy.samplers.sampling_function(self.inner_model, x, timestep, self.conds.get("negative"),
                                                self.conds.get("positive"), scale, model_options=model_options,
                                                seed=seed)


CFG_STOP_SIGMA_INPUT = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "Guidance interval: no CFG below this noise level (1 = pure noise), "
                                             "so those steps run the positive prompt alone (half the cost). "
                                             "0 = CFG on every step (official); e.g. 0.9 guides only the layout "
                                             "and motion."})


def check_memory(model, samples, cfg):
    """Estimate peak memory for sampling ``samples``; log it, and refuse clearly when the working memory
    (activations and the latent-sized buffers; weights can be streamed, these cannot) does not fit in what
    is available on the device now. Returns the report line."""
    diffusion = model.model.diffusion_model
    device = model.load_device
    chunk = model.model_options.get("transformer_options", {}).get(CHUNK_OPTION) or diffusion.chunk_tokens
    batched = "sampler_calc_cond_batch_function" not in model.model_options
    estimate = run_estimate(diffusion.config, samples.shape[0], *samples.shape[2:],
                            weight_dtype=model.model.get_dtype(),
                            compute_dtype=model.model.manual_cast_dtype or model.model.get_dtype(),
                            cfg_passes=2 if cfg != 1.0 else 1, cfg_batched=batched, chunk_tokens=chunk)
    total = comfy.model_management.get_total_memory(device)
    available = available_bytes(device)
    report = "Step-Video memory estimate: " + describe_estimate(estimate, total, available)
    log.info(report)
    if estimate["working"] > FREE_FRACTION * available:
        raise MemoryError(
            f"{report}. The activations and latent buffers ({human_bytes(estimate['working'])}) do not fit in the "
            f"{human_bytes(available)} available on {device}: lower the resolution, frames or batch, or add "
            "StepVideo Memory Options (token chunking, sequential CFG) before the sampler.")
    return report


def run_official_sampler(model, positive, negative, latent, seed, steps, cfg, shift, denoise, callback=None,
                         cfg_stop_sigma=0.0, noise=None):
    """LATENT dict -> sampled LATENT dict, with ComfyUI noise (CPU generator, same as KSampler).

    The one sampling path of the pack: the nodes, scripts/parity.py (official sampling fixtures) and the
    behaviour tools all sample through it. callback(step, x0, x, total_steps) replaces the default per-run
    progress bar and previews. cfg_stop_sigma: CFG only at noise levels >= this (``GuidanceIntervalGuider``).
    noise: a given noise tensor of the latent's shape instead of the seeded one.
    """
    samples = comfy.sample.fix_empty_latent_channels(model, video_samples(latent, "StepVideo Sampler (latent)"))
    require_finite("StepVideo Sampler", cfg=cfg, shift=shift, denoise=denoise, cfg_stop_sigma=cfg_stop_sigma)
    require_finite_tensor("StepVideo Sampler (latent)", samples)
    sigmas = partial_noise_levels(steps, shift, denoise)
    if len(sigmas) == 0:
        return latent
    if noise is None:
        noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    guider = GuidanceIntervalGuider(model, cfg_stop_sigma)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    callback = callback or latent_preview.prepare_callback(model, len(sigmas) - 1)
    sampler = OfficialEulerSampler(clean_known=model.model.diffusion_model.clean_known)
    out = guider.sample(noise, samples, sampler, sigmas, denoise_mask=latent.get("noise_mask"),
                        callback=callback, seed=seed)
    return {**latent, "samples": out.to(comfy.model_management.intermediate_device())}


class StepVideoSampler:
    DISPLAY_NAME = "StepVideo Sampler"
    DESCRIPTION = ("The official Step-Video sampler: Euler flow matching on the official time-shifted schedule "
                   "with classifier-free guidance. Honours the latent's noise_mask (known frames stay exact) and "
                   "denoise (< 1 starts part-way, for SDEdit/video-to-video). Interruptible every step.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "A Step-Video DiT from StepVideo DiT Loader."}),
            "positive": ("CONDITIONING", {"tooltip": "From StepVideo Text Encode (positive)."}),
            "negative": ("CONDITIONING", {"tooltip": "From StepVideo Text Encode (negative)."}),
            "latent": ("LATENT", {"tooltip": "Start latent (StepVideo Empty Latent, or a mode node's output)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                             "tooltip": "Noise seed (same noise as KSampler for the same seed)."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 500,
                              "tooltip": "Euler steps: 30-50 for the base model, 10-15 for Turbo."}),
            "cfg": ("FLOAT", {"default": 9.0, "min": 1.0, "max": 30.0, "step": 0.1,
                              "tooltip": "Classifier-free guidance: 9 for the base model, 5 for Turbo. 1 = off."}),
            "shift": ("FLOAT", {"default": DEFAULT_SHIFT, "min": 1.0, "max": 100.0, "step": 0.1,
                                "tooltip": "Time shift of the schedule: 13 for the base model, 17 for Turbo."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "1 = from pure noise. Below 1 the run starts part-way from the input "
                                             "latent (SDEdit strength); 0 returns the input unchanged."}),
            "cfg_stop_sigma": CFG_STOP_SIGMA_INPUT,
        }}

    def sample(self, model, positive, negative, latent, seed, steps, cfg, shift, denoise, cfg_stop_sigma=0.0):
        report = check_memory(model, video_samples(latent, "StepVideo Sampler (latent)"), cfg)
        result = run_official_sampler(model, positive, negative, latent, seed, steps, cfg, shift, denoise,
                                      cfg_stop_sigma=cfg_stop_sigma)
        return {"ui": {"text": [report]}, "result": (result,)}


class StepVideoScheduler:
    DISPLAY_NAME = "StepVideo Scheduler"
    DESCRIPTION = ("SIGMAS of the official Step-Video schedule (shifted linear, noise level 1 -> 0) for "
                   "SamplerCustomAdvanced. With the euler sampler this is the official loop.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "schedule"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "steps": ("INT", {"default": 50, "min": 1, "max": 500}),
            "shift": ("FLOAT", {"default": DEFAULT_SHIFT, "min": 1.0, "max": 100.0, "step": 0.1}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        }}

    def schedule(self, steps, shift, denoise):
        require_finite("StepVideo Scheduler", shift=shift, denoise=denoise)
        return (partial_noise_levels(steps, shift, denoise),)


class StepVideoEmptyLatent:
    DISPLAY_NAME = "StepVideo Empty Latent"
    DESCRIPTION = "An empty Step-Video latent video [batch, 64, latent frames, height/16, width/16]. " + snapping_note()
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 992, "min": 16, "max": 4096, "step": 16,
                              "tooltip": "Pixels; snapped down to a multiple of 16. Official: 992 (or 768)."}),
            "height": ("INT", {"default": 544, "min": 16, "max": 4096, "step": 16,
                               "tooltip": "Pixels; snapped down to a multiple of 16. Official: 544 (or 768)."}),
            "frames": ("INT", {"default": 204, "min": 1, "max": 17 * 60,
                               "tooltip": "Pixel frames, snapped down to a multiple of 17 (17 -> 3 latent frames, "
                                          "204 -> 36); 1 makes a single image. Official: 204."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
        }}

    def generate(self, width, height, frames, batch_size):
        shape = (batch_size, 64, latent_frames(snap_frames(frames)), snap_size(height) // 16, snap_size(width) // 16)
        require_latent_fits("StepVideo Empty Latent", shape)
        return ({"samples": torch.zeros(shape, device=comfy.model_management.intermediate_device())},)


class StepVideoLongVideo:
    DISPLAY_NAME = "StepVideo Long Video"
    DESCRIPTION = ("Generates a video of any length by chaining forward extensions: each window keeps "
                   "overlap_chunks known 17-frame chunks of what exists and samples the rest, so memory is bounded "
                   "by one window. One progress bar covers the whole run. The finished part is saved after every "
                   "window (output/StepVideo/long_video_*.latent, loadable with LoadLatent) — an interrupt or a "
                   "crash keeps it.")
    CATEGORY = CATEGORY + "/modes"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                "width": ("INT", {"default": 992, "min": 16, "max": 4096, "step": 16}),
                "height": ("INT", {"default": 544, "min": 16, "max": 4096, "step": 16}),
                "total_frames": ("INT", {"default": 408, "min": 17, "max": 17 * 1000,
                                         "tooltip": "Length of the result, snapped down to a multiple of 17."}),
                "window_frames": ("INT", {"default": 204, "min": 34, "max": 17 * 60,
                                          "tooltip": "Frames sampled at once (memory scales with this)."}),
                "overlap_chunks": ("INT", {"default": 1, "min": 1, "max": 11,
                                           "tooltip": "Known 17-frame chunks carried into each next window."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                 "tooltip": "Window i uses seed + i (wrapping round past 2^64 - 1)."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 500}),
                "cfg": ("FLOAT", {"default": 9.0, "min": 1.0, "max": 30.0, "step": 0.1}),
                "shift": ("FLOAT", {"default": DEFAULT_SHIFT, "min": 1.0, "max": 100.0, "step": 0.1}),
                "cfg_stop_sigma": CFG_STOP_SIGMA_INPUT,
            },
            "optional": {"start_clip": ("LATENT", {"tooltip": "Continue this clip instead of starting fresh."})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def generate(self, model, positive, negative, width, height, total_frames, window_frames, overlap_chunks, seed,
                 steps, cfg, shift, cfg_stop_sigma=0.0, start_clip=None, prompt=None, extra_pnginfo=None):
        require_finite("StepVideo Long Video", cfg=cfg, shift=shift, cfg_stop_sigma=cfg_stop_sigma)
        start = None if start_clip is None else video_samples(start_clip, "StepVideo Long Video (start_clip)")
        plan = long_video_plan(snap_frames(total_frames) // FRAMES_PER_CHUNK,
                               max(2, snap_frames(window_frames) // FRAMES_PER_CHUNK), overlap_chunks,
                               None if start is None else start.shape[2] // LATENTS_PER_CHUNK)
        grid = (snap_size(height) // 16, snap_size(width) // 16)
        window_latents = max(plan) * LATENTS_PER_CHUNK + 3 * overlap_chunks
        clip_latents = sum(plan) * LATENTS_PER_CHUNK + (0 if start is None else start.shape[2])
        require_latent_fits("StepVideo Long Video", (1, 64, window_latents, *grid), stored_frames=clip_latents)
        window = torch.zeros(1, 1, window_latents, *grid)
        report = check_memory(model, window, cfg)
        bar = Progress(len(plan) * steps)
        saver = LatentCheckpoint("long_video", prompt, extra_pnginfo)
        finished = {}

        def sample_window(samples, mask, index):
            latent = {"samples": samples} if mask is None else {"samples": samples, "noise_mask": mask}
            on_step = lambda step, x0, x, total: bar(index * steps + step + 1)  # noqa: E731
            sampled = run_official_sampler(model, positive, negative, latent, window_seed(seed, index), steps, cfg,
                                           shift, 1.0, on_step, cfg_stop_sigma)["samples"]
            return sampled.to(samples.device)

        def save(clip):
            finished["clip"] = clip
            saver.save(clip)

        try:
            current = chain_windows(plan, sample_window, lambda chunks: torch.zeros(1, 64, chunks * LATENTS_PER_CHUNK,
                                                                                     *grid),
                                    overlap_chunks, start=start, on_window=save)
        except comfy.model_management.InterruptProcessingException:
            if finished:
                log.warning("StepVideo Long Video interrupted; the finished %d latent frames are in %s",
                            finished["clip"].shape[2], saver.path)
            raise
        return {"ui": {"text": [report]}, "result": ({"samples": current.to(comfy.model_management.intermediate_device())},)}
