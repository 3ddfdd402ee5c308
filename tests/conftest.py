"""Shared pytest setup: the pack is importable as ``stepvideo_pack`` (see scripts/pack_path.py); the
scripts' and benchmarks' helper modules import by their file names."""

import os
import sys

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
sys.path.insert(0, TESTS_DIR)

from pack_path import import_pack  # noqa: E402

import_pack()
