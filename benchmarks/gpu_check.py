#!/usr/bin/env python3
"""One-shot GPU check: the full-size DiT in every stored format under a 24 GB cap, no downloads.

    python benchmarks/gpu_check.py [--cap-gib 24] [--formats fp8_scaled,Q8_0,Q4_K]
                                   [--sizes 544x992x204,544x992x68] [--json out.json]

(Outside the test environment, install the checkout first: `pip install --no-deps --no-build-isolation -e .`.)

For each format the released DiT (48 blocks, 6144 wide) is built with random weights directly in that
storage (random packed blocks with small fp16 scales: real layouts and sizes, meaningless values, so
nothing needs quantizing or downloading), the process is capped with
torch.cuda.set_per_process_memory_fraction, and as many blocks stay on the GPU as fit next to the
activations (token chunks of 8192, one sample per forward = sequential CFG); the rest are swapped in
per block from pinned CPU memory (benchmarks/block_swap.py, a stand-in for what the host's partial loading does).
One forward per size is timed after a warm-up forward at the smallest size; a CFG step is two such
forwards. Then the released-width Video-VAE (random weights) decodes one 17-frame chunk of each size
with the tile size the VAE Decode node's "auto" picks under the same cap (vae_tiling.auto_tile_px
of the memory free under the cap). Prints one line per measurement and a summary table.

Budget (estimated, never run here: no GPU was lent): about 2 minutes per format on one H100 (random
weights, pinning, a warm-up and two timed forwards of ~30 s at 75,888 tokens), so the three default
formats finish well within 10 minutes; add bf16, Q6_K, Q5_K with --formats when there is time. Without
CUDA it stops with a clear message (``--tiny`` runs the same code on a small config on the CPU).
"""

import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

from stepvideo_pack.model_loaders.materialize import build_on_meta
from stepvideo_pack.model_loaders.memory import GIB, dit_activation_bytes
from stepvideo_pack.model_loaders.quantize import storage_for
from stepvideo_pack.networks import attention as attention_module
from benchmarks.block_swap import BlockSwap
from stepvideo_pack.networks.dit import DiTConfig, StepVideoDiT
from stepvideo_pack.networks.ops import CastOps
from stepvideo_pack.networks.quant_formats import FORMATS
from stepvideo_pack.networks.vae import VAEConfig, VideoVAE
from stepvideo_pack.networks.vae_tiling import auto_tile_px, work_bytes_per_px

ALL_FORMATS = ("bf16",) + tuple(FORMATS)
CHUNK_TOKENS = 8192
SCALE_OFFSETS = {"Q8_0": (0,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}  # fp16 factors inside a block
TINY = DiTConfig(num_heads=2, num_layers=2, caption_channels=(256, 64), ff_inner_dim=1024)


def random_packed(fmt, shape, generator_device):
    """Random packed bytes of GGML format ``fmt`` for a (out, in) weight, with small fp16 block factors."""
    spec = FORMATS[fmt]
    rows, cols = spec.packed_shape(shape)
    raw = torch.randint(0, 256, (rows * cols // spec.block_bytes, spec.block_bytes), dtype=torch.uint8,
                        device=generator_device)
    factor = torch.tensor([2e-4], dtype=torch.float16).view(torch.uint8).to(generator_device)
    for offset in SCALE_OFFSETS[fmt]:
        raw[:, offset:offset + 2] = factor
    return raw.reshape(rows, cols).cpu()


def build_dit(config, fmt, generator_device):
    """The DiT with random weights stored as ``fmt`` on the CPU (layers that dequantize per call)."""
    model = build_on_meta(lambda: StepVideoDiT(config, operations=CastOps))
    for prefix, module in model.named_modules():
        for leaf, param in list(module.named_parameters(recurse=False)):
            key = f"{prefix}.{leaf}" if prefix else leaf
            is_linear = leaf == "weight" and isinstance(module, torch.nn.Linear)
            storage = None if fmt == "bf16" else storage_for(key, tuple(param.shape), is_linear, fmt)
            if storage is None:
                value = (torch.randn(param.shape, device=generator_device) * 0.02).to(torch.bfloat16).cpu()
            elif storage == "fp8_scaled":
                value = (torch.randn(param.shape, device=generator_device) * 16).to(torch.float8_e4m3fn).cpu()
                module.register_buffer("scale_weight", torch.tensor(1e-3))
            else:
                value = random_packed(storage, tuple(param.shape), generator_device)
            module._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
            if storage is not None:
                module.weight_format, module.weight_shape = storage, tuple(param.shape)
    return model.eval()


def module_bytes(module):
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def latent_dims(size):
    width, height, frames = (int(v) for v in size.split("x"))
    return (frames // 17) * 3, height // 16, width // 16


def dit_inputs(config, dims, device):
    frames, height, width = dims
    gen = torch.Generator(device=device).manual_seed(0)
    return dict(hidden_states=torch.randn(1, frames, config.in_channels, height, width, device=device, generator=gen,
                                          dtype=torch.bfloat16),
                timestep=torch.tensor([0.5], device=device),
                encoder_hidden_states=torch.randn(1, 320, config.caption_channels[0], device=device,
                                                  dtype=torch.bfloat16, generator=gen),
                encoder_hidden_states_2=torch.randn(1, 77, config.caption_channels[1], device=device,
                                                    dtype=torch.bfloat16, generator=gen),
                encoder_attention_mask=torch.ones(1, 397, device=device))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak(device):
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def run_format(config, fmt, sizes, device, cap, backend, log):
    start = time.perf_counter()
    model = build_dit(config, fmt, device)
    built = time.perf_counter() - start
    blocks = list(model.transformer_blocks)
    block = module_bytes(blocks[0])
    others = module_bytes(model) - block * len(blocks)
    largest = max(latent_dims(s)[0] * latent_dims(s)[1] * latent_dims(s)[2] for s in sizes)
    frames, height, width = next(latent_dims(s) for s in sizes if
                                 latent_dims(s)[0] * latent_dims(s)[1] * latent_dims(s)[2] == largest)
    activations = dit_activation_bytes(config, 1, frames, height, width, torch.bfloat16, CHUNK_TOKENS)
    working = 4 * config.ff_inner_dim * config.hidden_size  # one dequantized FF weight in bf16 + temporaries
    free_for_blocks = cap - others - activations - 3 * working - 1.5 * GIB
    resident = max(0, min(len(blocks), int(free_for_blocks // block)))
    for name, module in model.named_children():
        if name != "transformer_blocks":
            module.to(device)
    model.scale_shift_table.data = model.scale_shift_table.data.to(device)
    swap = BlockSwap(blocks, device, resident=resident)
    model.chunk_tokens = CHUNK_TOKENS
    model.attention_backend = backend
    results = []
    with torch.no_grad():
        smallest = min(sizes, key=lambda s: latent_dims(s)[0] * latent_dims(s)[1] * latent_dims(s)[2])
        model(**dit_inputs(config, latent_dims(smallest), device))  # warm-up (kernels, pinned copies)
        for size in sizes:
            inputs = dit_inputs(config, latent_dims(size), device)
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            model(**inputs)
            sync(device)
            seconds = time.perf_counter() - start
            row = {"format": fmt, "size": size, "seconds_per_forward": seconds, "seconds_per_cfg_step": 2 * seconds,
                   "peak_gib": peak(device) / GIB, "resident_blocks": resident, "blocks": len(blocks),
                   "weights_gib": module_bytes(model) / GIB, "build_seconds": built}
            log(row)
            results.append(row)
            del inputs
    del model, swap
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def free_under_cap(device, cap):
    """What the VAE Decode node's "auto" would count as free, under the per-process cap (CPU: the cap)."""
    if device.type != "cuda":
        return cap
    free, _ = torch.cuda.mem_get_info(device)
    return min(free, cap - torch.cuda.memory_allocated(device))


def vae_decode_peaks(sizes, device, cap, tiny, log):
    config = VAEConfig()
    if tiny:
        from stepvideo_pack.networks.vae import VAEDecoderConfig, VAEEncoderConfig

        config = VAEConfig(VAEEncoderConfig(ch=32, ch_mult=(1, 1, 2, 2), z_channels=16),
                           VAEDecoderConfig(ch=32, ch_mult=(1, 1, 2, 2), z_channels=16))
    vae = build_on_meta(lambda: VideoVAE(config))
    vae = vae.to_empty(device=device).to(torch.bfloat16 if device.type == "cuda" else torch.float32)
    with torch.no_grad():
        for p in vae.parameters():
            p.normal_(0, 0.02)
    rows = []
    for size in sizes:
        _, height, width = latent_dims(size)
        latent = torch.randn(1, 3, config.decoder.z_channels, height, width, device=device, dtype=vae.dtype)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        with torch.no_grad():
            tile_px = auto_tile_px(free_under_cap(device, cap), work_bytes_per_px(vae, "decode"), height * 16,
                                   width * 16, config.spatial_factor)
            frames = vae.decode(latent, tile_px=tile_px, overlap_px=64, output_device=torch.device("cpu"))
        sync(device)
        row = {"vae_size": size, "tile_px": tile_px, "frames": int(frames.shape[1]),
               "decode_seconds": time.perf_counter() - start, "decode_peak_gib": peak(device) / GIB}
        log(row)
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap-gib", type=float, default=24.0)
    parser.add_argument("--formats", default="fp8_scaled,Q8_0,Q4_K", help=f"any of {','.join(ALL_FORMATS)}")
    parser.add_argument("--sizes", default="544x992x204,544x992x68")
    parser.add_argument("--attention", default="flash_attn", choices=attention_module.BACKENDS)
    parser.add_argument("--tiny", action="store_true", help="small config on the CPU: checks the script only")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        device, config, sizes = torch.device("cpu"), TINY, ["64x96x17", "32x48x17"]
        cap = args.cap_gib * GIB
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu_check: no CUDA device is available (torch.cuda.is_available() is False). This check needs "
                     "an NVIDIA GPU; use --tiny to run the script on a small config on the CPU.")
        device, config, sizes = torch.device("cuda"), DiTConfig(), args.sizes.split(",")
        total = torch.cuda.get_device_properties(device).total_memory
        cap = min(args.cap_gib * GIB, total)
        torch.cuda.set_per_process_memory_fraction(cap / total, device)
        print(f"GPU: {torch.cuda.get_device_name(device)}, {total / GIB:.1f} GiB, capped at {cap / GIB:.1f} GiB; "
              f"torch {torch.__version__}", flush=True)
    found = {b: attention_module.resolve_backend(b)[0] == b for b in attention_module.BACKENDS}
    backend = attention_module.resolve_backend(args.attention)[0]
    print(f"attention backends found: {found}; using {backend}", flush=True)
    report = {"device": str(device), "cap_gib": cap / GIB, "attention_found": found, "attention": backend,
              "dit": [], "vae": []}

    def log(row):
        print(json.dumps(row), flush=True)

    for fmt in args.formats.split(","):
        try:
            report["dit"] += run_format(config, fmt, sizes, device, cap, backend, log)
        except torch.cuda.OutOfMemoryError as e:
            log({"format": fmt, "error": f"out of memory under the cap: {e}"})
            torch.cuda.empty_cache()
    report["vae"] = vae_decode_peaks(sizes, device, cap, args.tiny, log)
    print("\n| format | size | s / forward | s / CFG step | peak GiB | blocks resident |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in report["dit"]:
        print(f"| {row['format']} | {row['size']} | {row['seconds_per_forward']:.1f} | {row['seconds_per_cfg_step']:.1f} "
              f"| {row['peak_gib']:.1f} | {row['resident_blocks']}/{row['blocks']} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
