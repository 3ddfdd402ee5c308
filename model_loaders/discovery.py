"""Finding Step-Video weights in model folders (pure; the nodes pass in ComfyUI's folder lists).

Two ways users store weights:

* an OFFICIAL download folder dropped into ``models/stepvideo/`` as is, e.g.
  ``models/stepvideo/stepvideo-t2v/{transformer,vae,step_llm,hunyuan_clip}/`` — listed by its
  folder name (relative to the stepvideo root), one entry per part it holds; a part folder on its
  own (``models/stepvideo/my-transformer/`` holding the shard index) is listed too;
* single files in ComfyUI's standard folders (``diffusion_models``, which includes ``unet``, ``vae``,
  ``text_encoders``), listed by file name; pre-quantized ``.gguf`` files among them.
"""

import os

from .errors import CheckpointError
from .official_layout import (CLIP_DIR, CLIP_ENCODER_DIR, STEP_LLM_DIR, STEP_TOKENIZER_FILE, TRANSFORMER_DIR,
                              TRANSFORMER_INDEX, VAE_FILE)

PARTS = {
    # part -> (sub-path inside an official folder, test that a folder IS that part on its own)
    "transformer": (TRANSFORMER_DIR, lambda d: _has_suffix(d, TRANSFORMER_INDEX)),
    "vae": (VAE_FILE, lambda d: _has_suffix(d, os.path.basename(VAE_FILE))),
    "step_llm": (STEP_LLM_DIR, lambda d: _has_suffix(d, STEP_TOKENIZER_FILE)),
    "hunyuan_clip": (CLIP_DIR, lambda d: os.path.isdir(os.path.join(d, CLIP_ENCODER_DIR))),
}
SINGLE_FILE_SUFFIXES = (".safetensors", ".sft", ".gguf")  # .gguf: pre-quantized (quantized_files.py)
MAX_DEPTH = 3


def _has_suffix(folder, name):
    return os.path.isfile(os.path.join(folder, name))


def _walk(root):
    """Folders under ``root`` up to MAX_DEPTH levels, as (relative name, absolute path)."""
    root = os.path.abspath(root)
    for current, dirs, _ in os.walk(root, followlinks=True):
        rel = os.path.relpath(current, root)
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
        if rel != ".":
            yield rel.replace(os.sep, "/"), current


def official_parts(roots, part):
    """{choice name: path of that part} for every official folder (or bare part folder) under ``roots``."""
    sub_path, is_part = PARTS[part]
    found = {}
    for root in roots:
        if not os.path.isdir(root):
            continue
        for name, folder in _walk(root):
            candidate = os.path.join(folder, sub_path)
            if os.path.exists(candidate):
                found.setdefault(name, candidate)
            elif is_part(folder):
                found.setdefault(name, os.path.join(folder, os.path.basename(VAE_FILE)) if part == "vae" else folder)
    return found


def single_files(roots):
    """{file name relative to its root: path} of weight files directly usable as one model.

    Not the host's ``folder_paths.get_filename_list``: that lists a folder by the extensions registered for
    it, which for diffusion_models / text_encoders include pickles we refuse (.ckpt, .pt, .bin) and not .gguf;
    adding .gguf there would make the core loaders offer files they cannot read."""
    found = {}
    for root in roots:
        if not os.path.isdir(root):
            continue
        for current, dirs, files in os.walk(root, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.endswith(SINGLE_FILE_SUFFIXES):
                    rel = os.path.relpath(os.path.join(current, f), root).replace(os.sep, "/")
                    found.setdefault(rel, os.path.join(current, f))
    return found


def choices(stepvideo_roots, file_roots, part):
    """(sorted choice names, {name: path}) for a loader: official folders first, then single files."""
    folders = official_parts(stepvideo_roots, part)
    files = {k: v for k, v in single_files(file_roots).items() if k not in folders}
    mapping = {**folders, **files}
    return sorted(folders) + sorted(files), mapping


def resolve(stepvideo_roots, file_roots, part, name, slot):
    """Path for a chosen name; CheckpointError naming where we looked when it is gone."""
    _, mapping = choices(stepvideo_roots, file_roots, part)
    if name in mapping:
        return mapping[name]
    looked = ", ".join(list(stepvideo_roots) + list(file_roots)) or "(no model folders registered)"
    raise CheckpointError(
        f"{slot}: '{name}' was not found. Looked for an official download folder containing "
        f"'{PARTS[part][0]}' and for single files under: {looked}. Check the file name, or put the "
        "official folder into ComfyUI/models/stepvideo/.")
