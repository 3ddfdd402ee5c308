"""Quantized weight storage and its dequantization, in plain PyTorch (CPU or GPU).

A quantized Linear keeps its ``weight`` parameter in the packed form the file stores and carries
two plain attributes that say how to read it (set by the loaders, see model_loaders/quantized_files.py):

* ``weight_format``: a key of :data:`FORMATS` ("fp8_scaled", "Q8_0", "Q6_K", "Q5_K", "Q4_K");
* ``weight_shape``: the logical (out_features, in_features).

fp8_scaled weights are float8_e4m3fn (out, in) with a float32 scalar buffer ``scale_weight``
(weight = fp8 value x scale, ComfyUI's scaled-fp8 convention). GGML weights are uint8
(out, in / block_size x block_bytes): each row is a run of blocks in llama.cpp's layouts, which
the ``gguf`` package reads and writes. Everything else about the module is a normal torch layer,
so ``module.to(device)`` and the host's offloading move the packed bytes like any other tensor.

:func:`layer_weight` is the one place a layer turns its stored weight into a compute weight:
packed -> dequantized in the activation's dtype on the activation's device; plain -> cast.
"""

from dataclasses import dataclass

import torch

QK_K = 256  # super-block size of the K-quants
DEQUANTIZE_CHUNK_VALUES = 1 << 22  # values dequantized per step: ~16 MiB per float32 temporary


@dataclass(frozen=True)
class WeightFormat:
    """How one storage format packs a (out, in) weight.

    block_size values of a row are stored in block_bytes bytes; ``bits`` is the integer width of a
    quantized value (fp8: the 3 mantissa bits + 1 implicit, for the error model in
    model_loaders/quantize.py).
    """

    name: str
    block_size: int
    block_bytes: int
    bits: int
    ggml: bool = True

    def packed_shape(self, shape):
        """Stored tensor shape for a logical (out, in) weight."""
        out_features, in_features = shape
        if not self.ggml:
            return (out_features, in_features)
        return (out_features, in_features // self.block_size * self.block_bytes)

    def bytes_per_weight(self):
        return self.block_bytes / self.block_size


FORMATS = {
    "fp8_scaled": WeightFormat("fp8_scaled", 1, 1, 4, ggml=False),
    "Q8_0": WeightFormat("Q8_0", 32, 34, 8),
    "Q6_K": WeightFormat("Q6_K", QK_K, 210, 6),
    "Q5_K": WeightFormat("Q5_K", QK_K, 176, 5),
    "Q4_K": WeightFormat("Q4_K", QK_K, 144, 4),
}


def _half(blocks, start):
    """The fp16 scalar stored at byte ``start`` of every block, as float32 (n_blocks, 1)."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()


def _dequantize_q8_0(blocks):
    """(n, 34) -> (n, 32): d (fp16) then 32 int8 values; x = d * q."""
    return _half(blocks, 0) * blocks[:, 2:].view(torch.int8).float()


def _k_scales(packed):
    """12 bytes per block -> the eight 6-bit sub-block scales and mins (n, 8) of Q4_K / Q5_K.

    Bytes 0-3 hold scales 0-3 (low 6 bits) and the top two bits of scales 4-7; bytes 4-7 the same
    for the mins; bytes 8-11 the low four bits of scales 4-7 (low nibble) and mins 4-7 (high nibble).
    """
    low, mid, high = packed[:, 0:4].int(), packed[:, 4:8].int(), packed[:, 8:12].int()
    scales = torch.cat([low & 63, (high & 15) | ((low >> 6) << 4)], dim=1)
    mins = torch.cat([mid & 63, (high >> 4) | ((mid >> 6) << 4)], dim=1)
    return scales.float(), mins.float()


def _nibbles(qs):
    """(n, 128) bytes -> (n, 8, 32) 4-bit values: byte group c (32 bytes) holds sub-block 2c in its low
    nibbles and sub-block 2c + 1 in its high nibbles."""
    groups = qs.reshape(qs.shape[0], 4, 1, 32)
    shifts = torch.tensor([0, 4], device=qs.device, dtype=torch.uint8).view(1, 1, 2, 1)
    return ((groups >> shifts) & 15).reshape(qs.shape[0], 8, 32)


def _dequantize_q4_k(blocks):
    """(n, 144) -> (n, 256): d, dmin (fp16), 12 scale bytes, 128 nibble bytes; x = d*sc*q - dmin*m."""
    scales, mins = _k_scales(blocks[:, 4:16])
    q = _nibbles(blocks[:, 16:144]).float()
    d, dmin = _half(blocks, 0), _half(blocks, 2)
    return ((d * scales)[..., None] * q - (dmin * mins)[..., None]).flatten(1)


def _dequantize_q5_k(blocks):
    """(n, 176) -> (n, 256): as Q4_K plus 32 bytes of fifth bits (bit j of byte i: sub-block j, value i)."""
    scales, mins = _k_scales(blocks[:, 4:16])
    high = blocks[:, 16:48][:, None, :]
    bits = torch.arange(8, device=blocks.device, dtype=torch.uint8).view(1, 8, 1)
    q = (_nibbles(blocks[:, 48:176]) | (((high >> bits) & 1) << 4)).float()
    d, dmin = _half(blocks, 0), _half(blocks, 2)
    return ((d * scales)[..., None] * q - (dmin * mins)[..., None]).flatten(1)


def _dequantize_q6_k(blocks):
    """(n, 210) -> (n, 256): 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, d (fp16).

    Each half (128 values) uses 64 low-nibble bytes and 32 high bytes: its four 32-value groups r take
    the low (r < 2) or high (r >= 2) nibbles of low bytes 32*(r % 2) + i and bits 2r, 2r+1 of high
    byte i; x = d * scale[16-value group] * (q - 32).
    """
    n = blocks.shape[0]
    low = blocks[:, :128].reshape(n, 2, 1, 64)
    nibble_shift = torch.tensor([0, 4], device=blocks.device, dtype=torch.uint8).view(1, 1, 2, 1)
    low = ((low >> nibble_shift) & 15).reshape(n, 8, 32)
    high = blocks[:, 128:192].reshape(n, 2, 1, 32)
    bit_shift = torch.tensor([0, 2, 4, 6], device=blocks.device, dtype=torch.uint8).view(1, 1, 4, 1)
    high = ((high >> bit_shift) & 3).reshape(n, 8, 32)
    q = ((low | (high << 4)).float() - 32).reshape(n, 16, 16)
    scales = blocks[:, 192:208].view(torch.int8).float()
    return (_half(blocks, 208)[..., None] * scales[..., None] * q).reshape(n, QK_K)


_GGML_DEQUANTIZERS = {"Q8_0": _dequantize_q8_0, "Q6_K": _dequantize_q6_k, "Q5_K": _dequantize_q5_k,
                      "Q4_K": _dequantize_q4_k}


def dequantize(packed, format_name, shape, dtype, scale=None):
    """Packed weight -> (out, in) tensor in ``dtype`` on ``packed``'s device.

    Block math runs in float32 (exactly llama.cpp's reconstruction), then one cast to ``dtype``; it goes
    DEQUANTIZE_CHUNK_VALUES values at a time, so the working set is the output plus a few small
    float32 temporaries.
    """
    fmt = FORMATS[format_name]
    if fmt.ggml:
        rows, unpack = packed.reshape(-1, fmt.block_bytes), _GGML_DEQUANTIZERS[format_name]
    else:
        factor = scale.to(device=packed.device, dtype=torch.float32)
        rows, unpack = packed.reshape(-1, shape[-1]), lambda part: part.float() * factor
    out = torch.empty(rows.shape[0], rows.shape[1] if not fmt.ggml else fmt.block_size, dtype=dtype,
                      device=packed.device)
    step = max(1, DEQUANTIZE_CHUNK_VALUES // out.shape[1])  # bounds the float32 temporaries
    for start in range(0, rows.shape[0], step):
        out[start:start + step] = unpack(rows[start:start + step])
    return out.reshape(shape)


def is_packed(module):
    """True when ``module.weight`` is stored in a quantized format (see the module docstring)."""
    return getattr(module, "weight_format", None) is not None


def packed_weight(module, dtype, device):
    """The dequantized (out, in) weight of a packed ``module`` in ``dtype`` on ``device``."""
    raw = module.weight.to(device, non_blocking=True)
    scale = getattr(module, "scale_weight", None)
    return dequantize(raw, module.weight_format, module.weight_shape, dtype, scale)


def layer_weight(module, like):
    """``module.weight`` ready to compute with tensor ``like``: its dtype and device (dequantized if packed)."""
    if is_packed(module):
        return packed_weight(module, like.dtype, like.device)
    return module.weight.to(device=like.device, dtype=like.dtype, non_blocking=True)
