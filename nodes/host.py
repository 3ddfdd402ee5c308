"""What the nodes need from the ComfyUI host: model folders, progress bars and interruption."""

import json
import math
import os

import torch
from safetensors.torch import save_file

import comfy.cli_args
import comfy.model_management
import comfy.utils
import folder_paths

from ..model_loaders import discovery
from ..model_loaders.preview_map import PreviewMaps

CATEGORY = "StepVideo"
STEPVIDEO_FOLDER = "stepvideo"


def register_model_folder():
    """Make ``models/stepvideo`` a known model folder (created if missing); extra_model_paths.yaml may add more."""
    default = os.path.join(folder_paths.models_dir, STEPVIDEO_FOLDER)
    os.makedirs(default, exist_ok=True)
    folder_paths.add_model_folder_path(STEPVIDEO_FOLDER, default, is_default=True)


def folders(kind):
    """Directories ComfyUI knows for a model folder name ([] if the host has no such name)."""
    try:
        return folder_paths.get_folder_paths(kind)
    except KeyError:
        return []


def model_choices(part, file_folder):
    """Combo entries for a loader: official folders under models/stepvideo, then single files in ``file_folder``."""
    names, _ = discovery.choices(folders(STEPVIDEO_FOLDER), folders(file_folder), part)
    return names or ["(no Step-Video weights found: see the README)"]


def model_path(part, file_folder, name, slot):
    return discovery.resolve(folders(STEPVIDEO_FOLDER), folders(file_folder), part, name, slot)


def preview_maps():
    """The live-preview maps fitted to VAE files, cached in ComfyUI/user/stepvideo/preview_maps."""
    return PreviewMaps(os.path.join(folder_paths.get_user_directory(), "stepvideo", "preview_maps"))


def video_samples(latent, slot):
    """``latent["samples"]`` when it is a video latent (B, C, T, h, w); else a ValueError naming ``slot`` and the fix."""
    samples = latent["samples"]
    if samples.ndim != 5:
        raise ValueError(
            f"{slot}: this LATENT has shape {list(samples.shape)} ({samples.ndim}-D), an image latent from a stock node "
            "(e.g. Empty Latent Image or VAE Encode). Step-Video needs a video latent [batch, 64, frames, height/16, "
            "width/16]: make it with StepVideo Empty Latent, StepVideo VAE Encode or a StepVideo mode node.")
    return samples


def require_finite(node, **values):
    """ValueError naming ``node`` and the input when any of ``values`` (name=float) is NaN or infinite.

    NaN passes the host's min/max checks (every comparison with it is false) and a linked FLOAT skips them;
    either would give a "successful" black video.
    """
    for name, value in values.items():
        if not math.isfinite(float(value)):
            raise ValueError(f"{node}: {name} is {value!r}; it must be a finite number.")


def require_finite_tensor(slot, tensor):
    """ValueError naming ``slot`` when ``tensor`` holds NaN or infinite values (how many, of how many)."""
    bad = int((~torch.isfinite(tensor)).sum()) if tensor.is_floating_point() else 0
    if bad:
        raise ValueError(f"{slot}: {bad:,} of {tensor.numel():,} values are NaN or infinite; the input is damaged.")


def check_interrupt():
    """Raise ComfyUI's interrupt exception if the user pressed Cancel / POST /interrupt."""
    comfy.model_management.throw_exception_if_processing_interrupted()


class Progress:
    """A ComfyUI progress bar that also checks for interruption on every update."""

    def __init__(self, total):
        self.bar = comfy.utils.ProgressBar(total)
        self.total = total

    def __call__(self, done, total=None, preview=None):
        check_interrupt()
        self.bar.update_absolute(done, total or self.total, preview)


def save_metadata(prompt, extra_pnginfo):
    """{tag: JSON text} saved with every output file, like the host's savers: the prompt (API format) and
    every extra_pnginfo entry (the UI workflow); nothing when ComfyUI runs with --disable-metadata."""
    if getattr(comfy.cli_args.args, "disable_metadata", False):
        return {}
    tags = {}
    if prompt is not None:
        tags["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        tags[key] = json.dumps(value)
    return tags


class LatentCheckpoint:
    """Saves a LATENT tensor as output/StepVideo/<name>_NNNNN_.latent (ComfyUI's SaveLatent format,
    loadable with LoadLatent once moved to input/), overwriting the same file on every save."""

    def __init__(self, name, prompt=None, extra_pnginfo=None):
        folder, filename, counter, _, _ = folder_paths.get_save_image_path(
            f"StepVideo/{name}", folder_paths.get_output_directory())
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, f"{filename}_{counter:05}_.latent")
        self.metadata = save_metadata(prompt, extra_pnginfo)

    def save(self, samples):
        tensors = {"latent_tensor": samples.detach().cpu().contiguous(), "latent_format_version_0": torch.tensor([])}
        save_file(tensors, self.path + ".tmp", metadata=self.metadata)
        os.replace(self.path + ".tmp", self.path)
