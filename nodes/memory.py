"""Memory controls for the DiT MODEL (work with KSampler too), and the checks that refuse work which cannot
fit before anything large is allocated."""

import torch

import comfy.model_management
import comfy.samplers

from ..model_loaders.comfy_model import CHUNK_OPTION
from ..model_loaders.memory import SAMPLER_LATENT_BUFFERS, human_bytes, latent_bytes
from ..samplers.video_geometry import frames_within
from .host import CATEGORY

CFG_PASSES = ("batched when it fits", "sequential")
FREE_FRACTION = 0.9  # of what is free, what a check lets one piece of work take (the rest: the host, other nodes)


def cpu_free_bytes():
    """RAM free now, as ComfyUI reports it."""
    return comfy.model_management.get_free_memory(torch.device("cpu"))


def available_bytes(device):
    """Bytes work on ``device`` can use: what is free, plus on a GPU what ComfyUI frees by unloading the models
    it holds there (weights can leave; activations and latents cannot)."""
    device = torch.device(device)
    free = comfy.model_management.get_free_memory(device)
    if device.type != "cpu":
        free += sum(m.model_loaded_memory() for m in comfy.model_management.current_loaded_models
                    if m.device == device and m.model is not None)
    return free


def require_ram(node, what, needed, hint):
    """MemoryError "``node``: ``what`` needs N of RAM, but M is available: ``hint``." when ``needed`` bytes do not
    fit in what is free (call it before allocating)."""
    free = cpu_free_bytes()
    if needed > FREE_FRACTION * free:
        raise MemoryError(f"{node}: {what} needs {human_bytes(needed)} of RAM, but {human_bytes(free)} is available: "
                          f"{hint}")


def require_latent_fits(node, shape, stored_frames=None):
    """MemoryError naming ``node`` unless a float32 latent of ``shape`` (B, C, T, h, w) fits in free RAM and
    sampling it with CFG (SAMPLER_LATENT_BUFFERS[2] latent-sized buffers, activations not counted) fits on
    the sampling device. stored_frames: latent frames kept in RAM when more than T (a long video's whole
    clip). Call it before allocating; the message names the sizes and the most frames that would fit."""
    batch, channels, frames, height, width = shape
    kept = max(frames, stored_frames or 0)
    frame_bytes = latent_bytes((batch, channels, 1, height, width))
    device = comfy.model_management.get_torch_device()
    checks = [(kept, 1, cpu_free_bytes(), "RAM"),
              (frames, SAMPLER_LATENT_BUFFERS[2], available_bytes(device), f"{device} memory")]
    for count, buffers, free, where in checks:
        needed = count * buffers * frame_bytes
        if needed > FREE_FRACTION * free:
            fit = frames_within(int(FREE_FRACTION * free) // (buffers * frame_bytes))
            size = f"{width * 16}x{height * 16} with batch {batch}"
            hint = f"at {size} at most {fit} frames fit" if fit else f"not even one frame of {size} fits"
            latent = [batch, channels, count, height, width]
            sampling = f"sampling it takes {buffers} such buffers, " if buffers > 1 else "it needs "
            raise MemoryError(
                f"{node}: the latent {latent} ({size}) is {human_bytes(count * frame_bytes)}; {sampling}"
                f"{human_bytes(needed)} of {where}, but {human_bytes(free)} is available: {hint}. Lower the frames, "
                "the size or the batch.")


def sequential_cond_batches(args):
    """ComfyUI ``sampler_calc_cond_batch_function``: cond and uncond in two forward passes, never batched."""
    outputs = []
    for cond in args["conds"]:
        if cond is None:
            outputs.append(None)
        else:
            outputs.append(comfy.samplers.calc_cond_batch(args["model"], [cond], args["input"], args["sigma"],
                                                          args["model_options"])[0])
    return outputs


class StepVideoMemoryOptions:
    DISPLAY_NAME = "StepVideo Memory Options"
    DESCRIPTION = ("Trades speed for memory on a Step-Video MODEL (for our sampler and KSampler alike): run the "
                   "feed-forward and attention over chunks of tokens, and run CFG's two predictions one after the "
                   "other instead of as one batch of two. Results are unchanged.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "chunk_tokens": ("INT", {"default": 8192, "min": 0, "max": 1 << 20, "step": 1024,
                                     "tooltip": "Tokens per feed-forward/attention slice (0 = no chunking). "
                                                "544x992x204 is 75,888 tokens; 8192 cuts a block's activation peak "
                                                "to about 45% (see the README's benchmark)."}),
            "cfg_passes": (list(CFG_PASSES), {"default": CFG_PASSES[0],
                           "tooltip": "sequential halves activation memory of CFG sampling; batched is faster "
                                      "when the batch of two fits (ComfyUI decides from free memory)."}),
        }}

    def apply(self, model, chunk_tokens, cfg_passes):
        model = model.clone()
        options = model.model_options.setdefault("transformer_options", {})
        options[CHUNK_OPTION] = chunk_tokens or None
        if cfg_passes == "sequential":
            model.model_options["sampler_calc_cond_batch_function"] = sequential_cond_batches
        return (model,)
