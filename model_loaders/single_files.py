"""An official Step-LLM or HunyuanCLIP folder as ONE .safetensors file that carries its tokenizer
(scripts/convert_single_files.py is the command line).

The file holds the weights the loaders use (official key names; HunyuanCLIP without the unused MLM head
and pooler) in their stored dtypes, plus the tokenizer files and config.json as uint8 tensors (names in
``text_encoder_loader.EMBEDDED_FILES``), so it can sit alone in ComfyUI's ``models/text_encoders/``.
Tensors are written one at a time: converting the 39 GB Step-LLM needs about as much free disk, not RAM.
"""

import math
import os

import torch

from . import text_encoder_loader as loader
from .errors import CheckpointError
from .identify import identify
from .weight_files import SAFETENSORS_DTYPE_NAMES, open_weights, safetensors_header

CLIP_KEY_PREFIX = "bert."  # the official checkpoint's prefix, kept so other tools recognise the file


def write_safetensors(path, entries, metadata=None):
    """Write a safetensors file tensor by tensor. entries: [(name, shape, dtype, fetch)] where fetch()
    returns the tensor; only one tensor is in memory at a time. Written to ``path + '.partial'`` first."""
    layout = [(name, SAFETENSORS_DTYPE_NAMES[dtype], shape, dtype.itemsize * math.prod(shape))
              for name, shape, dtype, _ in entries]
    partial = path + ".partial"
    with open(partial, "wb") as f:
        f.write(safetensors_header(layout, metadata))
        for name, shape, dtype, fetch in entries:
            tensor = fetch().to(dtype).contiguous()
            if tuple(tensor.shape) != tuple(shape):
                raise ValueError(f"{name}: got shape {list(tensor.shape)}, announced {list(shape)}")
            f.write(tensor.reshape(-1).view(torch.uint8).numpy())
    os.replace(partial, path)
    return path


def _file_entry(name, data):
    tensor = loader.embed_file(data)
    return loader.EMBEDDED_FILES[name], tuple(tensor.shape), torch.uint8, lambda: tensor


def _weight_entries(weights, prefix=""):
    return [(prefix + key, weights.shape(key), weights.info[key].dtype, lambda key=key: weights.load(key))
            for key in sorted(weights.keys())]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def single_file_entries(src):
    """(what, entries for write_safetensors) for an official Step-LLM or HunyuanCLIP folder."""
    src = os.fspath(src)
    kind = identify(open_weights(loader.clip_weights_path(src)).keys())
    if kind == "step_llm":
        weights, _, config_source = loader.step_llm_weights(src)
        files = {loader.STEP_TOKENIZER_FILE: _read(loader.locate_step_tokenizer(src))}
        entries = _weight_entries(weights)
    elif kind == "hunyuan_clip":
        weights, _, config_source = loader.hunyuan_clip_weights(src)
        tokenizer_dir = loader.locate_clip_tokenizer(src)
        files = {name: _read(os.path.join(tokenizer_dir, name)) for name in loader.CLIP_TOKENIZER_FILES
                 if os.path.isfile(os.path.join(tokenizer_dir, name))}
        entries = _weight_entries(weights, CLIP_KEY_PREFIX)
    else:
        raise CheckpointError(f"{src} is neither an official step_llm/ nor a hunyuan_clip/ folder.")
    if config_source is not None:
        files["config.json"] = _read(config_source)
    return kind, entries + [_file_entry(name, data) for name, data in files.items()]


def convert(src, out):
    """Write the single file for folder ``src`` to ``out``; returns (kind, out)."""
    kind, entries = single_file_entries(src)
    write_safetensors(os.fspath(out), entries, metadata={"format": "pt", "converted_from": os.path.basename(
        os.path.normpath(src))})
    return kind, out
