#!/usr/bin/env python3
"""Video-VAE decode: our VideoVAE vs the official AutoencoderKL, same decoder config, weights and input.

    python benchmarks/vae_decode.py [--official PATH] [--height 64 --width 112] [--latent-frames 3]
                                    [--runs 3] [--variants official,ours,tiled] [--tile-px 128 --overlap-px 32]

Variants: ``official`` (AutoencoderKL.decode of a checkout, imported at run time; skipped with a
message when there is none: set OFFICIAL_T2V or --official), ``ours`` (VideoVAE.decode, streamed
chunk by chunk, exact) and ``tiled`` (VideoVAE.decode with spatial tiles). Every run of every
variant is a fresh subprocess, the variants interleaved run by run, so slow phases of a shared
machine hit all variants alike. Memory: torch's CPU allocations go through malloc, so the process
RSS high-water mark (VmHWM, restarted just before the decode call) is the honest peak; the table
gives it whole and above the RSS before the call (weights + input). Time: median over runs of
the decode call alone, wall clock and CPU time of the process (all threads; on a machine shared
with other jobs the CPU time is the steadier of the two).
Both sides build the decoder only (the encoder plays no part in decoding), on the meta device, then
fill every parameter in place from a generator seeded by its name, so the weights are identical
and no second copy is ever held. Default decoder: the released one (ch 128, mult (1, 2, 4, 4),
z 64, temporal_up_layers (2, 3)), float32.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

from benchmarks.official_import import default_checkout, import_official, official_available
from harness.peak_rss import reset_peak, status_bytes
from stepvideo_pack.networks.vae import VAEConfig, VAEDecoderConfig, VideoVAE
from stepvideo_pack.networks.vae_blocks import store_conv_weights_channels_last

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def fill_deterministic(module, dtype):
    """Every parameter from a generator seeded by its name: equal weights for equal names, in place."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            values = torch.empty(param.shape, dtype=torch.float32)
            if param.dim() > 1:
                values.normal_(0.0, param[0].numel() ** -0.5, generator=gen)
            elif "norm" in name and name.endswith("weight"):
                values.normal_(1.0, 0.1, generator=gen)
            else:
                values.normal_(0.0, 0.02, generator=gen)
            param.copy_(values)
    return module.to(dtype)


def our_decoder(config, dtype):
    with torch.device("meta"):
        vae = VideoVAE(VAEConfig(decoder=config))
    del vae.encoder  # decode-only, like the official side
    return store_conv_weights_channels_last(fill_deterministic(vae.to_empty(device="cpu"), dtype)).eval()


def official_decoder(checkout, config, dtype):
    """AutoencoderKL with only its v2 decoder built (the official decode/mix methods, unchanged)."""
    import_official(checkout)
    from stepvideo.vae import vae as official
    official.base_group_norm.spatial = True  # what AutoencoderKL(version=2) sets
    model = official.AutoencoderKL.__new__(official.AutoencoderKL)
    torch.nn.Module.__init__(model)
    with torch.device("meta"):
        model.decoder = official.VideoDecoder(
            ch=config.ch, z_channels=config.z_channels, ch_mult=config.ch_mult, num_res_blocks=config.num_res_blocks,
            temporal_up_layers=list(config.temporal_up_layers), temporal_downsample=config.temporal_downsample,
            version=2)
    model.frame_len, model.latent_len, model.world_size = VAEConfig(decoder=config).frame_len, 3, 1
    return fill_deterministic(model.to_empty(device="cpu"), dtype).eval()


def run_child(args):
    """One decode in this process -> {"seconds", "cpu_seconds", "base_bytes", "peak_bytes"}; output saved if asked."""
    if args.threads:
        torch.set_num_threads(args.threads)
    config = VAEDecoderConfig()
    dtype = DTYPES[args.dtype]
    if args.child == "official":
        model = official_decoder(args.official, config, dtype)
        decode = model.decode
    else:
        model = our_decoder(config, dtype)
        tile = args.tile_px if args.child == "tiled" else None
        decode = lambda z: model.decode(z, tile_px=tile, overlap_px=args.overlap_px)  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    factor = 16
    latent = torch.randn(1, args.latent_frames, config.z_channels, args.height // factor, args.width // factor,
                         generator=gen).to(dtype)
    reset_peak()  # building and filling the weights (transient copies) is not part of the decode
    base = status_bytes("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.no_grad():
        video = decode(latent)
    result = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
              "base_bytes": base, "peak_bytes": status_bytes("VmHWM")}
    if args.save:
        torch.save(video.float().clone(), args.save)
    return result


def child_command(args, variant, save):
    return [sys.executable, os.path.abspath(__file__), "--child", variant, "--official", str(args.official),
            "--height", str(args.height), "--width", str(args.width), "--latent-frames", str(args.latent_frames),
            "--tile-px", str(args.tile_px), "--overlap-px", str(args.overlap_px), "--dtype", args.dtype,
            "--threads", str(args.threads), "--save", save or ""]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", default=default_checkout(), help="official Step-Video-T2V checkout")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=112)
    parser.add_argument("--latent-frames", type=int, default=3, help="3 per 17-frame chunk")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default="official,ours,tiled")
    parser.add_argument("--tile-px", type=int, default=128)
    parser.add_argument("--overlap-px", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return

    variants = args.variants.split(",")
    if "official" in variants and not official_available(args.official):
        print(f"official column skipped: no Step-Video-T2V checkout at {args.official!r} "
              "(set OFFICIAL_T2V or pass --official PATH)")
        variants.remove("official")
    frames = VAEConfig().decoded_frames(args.latent_frames)
    print(f"decode (1, {args.latent_frames}, 64, {args.height // 16}, {args.width // 16}) -> {frames} frames "
          f"{args.height}x{args.width}, released decoder width, {args.dtype}, torch {torch.__version__}, "
          f"{args.threads or torch.get_num_threads()} threads, {os.cpu_count()} CPUs; tiles {args.tile_px} px, "
          f"overlap {args.overlap_px} px")
    results = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as folder:
        outputs = {v: os.path.join(folder, f"{v}.pt") for v in variants}
        for run in range(args.runs):
            for variant in variants:
                save = outputs[variant] if run == 0 else None
                out = subprocess.run(child_command(args, variant, save), check=True, capture_output=True, text=True)
                results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"  run {run + 1} {variant}: {results[variant][-1]['seconds']:.1f} s", flush=True)
        videos = {v: torch.load(outputs[v]) for v in variants}

    reference = "official" if "official" in variants else variants[0]
    def median(variant, key):
        return statistics.median(r[key] for r in results[variant])

    def peak(variant, above_base=False):
        return max(r["peak_bytes"] - (r["base_bytes"] if above_base else 0) for r in results[variant])

    print(f"\n| variant | wall s (median of {args.runs}) | CPU s | speed vs {reference} (wall / CPU) | "
          f"peak RSS GiB (vs {reference}) | peak above weights+input GiB (vs {reference}) | "
          f"max abs diff vs {reference} |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for variant in variants:
        diff = (videos[variant].double() - videos[reference].double()).abs().max().item()
        print(f"| {variant} | {median(variant, 'seconds'):.1f} | {median(variant, 'cpu_seconds'):.1f} | "
              f"{median(reference, 'seconds') / median(variant, 'seconds'):.2f}x / "
              f"{median(reference, 'cpu_seconds') / median(variant, 'cpu_seconds'):.2f}x | "
              f"{peak(variant) / 2**30:.2f} ({peak(variant) / peak(reference):.2f}) | "
              f"{peak(variant, True) / 2**30:.2f} ({peak(variant, True) / peak(reference, True):.2f}) | {diff:.2e} |")
    if "tiled" in variants and "ours" in variants:
        diff = (videos["tiled"].double() - videos["ours"].double()).abs()
        time_ratio = median("tiled", "seconds") / median("ours", "seconds")
        print(f"\ntiled vs ours (untiled): peak RSS {peak('tiled') / peak('ours'):.2f}x, peak above weights+input "
              f"{peak('tiled', True) / peak('ours', True):.2f}x, time {time_ratio:.2f}x; "
              f"max abs diff {diff.max().item():.3e}, mean abs diff {diff.mean().item():.3e} "
              f"(mean |video| {videos['ours'].abs().mean().item():.3f})")


if __name__ == "__main__":
    main()
