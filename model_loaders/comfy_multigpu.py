"""ComfyUI glue of the multi-GPU DiT: a standard MODEL whose DiT forwards run in worker processes.

``multigpu_model(model, pool_for)`` returns a new model patcher over a shallow copy of the loaded
StepVideoBaseModel (the same modules: no second copy of the weights) that

* stays on the CPU (load device CPU): the ComfyUI process computes no DiT layer, it coordinates;
* tells the host that a forward needs next to no memory here, so the host batches cond and uncond
  into one call whenever their conditioning has the same shape, which a CFG degree of 2 splits
  over the ranks;
* runs every forward through a DIFFUSION_MODEL wrapper: the host's call is turned into the official
  forward's inputs (ComfyStepVideoDiT.official_inputs), sent to the pool (multigpu/pool.py), and the
  official velocity comes back in the host's convention. The host's interrupt flag reaches the
  workers; a failed or dead worker becomes an error of this prompt only (the next run starts new
  workers). Per-call transformer_options (block patches, attention overrides) stay in this process
  and do not reach the workers, except the memory options' chunk size.
"""

import copy

import torch

import comfy.model_management
import comfy.patcher_extension

from ..multigpu.pool import WorkerInterrupted
from ..samplers.flow_schedule import comfy_velocity
from ..samplers.video_geometry import to_comfy
from .comfy_model import MODEL_PATCHER

WRAPPER_KEY = "stepvideo_multigpu"
COORDINATOR_BYTES = 64 << 20  # what a forward costs the coordinator: the inputs and the output


def worker_spec(model):
    """What each worker loads: the DiT file of a StepVideo DiT Loader MODEL, its storage/compute dtypes and
    attention backend. Raises ValueError for a MODEL the workers cannot rebuild from its file."""
    base = model.model
    dit = getattr(base, "diffusion_model", None)
    path = getattr(dit, "weights_path", None)
    if path is None:
        raise ValueError("StepVideo Multi-GPU needs a MODEL from the StepVideo DiT Loader (the workers load the "
                         f"DiT from its file); got a {type(base).__name__} without one")
    if model.patches:
        raise ValueError(f"StepVideo Multi-GPU: the MODEL carries {len(model.patches)} patched weights (a LoRA?); "
                         "the workers load the plain file, so apply LoRAs after merging them into the DiT file")
    storage = base.get_dtype()
    return {"path": path, "weight_dtype": storage, "compute_dtype": base.manual_cast_dtype or storage,
            "attention": dit.attention_backend}


def multigpu_model(model, pool):
    """A MODEL like ``model`` whose DiT forwards run on ``pool`` (a started multigpu.pool.WorkerPool)."""
    base = copy.copy(model.model)  # same modules and weights; its own attributes
    base.memory_required = lambda input_shape, cond_shapes={}: COORDINATOR_BYTES  # noqa: B006 (host signature)
    cpu = torch.device("cpu")
    patcher = MODEL_PATCHER(base, load_device=cpu, offload_device=cpu)
    patcher.model_options = copy.deepcopy(model.model_options)
    patcher.multigpu_pool = pool  # keeps the workers alive as long as this MODEL

    def forward_on_workers(executor, x, timestep, context, pooled_output, llm_mask, motion_score, options, **kwargs):
        inputs = executor.class_obj.official_inputs(x, timestep, context, pooled_output, llm_mask, motion_score,
                                                    options)
        inputs = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in inputs.items()}
        try:
            out = pool.forward(inputs, should_stop=comfy.model_management.processing_interrupted)
        except WorkerInterrupted:
            comfy.model_management.throw_exception_if_processing_interrupted()
            raise
        return to_comfy(comfy_velocity(out.to(device=x.device, dtype=x.dtype)))

    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, forward_on_workers)
    return patcher
