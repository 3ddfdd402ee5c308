"""Load the Step-Video v2 Video-VAE from the official ``vae/`` folder, ``vae_v2.safetensors``, or a
single file that nests the same keys under a prefix (``vae.``, ``first_stage_model.``).

Sizes come from tensor shapes (``detect_vae_config``): widths from the Resnet convs, levels and
blocks from the key indices, 3-D resampling levels from which resampling keys exist, z from the
patchify convs. The file stores the decoder's output conv as ``decoder.conv_out.weight/bias``;
the module (like the official one) names it ``decoder.conv_out.conv.*``.
"""

import math
import os
import re

import torch

from ..networks.ops import DEFAULT_OPERATIONS
from ..networks.vae import PATCH_CHANNELS_PER_Z, PATCH_FACTOR, VAEConfig, VAEDecoderConfig, VAEEncoderConfig, VideoVAE
from ..networks.vae_blocks import GROUPS, store_conv_weights_channels_last
from .errors import CheckpointError
from .identify import describe, find_prefix
from .materialize import build_on_meta, load_into
from .weight_files import open_weights

WHAT = "Step-Video Video-VAE (v2)"
SIGNATURE = "decoder.conv_in.conv.weight"
V2_FILE = "vae_v2.safetensors"
V2_ONLY_KEYS = ("encoder.conv_patchify.conv.conv.weight", "decoder.conv_unpatchify.conv.conv.weight")
MODULE_CONV_OUT, FILE_CONV_OUT = "decoder.conv_out.conv.", "decoder.conv_out."


def module_to_file_key(name):
    """Module parameter name -> key in the official file (only the decoder output conv differs)."""
    return FILE_CONV_OUT + name[len(MODULE_CONV_OUT):] if name.startswith(MODULE_CONV_OUT) else name


def vae_weights(path):
    """Open ``path`` (folder or file); strip a single-file prefix; accept module-style conv_out names."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, V2_FILE)):
        path = os.path.join(path, V2_FILE)
    weights = open_weights(path)
    prefix = find_prefix(weights.keys(), SIGNATURE)
    if prefix is None:
        raise CheckpointError(
            f"{weights.source} is not a {WHAT} checkpoint: it looks like {describe(weights.keys())}. "
            f"Put the official vae/{V2_FILE} (or the vae/ folder) in this slot.")
    return weights.renamed(lambda key: module_to_file_key(key[len(prefix):]) if key.startswith(prefix) else None)


def level_count(weights, stem):
    """1 + the largest N among keys ``stem + 'N.'...`` (0 if none)."""
    pattern = re.compile(re.escape(stem) + r"(\d+)\.")
    return 1 + max((int(m.group(1)) for k in weights.keys() if (m := pattern.match(k))), default=-1)


def detect_vae_config(weights) -> VAEConfig:
    """The VAEConfig whose shapes match ``weights`` (a WeightFiles with the official file key names)."""
    source = weights.source

    def shape(key):
        if key not in weights:
            raise CheckpointError(f"{source} is not a complete {WHAT}: tensor {key!r} is missing.")
        return weights.shape(key)

    if not any(key in weights for key in V2_ONLY_KEYS):
        raise CheckpointError(
            f"{source} is the Step-Video v1 VAE (vae/vae.safetensors: no patchify layers, "
            f"{shape('decoder.conv_in.conv.weight')[1]} latent channels), which the official pipeline does not use "
            f"and the DiT cannot read. Choose vae/{V2_FILE} from the same folder.")

    levels = level_count(weights, "encoder.down.")
    ch = shape("encoder.conv_in.conv.weight")[0]
    widths = [shape(f"encoder.down.{i}.block.0.conv1.conv.weight")[0] for i in range(levels)]
    z = shape(V2_ONLY_KEYS[0])[0] * PATCH_FACTOR ** 3 // PATCH_CHANNELS_PER_Z
    encoder = VAEEncoderConfig(
        ch=ch, ch_mult=tuple(w // ch for w in widths), z_channels=z,
        num_res_blocks=level_count(weights, "encoder.down.0.block."),
        down_sampling_layer=tuple(i for i in range(levels)
                                  if f"encoder.down.{i}.downsample.conv.conv.weight" in weights),
        double_z=shape("encoder.conv_out.conv.weight")[0] == 2 * z)
    check_widths(source, "encoder", [ch] + widths, ch)

    levels = level_count(weights, "decoder.up.")
    widths = [shape(f"decoder.up.{i}.block.0.conv2.conv.weight")[0] for i in range(levels)]
    ch = math.gcd(*widths)  # the file fixes ch * ch_mult only; the released (1, 2, 4, 4) has gcd 1
    temporal = tuple(i for i in range(levels) if f"decoder.up.{i}.upsample.conv3d.conv1.conv.weight" in weights)
    check_widths(source, "decoder", widths, ch)
    try:
        decoder = VAEDecoderConfig(
            ch=ch, ch_mult=tuple(w // ch for w in widths), z_channels=shape(SIGNATURE)[1],
            num_res_blocks=level_count(weights, "decoder.up.0.block.") - 1,
            temporal_up_layers=temporal, temporal_downsample=2 ** len(temporal))
        return VAEConfig(encoder=encoder, decoder=decoder)
    except ValueError as e:
        raise CheckpointError(f"{source} is not a consistent {WHAT}: {e}") from None


def check_widths(source, part, widths, ch):
    bad = [w for w in widths if w % ch or w % GROUPS]
    if bad:
        raise CheckpointError(f"{source}: {part} widths {widths} must be multiples of {ch} and of the "
                              f"{GROUPS} GroupNorm groups; {bad} are not. The file is not a {WHAT}.")


def load_vae(path, dtype=torch.float32, device="cpu", operations=None) -> VideoVAE:
    """A ready VideoVAE from the official vae/ folder, vae_v2.safetensors or a prefixed single file.

    Weights are stored and computed in ``dtype`` on ``device``; ``operations`` (default torch.nn)
    supplies the Conv2d / Conv3d / GroupNorm layers (e.g. comfy.ops for host-managed casting).
    """
    weights = vae_weights(path)
    config = detect_vae_config(weights)
    operations = operations or DEFAULT_OPERATIONS
    model = build_on_meta(lambda: VideoVAE(config, operations=operations))
    model = load_into(model, weights, WHAT, dtype, dtype, device, key_map=module_to_file_key)
    return store_conv_weights_channels_last(model)
