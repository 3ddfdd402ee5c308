"""Quantizing weights into the formats of networks/quant_formats.py, and which tensor gets which.

**The storage rule** (:func:`storage_for`, the one place it is decided), per tensor of the official
state dict:

1. Only the weights of Linear layers are quantized. Everything else stays as it is stored in bf16
   (fp32 sources: fp32): norm weights and biases, biases, the modulation tables
   (``scale_shift_table``), the patch-embedding conv, and the token embedding (Step-LLM's 65536 x
   6144 table is read a few rows at a time from the memory-mapped file, so its size costs disk, not
   RAM or VRAM, and keeping it exact costs nothing at run time).
2. A Linear weight whose rows are not a whole number of the format's blocks falls back to Q8_0
   (32-value blocks) if that fits, else stays bf16 (only the tiny test models have such widths).
3. With a K-quant target (Q6_K, Q5_K, Q4_K), the Linear layers outside the repeated blocks (the
   DiT's timestep/modulation, caption and output projections: 1.2% of its parameters) take Q8_0:
   they run once per step and steer every block.
4. Every other Linear weight takes the target format.

Quantizers work on float32 rows (R, in) and return the packed bytes (R, packed width); they are
written from the block layouts (llama.cpp's, readable by the ``gguf`` package, which also supplies
Q8_0): Q4_K/Q5_K fit a scale and a min per 32-value sub-block by a small search over the
quantization step with a least-squares refit (what llama.cpp's reference quantizer does, without an
importance matrix), then store those as 6-bit multiples of two fp16 super-block factors; Q6_K fits a
signed scale per 16 values and stores it as an int8 multiple of one fp16 factor. fp8 uses one float32
scale per tensor: absmax / 448 (e4m3fn's largest value).
"""

import re

import numpy as np
import torch

from ..networks.quant_formats import FORMATS, QK_K

TARGETS = tuple(FORMATS)
FP8_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448
REPEATED_BLOCK = re.compile(r"(^|\.)(transformer_blocks|layers)\.\d+\.")
SEARCH_STEPS = torch.linspace(-1.0, 1.0, 21)  # quantization-step candidates around (max - min) / levels


def storage_for(key, shape, is_linear_weight, target):
    """Format name for tensor ``key`` of ``shape`` under ``target`` (a key of FORMATS), or None = keep."""
    if target not in FORMATS:
        raise ValueError(f"unknown quantization format {target!r}; choose one of {', '.join(TARGETS)}")
    if not is_linear_weight or len(shape) != 2:
        return None
    fmt = target
    if FORMATS[target].block_size == QK_K and not REPEATED_BLOCK.search(key):
        fmt = "Q8_0"
    if shape[1] % FORMATS[fmt].block_size:
        fmt = "Q8_0" if shape[1] % FORMATS["Q8_0"].block_size == 0 else None
    return fmt


# --- fp8 --------------------------------------------------------------------------------------------------

def fp8_scale(absmax):
    """The per-tensor scale for a tensor whose largest magnitude is ``absmax`` (1.0 for an all-zero tensor)."""
    return float(torch.tensor(absmax / FP8_MAX if absmax > 0 else 1.0, dtype=torch.float32))  # as stored


def quantize_fp8(rows, scale):
    """float rows -> float8_e4m3fn values of rows / scale (round to nearest; |rows| <= absmax by construction)."""
    return (rows.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


# --- GGML blocks ------------------------------------------------------------------------------------------

def _half_bytes(values):
    """(n,) float -> (fp16-rounded float32 values (n, 1), their bytes (n, 2))."""
    half = values.to(torch.float16).reshape(-1, 1)
    return half.float(), half.view(torch.uint8)


def _fit_affine(x, levels):
    """Per row of x (m, k): scale >= 0 and offset <= 0 with x ~ scale * q + offset, q in 0..levels.

    Tries the quantization steps (max - min) / (levels + s), s in SEARCH_STEPS, refits scale and
    offset by least squares on each assignment, keeps the smallest squared error.
    """
    low = x.min(dim=1).values.clamp(max=0)
    span = (x.max(dim=1).values - low).clamp(min=1e-30)
    count = x.shape[1]
    best = (torch.full_like(low, float("inf")), span / levels, low)
    for step in SEARCH_STEPS:
        q = ((x - low[:, None]) * ((levels + step) / span)[:, None]).round().clamp(0, levels)
        sq, sqq, sx, sqx = q.sum(1), (q * q).sum(1), x.sum(1), (q * x).sum(1)
        det = count * sqq - sq * sq
        ok = det > 0
        scale = torch.where(ok, (count * sqx - sq * sx) / det.clamp(min=1e-30), span / levels)
        offset = torch.where(ok, (sqq * sx - sq * sqx) / det.clamp(min=1e-30), low)
        positive = offset > 0  # the offset must stay <= 0 (stored as a non-negative "min")
        scale = torch.where(positive, sqx / sqq.clamp(min=1e-30), scale).clamp(min=0)
        offset = offset.clamp(max=0)
        error = ((scale[:, None] * q + offset[:, None] - x) ** 2).sum(1)
        better = error < best[0]
        best = tuple(torch.where(better, new, old) for new, old in zip((error, scale, offset), best))
    return best[1], -best[2]


def _pack_k_scales(scales, mins):
    """Eight 6-bit scales and mins (n, 8) -> the 12 bytes of Q4_K/Q5_K (layout in quant_formats._k_scales)."""
    low = scales[:, :4] | ((scales[:, 4:] >> 4) << 6)
    mid = mins[:, :4] | ((mins[:, 4:] >> 4) << 6)
    high = (scales[:, 4:] & 15) | ((mins[:, 4:] & 15) << 4)
    return torch.cat([low, mid, high], dim=1).to(torch.uint8)


def _affine_k_blocks(rows, levels):
    """Q4_K / Q5_K common part: (n, 256) -> (d, dmin bytes (n, 4), scale bytes (n, 12), q (n, 8, 32) int)."""
    n = rows.shape[0]
    sub = rows.reshape(n * 8, 32)
    scale, minimum = (t.reshape(n, 8) for t in _fit_affine(sub, levels))
    d, d_bytes = _half_bytes(scale.max(dim=1).values / 63)
    dmin, dmin_bytes = _half_bytes(minimum.max(dim=1).values / 63)
    sc = (scale / d.clamp(min=1e-30)).round().clamp(0, 63).int()
    mn = (minimum / dmin.clamp(min=1e-30)).round().clamp(0, 63).int()
    step = (d * sc).reshape(n, 8, 1)
    offset = (dmin * mn).reshape(n, 8, 1)
    q = ((rows.reshape(n, 8, 32) + offset) / step.clamp(min=1e-30)).round().clamp(0, levels)
    q = torch.where(step > 0, q, torch.zeros_like(q)).int()
    return torch.cat([d_bytes, dmin_bytes], dim=1), _pack_k_scales(sc, mn), q


def _nibble_bytes(q):
    """q (n, 8, 32) with values < 16 -> (n, 128): sub-block 2c in the low, 2c + 1 in the high nibbles."""
    return (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(q.shape[0], 128).to(torch.uint8)


def _quantize_q4_k(rows):
    factors, scales, q = _affine_k_blocks(rows, 15)
    return torch.cat([factors, scales, _nibble_bytes(q)], dim=1)


def _quantize_q5_k(rows):
    factors, scales, q = _affine_k_blocks(rows, 31)
    bit = torch.arange(8, dtype=torch.int32).view(1, 8, 1)
    fifth = (((q >> 4) & 1) << bit).sum(dim=1).to(torch.uint8)  # (n, 32): bit j = sub-block j
    return torch.cat([factors, scales, fifth, _nibble_bytes(q & 15)], dim=1)


def _quantize_q6_k(rows):
    """(n, 256) -> (n, 210); layout in quant_formats._dequantize_q6_k."""
    n = rows.shape[0]
    sub = rows.reshape(n * 16, 16)
    peak = sub.abs().max(dim=1).values.clamp(min=1e-30)
    best_error = torch.full_like(peak, float("inf"))
    best_scale = peak / 31
    for step in SEARCH_STEPS:
        q = (sub * ((31.5 + step / 2) / peak)[:, None]).round().clamp(-32, 31)
        scale = (q * sub).sum(1) / (q * q).sum(1).clamp(min=1e-30)
        error = ((scale[:, None] * q - sub) ** 2).sum(1)
        better = error < best_error
        best_error, best_scale = torch.where(better, error, best_error), torch.where(better, scale, best_scale)
    best_scale = best_scale.reshape(n, 16)
    d, d_bytes = _half_bytes(best_scale.abs().max(dim=1).values / 127)
    sc = (best_scale / d.clamp(min=1e-30)).round().clamp(-127, 127)
    step = (d * sc).reshape(n, 16, 1)
    q = (rows.reshape(n, 16, 16) / torch.where(step == 0, torch.ones_like(step), step)).round().clamp(-32, 31)
    q = (torch.where(step == 0, torch.zeros_like(q), q) + 32).int().reshape(n, 2, 4, 32)  # half, group, value
    low = torch.cat([q[:, :, 0] & 15 | ((q[:, :, 2] & 15) << 4), (q[:, :, 1] & 15) | ((q[:, :, 3] & 15) << 4)],
                    dim=2)
    shift = (2 * torch.arange(4, dtype=torch.int32)).view(1, 1, 4, 1)
    high = ((q >> 4) << shift).sum(dim=2)  # (n, 2, 32)
    return torch.cat([low.reshape(n, 128).to(torch.uint8), high.reshape(n, 64).to(torch.uint8),
                      sc.to(torch.int8).view(torch.uint8), d_bytes], dim=1)


def _quantize_q8_0(rows):
    import gguf  # the reference implementation (bit-exact with llama.cpp's)

    packed = gguf.quants.quantize(rows.numpy(), gguf.GGMLQuantizationType.Q8_0)
    return torch.from_numpy(np.ascontiguousarray(packed)).reshape(-1, FORMATS["Q8_0"].block_bytes)


_GGML_QUANTIZERS = {"Q8_0": _quantize_q8_0, "Q6_K": _quantize_q6_k, "Q5_K": _quantize_q5_k,
                    "Q4_K": _quantize_q4_k}


def quantize_rows(rows, format_name):
    """float rows (R, in) -> packed uint8 (R, in / block_size x block_bytes) in GGML format ``format_name``."""
    fmt = FORMATS[format_name]
    blocks = rows.float().reshape(-1, fmt.block_size).contiguous()
    return _GGML_QUANTIZERS[format_name](blocks).reshape(rows.shape[0], -1)
