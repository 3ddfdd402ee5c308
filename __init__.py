"""ComfyUI entry point of the Step-Video node pack: node registration and model-folder setup only.

Inside ComfyUI (which imports its ``folder_paths`` module before it loads any custom node) this registers the
nodes. Imported anywhere else, as the library ``stepvideo_pack`` that tests, benchmarks and scripts use (see
pyproject.toml), it registers nothing and the pure layers (networks, model_loaders, samplers, multigpu)
import without the host.
"""

import sys

if "folder_paths" in sys.modules:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from .nodes.host import register_model_folder

    register_model_folder()

    WEB_DIRECTORY = "./web"

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
