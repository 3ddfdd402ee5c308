"""What the nodes need from the ComfyUI host: model folders, progress bars and interruption."""

import os

import comfy.model_management
import comfy.utils
import folder_paths

from ..model_loaders import discovery

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
