"""The multi-GPU node: a loaded Step-Video MODEL run by sequence/CFG-parallel worker processes."""

import torch

from ..model_loaders.comfy_multigpu import multigpu_model, worker_spec
from ..multigpu.pool import WorkerPool, parse_devices
from .host import CATEGORY


class StepVideoMultiGPU:
    DISPLAY_NAME = "StepVideo Multi-GPU"
    DESCRIPTION = ("Runs the DiT of a StepVideo DiT Loader MODEL on several GPUs: worker processes (one per rank, "
                   "ranks = CFG degree x sequence degree) each load the DiT file onto their device; the video's "
                   "tokens are split over the sequence ranks (Ulysses all-to-all around self-attention, as the "
                   "official xDiT code does) and cond/uncond over the CFG ranks. The result is a standard MODEL "
                   "for our sampler and KSampler; ComfyUI itself computes no DiT layer. Same result as one GPU.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "From the StepVideo DiT Loader (the workers load its file; no LoRA)."}),
            "sequence_degree": ("INT", {"default": 2, "min": 1, "max": 64,
                                        "tooltip": "Ranks sharing one prediction's tokens. Best when it divides "
                                                   "the 48 heads (1, 2, 3, 4, 6, 8, ...): otherwise keys/values are "
                                                   "gathered instead of the all-to-all (exact, more traffic)."}),
            "cfg_degree": ("INT", {"default": 1, "min": 1, "max": 2,
                                   "tooltip": "2 = the cond and uncond predictions on different ranks (needs CFG "
                                              "> 1; ComfyUI batches them when their texts' shapes match)."}),
            "devices": ("STRING", {"default": "auto",
                                   "tooltip": "auto = cuda:0..N-1 (CPU ranks when there is no GPU), cpu, or a "
                                              "list such as cuda:0,cuda:1,cuda:2,cuda:3 (one per rank)."}),
            "shard_weights": ("BOOLEAN", {"default": False,
                                          "tooltip": "Split the 48 blocks' weights over the ranks (FSDP2): each GPU "
                                                     "holds 1/N of them and gathers a block just before it runs. "
                                                     "For GPUs that cannot hold the whole DiT (60 GB in bf16). Each "
                                                     "worker still reads the whole file into RAM while loading."}),
        }}

    def apply(self, model, sequence_degree, cfg_degree, devices, shard_weights):
        world = sequence_degree * cfg_degree
        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        spec = worker_spec(model)  # before starting anything: a MODEL the workers cannot load is an input error
        spec["shard_weights"] = shard_weights
        pool = WorkerPool(spec, cfg_degree, sequence_degree, parse_devices(devices, world, cuda))
        pool.start()
        return (multigpu_model(model, pool),)
