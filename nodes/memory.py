"""Memory controls for the DiT MODEL and the peak-memory estimate (work with KSampler too)."""

import comfy.samplers

from ..model_loaders.comfy_model import CHUNK_OPTION
from .host import CATEGORY

CFG_PASSES = ("batched when it fits", "sequential")


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
