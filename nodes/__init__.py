"""All node classes of the pack, by node id (every id starts with "StepVideo").

Each node class carries its display name as ``DISPLAY_NAME``.
"""

from . import memory, models, modes, multigpu, sampling, text, vae, video

NODE_MODULES = (models, text, vae, sampling, modes, memory, video, multigpu)

NODE_CLASS_MAPPINGS = {
    name: cls for module in NODE_MODULES for name, cls in vars(module).items()
    if name.startswith("StepVideo") and isinstance(cls, type) and hasattr(cls, "INPUT_TYPES")
}
NODE_DISPLAY_NAME_MAPPINGS = {name: cls.DISPLAY_NAME for name, cls in NODE_CLASS_MAPPINGS.items()}
