"""Run the pack's node code in this process on a real ComfyUI host, without a server.

scripts/parity.py and the behaviour tools sample through the same code the nodes run (the MODEL
wrapper, the host's guider, our sampler); that code imports the host (``comfy``, ``latent_preview``,
...). ``import_host()`` puts the ComfyUI checkout on ``sys.path`` (``COMFYUI_PATH``, else .host/ComfyUI
made by scripts/bootstrap.sh) with the host's default settings (on the CPU where torch has no CUDA),
so that the pack's nodes import as ``stepvideo_pack.nodes``.
"""

import os
import sys

from .server import default_comfyui_path


def import_host(comfyui_path=None):
    """Make the ComfyUI at ``comfyui_path`` (default: COMFYUI_PATH or .host/ComfyUI) importable; returns its path."""
    path = os.path.abspath(comfyui_path or default_comfyui_path())
    if not os.path.isfile(os.path.join(path, "comfy", "model_management.py")):
        raise RuntimeError(f"no ComfyUI at {path} (run scripts/bootstrap.sh, or set COMFYUI_PATH)")
    if path not in sys.path:
        sys.path.insert(0, path)
    import torch

    import comfy.cli_args  # command-line parsing stays off: the host's default settings
    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True  # what `main.py --cpu` sets: the host assumes a CUDA device otherwise
    import comfy.model_management  # noqa: F401
    return path
