"""Build a network on the meta device and fill it from weight files, one tensor at a time.

This is how every loader avoids holding two copies of a model in RAM: the module tree is created
without storage (``torch.device("meta")``), each tensor is read from the (memory-mapped) file,
converted to its storage dtype and assigned in place of the meta parameter.
"""

import torch
from torch import nn

from .errors import CheckpointError, examples
from .identify import describe
from .quantized_files import PackedWeight

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def default_compute_dtype(weight_dtype):
    """The dtype layers compute in when their weights are stored in ``weight_dtype``: fp8 stores, bf16
    computes (matmuls upcast each weight as it is used); any other dtype computes in itself."""
    return torch.bfloat16 if weight_dtype in FP8_DTYPES else weight_dtype
MATMUL_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def build_on_meta(factory):
    """``factory()`` evaluated with meta as the default device: the module tree without storage."""
    with torch.device("meta"):
        return factory()


def check_keys(model_keys, weights, what):
    """Raise a CheckpointError naming missing/unexpected keys (with counts) and what the file looks like."""
    expected, found = set(model_keys), set(weights.keys())
    missing, unexpected = expected - found, found - expected
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} of its {len(expected)} expected tensors are missing ({examples(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors are not part of it ({examples(unexpected)})")
    raise CheckpointError(
        f"{weights.source} is not a complete {what}: " + "; ".join(parts)
        + f". The file looks like {describe(found)}.")


def weight_dtype_for(module, leaf, weight_dtype, compute_dtype):
    """Storage dtype of parameter ``leaf`` of ``module``.

    Matmul/conv weights take ``weight_dtype`` (e.g. fp8); everything else (norms, biases, tables,
    embeddings) stays in the compute dtype, since fp8 would cost precision there and save nothing.
    """
    if leaf == "weight" and isinstance(module, MATMUL_LAYERS):
        return weight_dtype
    return compute_dtype


def attach_packed(module, leaf, packed, device, where):
    """Make ``packed`` (a quantized_files.PackedWeight) the ``leaf`` weight of ``module``, as stored (packed
    bytes or fp8 + scale; networks/quant_formats.py says how layers read it)."""
    if leaf != "weight" or not getattr(module, "supports_packed_weights", False):
        raise CheckpointError(f"{where} is quantized ({packed.format}) but belongs to a {type(module).__name__}, "
                              "which cannot run quantized weights; only Linear weights can be quantized.")
    module._parameters["weight"] = nn.Parameter(packed.data.to(device), requires_grad=False)
    module.weight_format, module.weight_shape = packed.format, tuple(packed.shape)
    if packed.scale is not None:
        module.register_buffer("scale_weight", packed.scale.to(device=device, dtype=torch.float32))


def load_into(model: nn.Module, weights, what, weight_dtype=torch.float32, compute_dtype=None, device="cpu",
              key_map=None):
    """Fill the meta-built ``model`` from ``weights`` (a WeightFiles), strictly.

    Args:
        what: the model's name for error messages ("Step-Video DiT").
        weight_dtype: storage dtype of matmul/conv weights (may be fp8; None: as stored in the file).
        compute_dtype: storage dtype of the other parameters (default: ``weight_dtype`` unless fp8,
            then bfloat16; None with weight_dtype None: as stored).
        key_map: optional model-key -> file-key function (e.g. the VAE's conv_out rename).

    Quantized weights (PackedWeight, from pre-quantized files) are attached as stored, whatever
    weight_dtype says; their layers must come from operations that dequantize (``supports_packed_weights``).
    Tensors already in the requested dtype on ``device`` are used as they are (a memory-mapped file stays
    mapped, nothing is copied).
    """
    if compute_dtype is None:
        compute_dtype = default_compute_dtype(weight_dtype)
    key_map = key_map or (lambda k: k)
    names = list(model.state_dict().keys())
    to_file = {name: key_map(name) for name in names}
    check_keys(to_file.values(), weights, what)
    for name in names:
        file_key = to_file[name]
        module_path, _, leaf = name.rpartition(".")
        module = model.get_submodule(module_path) if module_path else model
        current = module._parameters.get(leaf)
        is_param = current is not None
        if not is_param:
            current = module._buffers[leaf]
        stored_shape = tuple(weights.shape(file_key))
        if stored_shape != tuple(current.shape):
            raise CheckpointError(
                f"{weights.source}: tensor {file_key!r} has shape {list(stored_shape)} but this {what} expects "
                f"{list(current.shape)}. The file belongs to a model of another size or variant.")
        stored_dtype = weights.info[file_key].dtype
        if stored_dtype.is_floating_point != current.is_floating_point():
            kind = "a floating-point" if current.is_floating_point() else f"an integer ({current.dtype})"
            raise CheckpointError(
                f"{weights.source}: tensor {file_key!r} is stored as {stored_dtype} but this {what} needs "
                f"{kind} tensor there. The file was converted wrongly or is not a {what}.")
        dtype = weight_dtype_for(module, leaf, weight_dtype, compute_dtype) if current.is_floating_point() else None
        tensor = weights.load(file_key)
        if isinstance(tensor, PackedWeight):
            attach_packed(module, leaf, tensor, device, f"{weights.source}: tensor {file_key!r}")
            continue
        tensor = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
        if is_param:
            module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
        else:
            module._buffers[leaf] = tensor
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"internal error: {what} tensors {examples(left)} were not loaded from {weights.source}.")
    return model.eval().requires_grad_(False)
