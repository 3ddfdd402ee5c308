"""Reading official weight files lazily, one tensor at a time.

``open_weights(path)`` accepts what users have on disk:

* a folder holding ``*.safetensors.index.json`` + shards (official ``transformer/``, ``step_llm/``),
* a folder holding exactly one ``.safetensors`` or one ``pytorch_model.bin``,
* an ``*.index.json`` file, a single ``.safetensors`` file, or a pickled ``.bin``/``.pt``/``.pth``
  file (read with ``torch.load(weights_only=True, mmap=True)``),
* a pre-quantized single file, recognised by its content: GGUF, or scaled-fp8 safetensors
  (see quantized_files.py; their quantized weights load as PackedWeight).

It returns a :class:`WeightFiles`: key -> shape/dtype without reading data, and ``load(key)`` reads
one tensor. Safetensors headers are checked against the file size up front, so a truncated
download fails with the byte counts instead of a cryptic error halfway through loading.
"""

import json
import os
import struct
import zipfile
from dataclasses import dataclass

import torch
from safetensors import safe_open

from .errors import CheckpointError, examples

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
SAFETENSORS_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


def safetensors_header(tensors, metadata=None):
    """The bytes a safetensors file starts with, for data written right after them: the 8-byte header length
    and the JSON header (padded so the data starts 8-byte aligned). tensors: [(name, dtype name such as
    "BF16", shape, byte size)] in the order their data follows, back to back."""
    header, offset = {}, 0
    for name, dtype_name, shape, size in tensors:
        header[name] = {"dtype": dtype_name, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple
    dtype: torch.dtype
    file: str
    stored_key: str  # the name inside the file (differs from the dict key after ``renamed``)


class WeightFiles:
    """A flat state dict spread over one or more files, read lazily.

    Attributes:
        source: the path the user gave (used in every error message).
        info: key -> :class:`TensorInfo`.
    """

    def __init__(self, source, info, pickled=None):
        self.source = source
        self.info = info
        self._pickled = pickled  # key -> tensor for .bin files (memory-mapped by torch.load)
        self._handles = {}

    def keys(self):
        return self.info.keys()

    def __contains__(self, key):
        return key in self.info

    def __len__(self):
        return len(self.info)

    def shape(self, key):
        return self.info[key].shape

    def files(self):
        return sorted({i.file for i in self.info.values()})

    def load(self, key) -> torch.Tensor:
        """The tensor stored under ``key`` (CPU, stored dtype)."""
        entry = self.info[key]
        if self._pickled is not None:
            return self._pickled[entry.stored_key]
        handle = self._handles.get(entry.file)
        if handle is None:
            handle = self._handles[entry.file] = safe_open(entry.file, framework="pt", device="cpu")
        return handle.get_tensor(entry.stored_key)

    def metadata(self):
        """The string metadata of the safetensors files, merged ({} for pickled files)."""
        merged = {}
        if self._pickled is None:
            for file in self.files():
                with safe_open(file, framework="pt", device="cpu") as handle:
                    merged.update(handle.metadata() or {})
        return merged

    def close(self):
        self._handles.clear()
        self._pickled = None

    def renamed(self, rename):
        """A view with every key passed through ``rename`` (keys mapped to None are dropped)."""
        info = {}
        for key, entry in self.info.items():
            new = rename(key)
            if new is not None:
                info[new] = entry
        return WeightFiles(self.source, info, self._pickled)


def read_safetensors_header(path):
    """key -> TensorInfo for one safetensors file; raises CheckpointError if it is damaged or truncated."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is not a safetensors file: it is only {size} bytes long.")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8 or header_len > 100_000_000:
            raise CheckpointError(
                f"{path} is not a valid safetensors file (header length {header_len} bytes, file {size} bytes); "
                "it is damaged or not a safetensors file at all.")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path} has an unreadable safetensors header ({e}); the file is damaged.") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a malformed safetensors header (a JSON {type(header).__name__}, not an "
                              "object of tensors); the file is damaged or not a safetensors file.")
    header.pop("__metadata__", None)
    info, data_end = {}, 0
    for key, entry in header.items():
        problem = _entry_problem(entry)
        if problem:
            raise CheckpointError(f"{path} has a malformed safetensors header: tensor {key!r} {problem}; the file "
                                  "is damaged or was written by a broken tool.")
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {entry['dtype']!r}.")
        info[key] = TensorInfo(tuple(entry["shape"]), dtype, path, key)
        data_end = max(data_end, entry["data_offsets"][1])
    expected = 8 + header_len + data_end
    if size < expected:
        raise CheckpointError(
            f"{path} is truncated: its header describes {expected:,} bytes but the file has {size:,} "
            f"({expected - size:,} bytes missing). Download it again.")
    return info


def _entry_problem(entry):
    """What is wrong with one tensor entry of a safetensors header (None if it is well formed)."""
    if not isinstance(entry, dict):
        return f"is described by a JSON {type(entry).__name__}, not an object"
    if not isinstance(entry.get("dtype"), str):
        return "has no dtype"
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return f"has shape {shape!r}, not a list of sizes"
    offsets = entry.get("data_offsets")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        return f"has data_offsets {offsets!r}, not [begin, end]"
    return None


def _shard_problem(name):
    """Why a shard name from an index cannot be used (None if it is a plain relative file name)."""
    if not isinstance(name, str) or not name:
        return f"{name!r} is not a file name"
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or ".." in parts or name.startswith("~"):
        return f"{name!r} points outside the index's folder"
    return None


def _read_index(index_path):
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{index_path} is not a valid shard index (expected a JSON file with a "
                              f"'weight_map'): {e}") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_path} is not a valid shard index: its 'weight_map' is a "
                              f"{type(weight_map).__name__}, not an object of tensor name -> shard file.")
    bad = sorted({problem for problem in map(_shard_problem, weight_map.values()) if problem})
    if bad:
        raise CheckpointError(f"{index_path} names shard files that are not in its folder: {'; '.join(bad[:4])}. "
                              "Every shard must sit beside the index; nothing outside it is read.")
    folder = os.path.dirname(index_path)
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
    if missing:
        raise CheckpointError(
            f"{index_path} lists {len(shards)} shard files but {len(missing)} are missing from {folder}: "
            f"{examples(missing)}. Download the missing shards.")
    info = {}
    for shard in shards:
        info.update(read_safetensors_header(os.path.join(folder, shard)))
    indexed = set(weight_map)
    stored = set(info)
    if indexed - stored:
        raise CheckpointError(
            f"{index_path} names {len(indexed - stored)} tensors that its shards do not contain: "
            f"{examples(indexed - stored)}. A shard is damaged or from another download.")
    if stored - indexed:
        raise CheckpointError(
            f"the shards in {folder} hold {len(stored - indexed)} tensors that {os.path.basename(index_path)} "
            f"does not list: {examples(stored - indexed)}. The index file is incomplete or from another download.")
    for key, shard in weight_map.items():
        if os.path.basename(info[key].file) != shard:
            raise CheckpointError(f"{index_path} says {key!r} is in {shard}, but it is in "
                                  f"{os.path.basename(info[key].file)}. The index and shards do not belong together.")
    return info


def _read_pickle(path):
    """A pickled state dict: memory-mapped when it is a zip archive (PyTorch >= 1.6), else (the old format,
    which cannot be memory-mapped) read into memory."""
    legacy = not zipfile.is_zipfile(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=not legacy)
    except Exception as e:  # torch raises many types for damaged/unsafe pickles
        kind = "an old-format (pre-1.6, not zip) PyTorch file" if legacy else "a PyTorch weight file"
        raise CheckpointError(f"{path} could not be read as {kind} ({type(e).__name__}: {str(e)[:200]}). It is "
                              "damaged, truncated, not a PyTorch file, or contains more than plain tensors.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not contain a flat dictionary of tensors.")
    info = {k: TensorInfo(tuple(v.shape), v.dtype, path, k) for k, v in state.items()}
    return info, state


def _single_safetensors(path):
    """One .safetensors file; a scaled-fp8 one (model_loaders/quantized_files.py) comes back memory-mapped."""
    from .quantized_files import scaled_fp8_view

    return scaled_fp8_view(WeightFiles(path, read_safetensors_header(path)))


def open_weights(path) -> WeightFiles:
    """Open a weight file or folder (see module docstring); CheckpointError names anything wrong."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path} does not exist.")
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        indexes = [n for n in names if n.endswith(".safetensors.index.json")]
        singles = [n for n in names if n.endswith(".safetensors")]
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        if len(indexes) == 1:
            return WeightFiles(path, _read_index(os.path.join(path, indexes[0])))
        if len(indexes) > 1:
            raise CheckpointError(f"{path} holds several shard indexes ({examples(indexes)}); keep one model per folder.")
        if len(singles) == 1:
            return _single_safetensors(os.path.join(path, singles[0]))
        if len(singles) > 1:
            raise CheckpointError(f"{path} holds {len(singles)} .safetensors files ({examples(singles)}) but no "
                                  "*.safetensors.index.json saying how they fit together.")
        if len(pickles) == 1:
            info, state = _read_pickle(os.path.join(path, pickles[0]))
            return WeightFiles(path, info, state)
        raise CheckpointError(f"{path} holds no weight files (expected *.safetensors, a shard index or "
                              f"pytorch_model.bin); it contains: {examples(names) or 'nothing'}.")
    from .quantized_files import is_gguf, open_gguf  # (imports this module)

    if is_gguf(path):
        return open_gguf(path)
    if path.endswith(".index.json"):
        return WeightFiles(path, _read_index(path))
    if path.endswith(".safetensors"):
        return _single_safetensors(path)
    if path.endswith(PICKLE_SUFFIXES):
        info, state = _read_pickle(path)
        return WeightFiles(path, info, state)
    raise CheckpointError(f"{path}: unknown weight file type (expected .safetensors, .index.json, .bin or .pt).")
