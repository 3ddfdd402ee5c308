"""Pre-quantized single files (GGUF and scaled-fp8 safetensors), read memory-mapped.

Recognised by content, not by name (``open_weights`` dispatches here):

* **GGUF** (magic ``GGUF``): tensors named with the official keys; Linear weights in Q8_0, Q6_K, Q5_K or
  Q4_K, the rest F32/F16/BF16; tokenizer and config files of a text encoder as I8 tensors
  (text_encoder_loader.EMBEDDED_FILES); the DiT's safetensors metadata as string key/values.
* **scaled fp8 safetensors** (ComfyUI's convention): a ``scaled_fp8`` marker tensor; each quantized
  Linear weight is float8_e4m3fn with a float32 scalar ``<layer>.scale_weight`` beside it.

:class:`MappedWeightFiles` serves them with the WeightFiles interface. Every tensor it returns is a
zero-copy view of a private (copy-on-write) memory map of the file: loading reads nothing, pages come
in when a layer first uses them, they are file-backed (the OS can drop them again), and
:meth:`MappedWeightFiles.release` drops them explicitly (text encoding does after every layer).
A quantized weight comes back as a :class:`PackedWeight` that the loaders attach to its layer as is
(networks/quant_formats.py). Plain safetensors can be served the same way (:func:`mapped_view`).
"""

import json
import mmap
import os
import struct
from dataclasses import dataclass

import torch

from ..networks.quant_formats import FORMATS
from .errors import CheckpointError, examples
from .weight_files import SAFETENSORS_DTYPES, TensorInfo, WeightFiles

GGUF_MAGIC = b"GGUF"
SCALED_FP8_MARKER = "scaled_fp8"
SCALE_SUFFIX = ".scale_weight"
FORMAT_KEY = "stepvideo.quantization"  # GGUF key / safetensors metadata: the target format of the file
GGUF_FLOAT_TYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I8": torch.int8}


@dataclass
class PackedWeight:
    """A quantized (out, in) weight as stored: ``data`` packed (see quant_formats.WeightFormat.packed_shape),
    ``scale`` the float32 scalar of fp8_scaled (None for GGML formats)."""

    data: torch.Tensor
    format: str
    shape: tuple
    scale: torch.Tensor = None


class MappedFile:
    """A private read-only-in-practice memory map of one file; tensors are zero-copy views of it."""

    def __init__(self, path):
        self.path = path
        self.size = os.path.getsize(path)
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if self.size else None

    def bytes(self, offset, count):
        """uint8 tensor over bytes [offset, offset + count) of the file."""
        if count == 0:
            return torch.empty(0, dtype=torch.uint8)
        return torch.frombuffer(self._map, dtype=torch.uint8, count=count, offset=offset)

    def release(self):
        """Drop the pages read so far (they are re-read from the file on the next use)."""
        if self._map is not None:
            self._map.madvise(mmap.MADV_DONTNEED)


@dataclass(frozen=True)
class Span:
    """Where a tensor's bytes are: file map, byte offset, stored dtype and shape."""

    file: MappedFile
    offset: int
    dtype: torch.dtype
    shape: tuple

    def tensor(self):
        count = 1
        for dim in self.shape:
            count *= dim
        raw = self.file.bytes(self.offset, count * self.dtype.itemsize)
        return raw.view(self.dtype).reshape(self.shape)


class MappedWeightFiles(WeightFiles):
    """WeightFiles whose tensors are views of memory maps; packed keys load as :class:`PackedWeight`.

    info[key].shape is the logical shape; formats: key -> format name of the packed keys;
    scales: weight key -> the Span of its fp8 scale.
    """

    def __init__(self, source, info, spans, formats=None, scales=None, metadata=None):
        super().__init__(source, info)
        self.spans, self.formats, self.scales = spans, formats or {}, scales or {}
        self._metadata = metadata or {}

    @property
    def quantization(self):
        """The file's formats as one string ('Q4_K + Q8_0', 'fp8_scaled'), or None if nothing is packed."""
        return " + ".join(sorted(set(self.formats.values()), key=list(FORMATS).index)) or None

    def load(self, key):
        tensor = self.spans[key].tensor()
        fmt = self.formats.get(key)
        if fmt is None:
            return tensor
        scale = self.scales[key].tensor().reshape(()) if key in self.scales else None
        return PackedWeight(tensor, fmt, self.info[key].shape, scale)

    def metadata(self):
        return dict(self._metadata)

    def renamed(self, rename):
        keep = {key: new for key in self.info if (new := rename(key)) is not None}
        return MappedWeightFiles(
            self.source, {new: self.info[key] for key, new in keep.items()},
            {new: self.spans[key] for key, new in keep.items()},
            {new: self.formats[key] for key, new in keep.items() if key in self.formats},
            {new: self.scales[key] for key, new in keep.items() if key in self.scales}, self._metadata)

    def release(self):
        for file in {id(s.file): s.file for s in self.spans.values()}.values():
            file.release()

    def close(self):
        self.spans = {}


def is_quantized(weights):
    """True when ``weights`` (any WeightFiles) holds quantized weights."""
    return bool(getattr(weights, "formats", None))


# --- safetensors -------------------------------------------------------------------------------------------

def safetensors_layout(path):
    """(start of the data section, {key: (dtype, shape, begin, end)}, metadata) of a safetensors file whose
    header ``read_safetensors_header`` already accepted."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    metadata = header.pop("__metadata__", None) or {}
    entries = {key: (SAFETENSORS_DTYPES[e["dtype"]], tuple(e["shape"]), *e["data_offsets"]) for key, e in header.items()}
    return 8 + length, entries, metadata


def mapped_view(weights):
    """``weights`` (safetensors-backed WeightFiles, any key view) served from memory maps, zero-copy."""
    if isinstance(weights, MappedWeightFiles):
        return weights
    layouts, maps, spans = {}, {}, {}
    for key, entry in weights.info.items():
        if entry.file not in layouts:
            layouts[entry.file], maps[entry.file] = safetensors_layout(entry.file), MappedFile(entry.file)
        start, entries, _ = layouts[entry.file]
        dtype, shape, begin, _ = entries[entry.stored_key]
        spans[key] = Span(maps[entry.file], start + begin, dtype, shape)
    metadata = weights.metadata() if weights.info else {}
    return MappedWeightFiles(weights.source, dict(weights.info), spans, metadata=metadata)


def scaled_fp8_view(weights):
    """A safetensors WeightFiles with the ``scaled_fp8`` marker -> MappedWeightFiles with packed fp8 weights
    (marker and scale keys hidden). Other files are returned unchanged. CheckpointError names the file,
    the key, what was expected and what was found for a scale without an fp8 weight, an fp8 weight
    without a scale, or a scale that is not a float32 scalar."""
    if SCALED_FP8_MARKER not in weights.info:
        return weights
    source = weights.source
    scale_keys = [k for k in weights.info if k.endswith(SCALE_SUFFIX)]
    scales = {}
    for key in scale_keys:
        weight_key = key[:-len(SCALE_SUFFIX)] + ".weight"
        info = weights.info.get(weight_key)
        if info is None:
            raise CheckpointError(f"{source}: {key!r} scales a tensor {weight_key!r} that the file does not hold.")
        if info.dtype != torch.float8_e4m3fn:
            raise CheckpointError(f"{source}: {weight_key!r} has a scale ({key!r}), so it must be stored as "
                                  f"float8_e4m3fn, but it is {info.dtype}. The file is mislabelled or damaged.")
        scale = weights.info[key]
        if scale.dtype != torch.float32 or len(scale.shape) > 1 or (scale.shape and scale.shape[0] != 1):
            raise CheckpointError(f"{source}: {key!r} must be a float32 scalar, found {scale.dtype} of shape "
                                  f"{list(scale.shape)}.")
        scales[weight_key] = key
    unscaled = [k for k, i in weights.info.items() if i.dtype == torch.float8_e4m3fn and k not in scales
                and k != SCALED_FP8_MARKER]
    if unscaled:
        raise CheckpointError(f"{source} is marked scaled fp8 but {len(unscaled)} float8 tensors have no "
                              f"'{SCALE_SUFFIX}' beside them: {examples(unscaled)}.")
    mapped = mapped_view(weights)
    hidden = set(scale_keys) | {SCALED_FP8_MARKER}
    info = {k: v for k, v in mapped.info.items() if k not in hidden}
    spans = {k: v for k, v in mapped.spans.items() if k not in hidden}
    return MappedWeightFiles(source, info, spans, {k: "fp8_scaled" for k in scales},
                             {k: mapped.spans[v] for k, v in scales.items()}, mapped.metadata())


# --- GGUF --------------------------------------------------------------------------------------------------

def is_gguf(path):
    """True when the file at ``path`` starts with the GGUF magic."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _reader_class():
    import gguf

    class CheckedReader(gguf.GGUFReader):
        """gguf's reader, refusing a file shorter than its tensor table says before slicing it."""

        def _build_tensors(self, start_offs, fields):
            needed = 0
            for field in fields:
                _, _, _, dims, raw_type, offset = field.parts
                qtype = gguf.GGMLQuantizationType(int(raw_type[0]))
                block, size = gguf.GGML_QUANT_SIZES[qtype]
                count = 1
                for dim in dims.tolist():
                    count *= int(dim)
                needed = max(needed, start_offs + int(offset[0]) + count * size // block)
            if needed > len(self.data):
                raise CheckpointError(
                    f"is truncated: its tensor table describes {needed:,} bytes but the file has "
                    f"{len(self.data):,} ({needed - len(self.data):,} bytes missing). Download or convert it again.")
            super()._build_tensors(start_offs, fields)

    return CheckedReader


def _field_value(field):
    import gguf

    if field.types and field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return None


def open_gguf(path):
    """MappedWeightFiles of a GGUF file; CheckpointError for a damaged, truncated or unsupported one."""
    import gguf

    try:
        reader = _reader_class()(path, mode="c")
    except CheckpointError as e:
        raise CheckpointError(f"{path} {e}") from None
    except (ValueError, KeyError, IndexError, OverflowError, struct.error) as e:
        raise CheckpointError(f"{path} is not a readable GGUF file ({os.path.getsize(path):,} bytes; {e}); "
                              "it is damaged or was not written completely.") from None
    metadata = {name: value for name, field in reader.fields.items()
                if not name.startswith("GGUF.") and (value := _field_value(field)) is not None}
    file = MappedFile(path)
    info, spans, formats = {}, {}, {}
    for tensor in reader.tensors:
        name, qtype = tensor.name, tensor.tensor_type.name
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        if qtype in GGUF_FLOAT_TYPES:
            dtype = GGUF_FLOAT_TYPES[qtype]
            spans[name] = Span(file, tensor.data_offset, dtype, shape)
        elif qtype in FORMATS and FORMATS[qtype].ggml:
            if len(shape) != 2:
                raise CheckpointError(f"{path}: tensor {name!r} is {qtype}-quantized with shape {list(shape)}; only "
                                      "2-D (Linear) weights can be quantized here.")
            dtype = torch.bfloat16  # what it dequantizes to (a floating-point weight)
            spans[name] = Span(file, tensor.data_offset, torch.uint8, FORMATS[qtype].packed_shape(shape))
            formats[name] = qtype
        else:
            raise CheckpointError(f"{path}: tensor {name!r} is stored as GGML type {qtype}, which this loader does "
                                  f"not read (supported: {', '.join(list(GGUF_FLOAT_TYPES) + list(FORMATS)[1:])}).")
        info[name] = TensorInfo(shape, dtype, path, name)
    return MappedWeightFiles(path, info, spans, formats, metadata=metadata)
