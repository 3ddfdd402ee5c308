"""Load the Step-Video DiT from the official ``transformer/`` folder or a single file.

Sizes come from tensor shapes (``detect_dit_config``): hidden width from the patch embedding,
head width from the QK-norm weight, layers from the block indices, TI2V from the
motion-score embedder, caption widths from the two text projections.
"""

import re

import torch

from ..networks.dit import DiTConfig, StepVideoDiT
from ..networks.ops import CastOps, DEFAULT_OPERATIONS
from .errors import CheckpointError
from .identify import describe, find_prefix
from .materialize import build_on_meta, default_compute_dtype, load_into
from .quantized_files import is_quantized
from .weight_files import open_weights

WHAT = "Step-Video DiT"
SIGNATURE = "transformer_blocks.0.attn1.wqkv.weight"
# safetensors metadata: how the DiT was trained to see the known latents of a window (samplers/flow_euler.py).
# Absent (the released weights): "renoised", like every ComfyUI noise_mask sampler.
KNOWN_LATENTS_KEY = "stepvideo.known_latents"
KNOWN_LATENTS = ("renoised", "clean")


def dit_weights(path):
    """Open ``path`` and strip any prefix a single-file conversion put before the official keys."""
    weights = open_weights(path)
    prefix = find_prefix(weights.keys(), SIGNATURE)
    if prefix is None:
        raise CheckpointError(f"{weights.source} is not a {WHAT} checkpoint: it looks like {describe(weights.keys())}. "
                              "Put the official transformer/ folder (or a single-file DiT) in this slot.")
    if prefix:
        weights = weights.renamed(lambda k: k[len(prefix):] if k.startswith(prefix) else None)
    return weights


def detect_dit_config(weights) -> DiTConfig:
    """The DiTConfig whose shapes match ``weights`` (a WeightFiles with official key names)."""
    def shape(key):
        if key not in weights:
            raise CheckpointError(f"{weights.source} is not a complete {WHAT}: tensor {key!r} is missing.")
        return weights.shape(key)

    hidden, patch_in, p, _ = shape("pos_embed.proj.weight")
    head_dim = shape("transformer_blocks.0.attn1.q_norm.weight")[0]
    layers = 1 + max(int(m.group(1)) for k in weights.keys() if (m := re.match(r"transformer_blocks\.(\d+)\.", k)))
    image_condition = "adaln_single.emb.motion_score_embedder.linear_1.weight" in weights
    caption = [shape("caption_projection.linear_1.weight")[1]]
    if "clip_projection.weight" in weights:
        caption.append(shape("clip_projection.weight")[1])
    out_channels = shape("proj_out.weight")[0] // (p * p)
    if hidden % head_dim:
        raise CheckpointError(f"{weights.source}: width {hidden} is not a multiple of the head width {head_dim}.")
    return DiTConfig(
        num_heads=hidden // head_dim, head_dim=head_dim,
        in_channels=patch_in // 2 if image_condition else patch_in, out_channels=out_channels,
        num_layers=layers, caption_channels=tuple(caption),
        ff_inner_dim=shape("transformer_blocks.0.ff.net.0.proj.weight")[0],
        patch_size=p, image_condition=image_condition)


def trained_clean_known(weights):
    """True when the checkpoint says its DiT sees known latents clean (metadata :data:`KNOWN_LATENTS_KEY`)."""
    value = weights.metadata().get(KNOWN_LATENTS_KEY, KNOWN_LATENTS[0])
    if value not in KNOWN_LATENTS:
        raise CheckpointError(f"{weights.source}: safetensors metadata {KNOWN_LATENTS_KEY!r} is {value!r}; expected "
                              f"one of {', '.join(map(repr, KNOWN_LATENTS))}.")
    return value == "clean"


def load_dit(path, weight_dtype=torch.bfloat16, compute_dtype=None, device="cpu", operations=None):
    """A ready StepVideoDiT from an official folder/index/single file.

    weight_dtype: storage of matmul weights (bf16/fp16/fp32 or fp8 e4m3fn/e5m2); compute_dtype:
    storage of the rest and the dtype to run in (default: weight_dtype, bf16 for fp8). With fp8
    (or any weight_dtype != compute_dtype) the layers cast weights at call time (CastOps).
    A pre-quantized file (GGUF, scaled fp8) keeps what it stores, memory-mapped: both dtypes are
    ignored, the layers dequantize at call time to the dtype of the inputs (CastOps).
    """
    weights = dit_weights(path)
    config = detect_dit_config(weights)
    if is_quantized(weights):
        weight_dtype = compute_dtype = None
        operations = operations or CastOps
    elif compute_dtype is None:
        compute_dtype = default_compute_dtype(weight_dtype)
    if operations is None:
        operations = CastOps if weight_dtype != compute_dtype else DEFAULT_OPERATIONS
    model = build_on_meta(lambda: StepVideoDiT(config, operations=operations))
    model = load_into(model, weights, WHAT, weight_dtype, compute_dtype, device)
    model.clean_known = trained_clean_known(weights)
    return model
