"""Convert an official DiT (``transformer/``) or Step-LLM (``step_llm/``) to one pre-quantized file.

``convert(src, out, target)`` writes GGUF for the GGML targets (Q8_0, Q6_K, Q5_K, Q4_K) and scaled-fp8
safetensors for ``fp8_scaled``; which tensor gets which storage is decided by
``quantize.storage_for`` (documented there). Key names stay the official ones, so the same loaders
read the result; a Step-LLM file carries its tokenizer and config.json (as the single-file converter
does), a DiT file the source's safetensors metadata.

Memory: tensors are streamed row chunk by row chunk (``chunk_values`` values at a time) with
positioned reads from the source files (no memory map, so no page of the source stays resident)
and written straight to the output, so peak RAM is a fixed bound set by the chunk size, whatever
the model or the largest tensor. fp8 reads each tensor twice (its absolute maximum first).
The output is written to ``<out>.partial`` and renamed only when complete: an interrupted
conversion never leaves a file under the final name.
"""

import os
import struct

import torch
from torch import nn

from ..networks.dit import StepVideoDiT
from ..networks.quant_formats import FORMATS
from ..networks.step_llm import StepLLM
from .dit_loader import detect_dit_config, dit_weights
from .errors import CheckpointError
from .identify import describe, identify
from .materialize import build_on_meta
from .quantize import fp8_scale, quantize_fp8, quantize_rows, storage_for
from .quantized_files import FORMAT_KEY, SCALE_SUFFIX, SCALED_FP8_MARKER, is_quantized, safetensors_layout
from .official_layout import STEP_TOKENIZER_FILE
from .text_encoder_loader import EMBEDDED_FILES, detect_step_llm_config, locate_step_tokenizer, step_llm_weights
from .weight_files import SAFETENSORS_DTYPE_NAMES, open_weights, safetensors_header

DEFAULT_CHUNK_VALUES = 1 << 22
GGUF_ARCHITECTURES = {"dit": "stepvideo_dit", "step_llm": "step_llm"}


class Entry:
    """One output tensor: name, logical shape, storage (a FORMATS key, or None = a plain dtype), plain dtype,
    and where its values come from (a source span or in-memory bytes)."""

    def __init__(self, name, shape, storage, dtype, source=None, data=None):
        self.name, self.shape, self.storage, self.dtype = name, tuple(shape), storage, dtype
        self.source, self.data = source, data
        self.scale = None  # fp8: filled by the first pass

    @property
    def numel(self):
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self):
        if self.storage is None:
            return self.numel * self.dtype.itemsize
        fmt = FORMATS[self.storage]
        packed = fmt.packed_shape(self.shape)
        return packed[0] * packed[1] * (1 if fmt.ggml else torch.float8_e4m3fn.itemsize)


def _source_spans(weights):
    """key -> (path, byte offset, stored dtype) for a safetensors-backed WeightFiles."""
    layouts, spans = {}, {}
    for key, info in weights.info.items():
        if info.file not in layouts:
            layouts[info.file] = safetensors_layout(info.file)
        start, entries, _ = layouts[info.file]
        dtype, _, begin, _ = entries[info.stored_key]
        spans[key] = (info.file, start + begin, dtype)
    return spans


def _plan(src):
    """(kind, [Entry], metadata dict) for an official DiT or Step-LLM folder/file."""
    raw = open_weights(src)
    if is_quantized(raw):
        raise CheckpointError(f"{src} is already quantized ({raw.quantization}); convert from the official "
                              "bf16 weights.")
    kind = identify(raw.keys())
    files = {}
    if kind == "dit":
        weights = dit_weights(src)
        model = build_on_meta(lambda: StepVideoDiT(detect_dit_config(weights)))
    elif kind == "step_llm":
        weights, file_config, config_source = step_llm_weights(src)
        model = build_on_meta(lambda: StepLLM(detect_step_llm_config(weights, [(file_config, config_source)])))
        with open(locate_step_tokenizer(src), "rb") as f:
            files[STEP_TOKENIZER_FILE] = f.read()
        if config_source is not None:
            with open(config_source, "rb") as f:
                files["config.json"] = f.read()
    else:
        raise CheckpointError(f"{src} is not an official Step-Video DiT (transformer/) or Step-LLM (step_llm/) "
                              f"checkpoint: it looks like {describe(raw.keys())}.")
    spans = _source_spans(weights)
    linear = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    return kind, weights, spans, linear, files


def plan_entries(src, target):
    """(kind, [Entry], metadata) of converting ``src`` to ``target``."""
    kind, weights, spans, linear, files = _plan(src)
    entries = []
    for key in sorted(weights.keys()):
        shape = weights.shape(key)
        path, offset, dtype = spans[key]
        storage = storage_for(key, shape, key in linear, target)
        entries.append(Entry(key, shape, storage, dtype, source=(path, offset, dtype)))
    for name, data in files.items():
        entries.append(Entry(EMBEDDED_FILES[name], (len(data),), None, torch.uint8, data=data))
    metadata = {k: v for k, v in weights.metadata().items() if k.startswith("stepvideo.")}
    metadata[FORMAT_KEY] = target
    metadata["stepvideo.converted_from"] = os.path.basename(os.path.normpath(src))
    return kind, entries, metadata


def _row_chunks(entry, chunk_values):
    """Float rows (R, row length) of ``entry`` read from its source, ``chunk_values`` values at a time."""
    path, offset, dtype = entry.source
    row = entry.shape[-1] if entry.shape else 1
    rows = entry.numel // row if row else 0
    step = max(1, chunk_values // max(row, 1))
    with open(path, "rb") as f:
        for start in range(0, rows, step):
            count = min(step, rows - start)
            buffer = bytearray(count * row * dtype.itemsize)
            f.seek(offset + start * row * dtype.itemsize)
            if f.readinto(buffer) != len(buffer):
                raise CheckpointError(f"{path} ended while reading {entry.name!r}: the file is truncated.")
            yield torch.frombuffer(buffer, dtype=dtype).reshape(count, row)


def _entry_bytes(entry, chunk_values):
    """The stored bytes of ``entry``, chunk by chunk (numpy uint8 arrays)."""
    if entry.data is not None:
        yield torch.frombuffer(bytearray(entry.data), dtype=torch.uint8).numpy()
        return
    for rows in _row_chunks(entry, chunk_values):
        if entry.storage is None:
            out = rows.to(entry.dtype)
        elif entry.storage == "fp8_scaled":
            out = quantize_fp8(rows, entry.scale)
        else:
            out = quantize_rows(rows, entry.storage)
        yield out.contiguous().reshape(-1).view(torch.uint8).numpy()


def _absmax(entry, chunk_values):
    return max((float(rows.float().abs().max()) for rows in _row_chunks(entry, chunk_values) if rows.numel()),
               default=0.0)


def _write_safetensors(partial, entries, metadata, chunk_values, progress):
    """Scaled-fp8 safetensors: each fp8 weight followed by its float32 scalar ``scale_weight``; a marker."""
    layout = []
    for entry in entries:
        fp8 = entry.storage == "fp8_scaled"
        layout.append((entry.name, "F8_E4M3" if fp8 else SAFETENSORS_DTYPE_NAMES[entry.dtype], entry.shape,
                       entry.nbytes))
        if fp8:
            layout.append((entry.name[:-len(".weight")] + SCALE_SUFFIX, "F32", (), 4))
    layout.append((SCALED_FP8_MARKER, "F8_E4M3", (0,), 0))
    with open(partial, "wb") as f:
        f.write(safetensors_header(layout, metadata))
        for done, entry in enumerate(entries, 1):
            if entry.storage == "fp8_scaled":
                entry.scale = fp8_scale(_absmax(entry, chunk_values))
            for chunk in _entry_bytes(entry, chunk_values):
                f.write(chunk.tobytes())
            if entry.scale is not None:
                f.write(struct.pack("<f", entry.scale))
            if progress:
                progress(done, len(entries), entry.name)


def _write_gguf(partial, kind, entries, metadata, chunk_values, progress):
    import gguf

    writer = gguf.GGUFWriter(None, GGUF_ARCHITECTURES[kind])
    for key, value in metadata.items():
        writer.add_string(key, value)
    for entry in entries:
        raw = gguf.GGMLQuantizationType[entry.storage] if entry.storage else _gguf_plain_type(entry)
        writer.add_tensor_info(entry.name, entry.shape, None, entry.nbytes, raw_dtype=raw)  # logical shape
    writer.write_header_to_file(partial)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    out = writer.fout[0]
    writer.write_padding(out, out.tell())
    for done, entry in enumerate(entries, 1):
        for chunk in _entry_bytes(entry, chunk_values):
            chunk.tofile(out)
        writer.write_padding(out, entry.nbytes)
        if progress:
            progress(done, len(entries), entry.name)
    writer.close()


def _gguf_plain_type(entry):
    import gguf

    types = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.uint8: "I8"}
    if entry.dtype not in types:
        raise CheckpointError(f"tensor {entry.name!r} is stored as {entry.dtype}, which GGUF cannot hold here.")
    return gguf.GGMLQuantizationType[types[entry.dtype]]


def convert(src, out, target, chunk_values=DEFAULT_CHUNK_VALUES, progress=None):
    """Write the pre-quantized file for ``src`` to ``out`` (``.gguf`` for GGML targets, ``.safetensors`` for
    fp8_scaled). progress(done, total, tensor name) after each tensor. Returns {kind, target, bytes, counts}."""
    src, out = os.fspath(src), os.fspath(out)
    ggml = FORMATS[target].ggml if target in FORMATS else None
    if ggml is None:
        raise ValueError(f"unknown format {target!r}; choose one of {', '.join(FORMATS)}")
    suffix = ".gguf" if ggml else ".safetensors"
    if not out.endswith(suffix):
        raise ValueError(f"{out}: a {target} file must end with {suffix}")
    kind, entries, metadata = plan_entries(src, target)
    partial = out + ".partial"
    try:
        if ggml:
            _write_gguf(partial, kind, entries, metadata, chunk_values, progress)
        else:
            _write_safetensors(partial, entries, metadata, chunk_values, progress)
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    counts = {}
    for entry in entries:
        storage = entry.storage or str(entry.dtype).replace("torch.", "")
        counts[storage] = counts.get(storage, 0) + 1
    return {"kind": kind, "target": target, "bytes": os.path.getsize(out), "counts": counts}
