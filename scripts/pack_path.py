"""Make the pack importable as ``stepvideo_pack`` without running its ComfyUI ``__init__.py``.

The repository root is a ComfyUI custom-node folder whose name is the user's choice, and its
``__init__.py`` registers nodes with the host. Tests, benchmarks and scripts only need the pure
layers (networks, model_loaders, samplers), so they import them through this alias.
"""

import os
import sys
import types

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_NAME = "stepvideo_pack"


def import_pack():
    """The pack as a namespace-like package named ``stepvideo_pack`` (idempotent)."""
    pack = sys.modules.get(PACK_NAME)
    if pack is None:
        pack = types.ModuleType(PACK_NAME)
        pack.__path__ = [PACK_ROOT]
        pack.__file__ = os.path.join(PACK_ROOT, "__init__.py")
        sys.modules[PACK_NAME] = pack
    return pack
