"""Makes the pack importable as ``stepvideo_pack`` from research/ (see scripts/pack_path.py)."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

from pack_path import import_pack  # noqa: E402

import_pack()
