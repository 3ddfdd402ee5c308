"""Full-size official state-dict key lists (../shared/reference/keys/) as lazy WeightFiles.

Each list line is ``key<TAB>[d0, d1, ...]``; the first line is a comment with the stored dtype.
The result has shapes and dtypes but no data, which is all config detection and meta-device
construction need.
"""

import json
import os

import torch

from stepvideo_pack.model_loaders.weight_files import TensorInfo, WeightFiles

from . import FIXTURES, REPO

KEYS_DIR = os.path.join(os.path.dirname(REPO), "shared", "reference", "keys")
SNAPSHOT_DIR = os.path.join(FIXTURES, "keys")


def key_list_path(name):
    """Path of a key list: the shared reference if present, else the copy kept in tests/fixtures/keys."""
    shared = os.path.join(KEYS_DIR, name)
    return shared if os.path.isfile(shared) else os.path.join(SNAPSHOT_DIR, name)


def weights_from_key_list(name):
    path = key_list_path(name)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = lines[0].lower()
    dtype = torch.float32 if "float32" in header else torch.bfloat16
    info = {}
    for line in lines[1:]:
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        info[key] = TensorInfo(tuple(json.loads(shape)), dtype, path, key)
    return WeightFiles(path, info)
