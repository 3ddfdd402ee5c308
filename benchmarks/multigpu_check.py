#!/usr/bin/env python3
"""One-shot multi-GPU check of the sequence/CFG-parallel DiT (NCCL), for a machine with several GPUs.

    torchrun --nproc-per-node N benchmarks/multigpu_check.py [--layers 4] [--size 544x992x204]
                                                             [--repeats 2] [--json out.json]

(Outside the test environment, install the checkout first: `pip install --no-deps --no-build-isolation -e .`.)

A DiT of the released width (48 heads x 128, FFN 24576) with ``--layers`` blocks and random bf16 weights
(no download), inputs of the released model at ``--size`` (544x992x204 = 75,888 tokens), batch 2 (cond +
uncond). Rank 0 first runs the plain one-GPU forward (the reference and the 1-GPU time); then every
layout of the N ranks — cfg 1 x sequence N, cfg 2 x sequence N/2 (N even), and the latter with
FSDP2-sharded blocks — runs a warm-up and ``--repeats`` timed forwards. Per layout: median seconds, speed-up
over one GPU, max abs difference from the reference relative to its max, and the peak GPU memory of each
rank. Also the all-to-all bandwidth each rank achieves on a q-sized tensor. A full step of the released
model is 48/``--layers`` times the block part of these times. ``--tiny`` runs a small config on the CPU
(gloo) to try the script without GPUs.

Budget (estimated, never run here: this session had no multi-GPU machine): on 8 H100s, the reference
forward of 4 layers at 75,888 tokens takes ~5 s, each layout a few seconds: well under 2 minutes.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist

HERE = os.path.dirname(os.path.abspath(__file__))

from stepvideo_pack.multigpu.sequence_parallel import ParallelLayout, parallel_forward
from stepvideo_pack.multigpu.sharding import shard_blocks
from stepvideo_pack.networks.dit import DiTConfig, StepVideoDiT


def make_dit(config, device, dtype):
    torch.manual_seed(0)  # same weights on every rank
    dit = StepVideoDiT(config, device="cpu", dtype=torch.float32)
    for p in dit.parameters():
        p.data.normal_(0, 0.02)
    return dit.to(dtype).to(device).eval()


def make_inputs(config, size, device, dtype):
    height, width, frames = size
    gen = torch.Generator().manual_seed(1)
    latent = (2, frames // 17 * 3 or 1, config.in_channels, height // 16, width // 16)
    mask = torch.ones(2, 77 + 320)
    mask[1, 77 + 40:] = 0
    inputs = dict(hidden_states=torch.randn(latent, generator=gen), timestep=torch.tensor([0.4, 0.4]),
                  encoder_hidden_states=torch.randn(2, 320, config.caption_channels[0], generator=gen),
                  encoder_hidden_states_2=torch.randn(2, 77, config.caption_channels[1], generator=gen),
                  encoder_attention_mask=mask)
    return {k: v.to(device, dtype if k != "encoder_attention_mask" else torch.float32) for k, v in inputs.items()}


def timed(fn, repeats, device):
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        dist.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times[1:])


def alltoall_gbs(tokens, width, device, dtype, repeats=3):
    """GB/s this rank sends in an all-to-all of a (tokens/N, width) tensor (a Ulysses q, k or v)."""
    world = dist.get_world_size()
    send = torch.randn(tokens // world // world * world, width, device=device).to(dtype)
    recv = torch.empty_like(send)
    _, seconds = timed(lambda: dist.all_to_all_single(recv, send), repeats, device)
    return send.numel() * send.element_size() * (world - 1) / world / seconds / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--size", default="544x992x204", help="HEIGHTxWIDTHxFRAMES in pixels")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="small config on the CPU (gloo): a dry run")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        sys.exit("multigpu_check: no CUDA GPU here; run it under torchrun on a multi-GPU machine (or pass --tiny)")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    config = DiTConfig(num_layers=args.layers) if not args.tiny else DiTConfig(
        num_heads=4, num_layers=2, ff_inner_dim=1024, in_channels=16, out_channels=16, caption_channels=(256, 128))
    dtype = torch.bfloat16 if cuda else torch.float32
    size = tuple(int(v) for v in args.size.split("x")) if not args.tiny else (64, 128, 17)
    inputs = make_inputs(config, size, device, dtype)
    tokens = inputs["hidden_states"].shape[1] * inputs["hidden_states"].shape[3] * inputs["hidden_states"].shape[4]
    report = {"world": world, "device": torch.cuda.get_device_name(device) if cuda else "cpu", "layers": config.num_layers,
              "size": "x".join(map(str, size)), "tokens": tokens, "layouts": []}

    dit = make_dit(config, device, dtype)
    reference, single = None, None
    if rank == 0:
        with torch.no_grad():
            dit(**inputs)  # warm-up
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            reference = dit(**inputs).float()
            if cuda:
                torch.cuda.synchronize()
            single = time.perf_counter() - t0
        report["one_gpu_s"] = single
    dist.barrier()
    layouts = [(1, world, False)] + ([(2, world // 2, False), (2, world // 2, True)] if world % 2 == 0 else [])
    for cfg, sequence, shard in layouts:
        layout = ParallelLayout.create(cfg, sequence)
        model = make_dit(config, "cpu", dtype) if shard else dit
        if shard:
            shard_blocks(model, device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        out, seconds = timed(lambda: parallel_forward(model, layout, **inputs), args.repeats, device)
        peak = torch.tensor([torch.cuda.max_memory_allocated(device) if cuda else 0], device=device)
        peaks = [torch.zeros_like(peak) for _ in range(world)]
        dist.all_gather(peaks, peak)
        if rank == 0:
            error = ((out.float() - reference).abs().max() / reference.abs().max()).item()
            entry = {"cfg": cfg, "sequence": sequence, "sharded": shard, "seconds": seconds,
                     "speedup": single / seconds, "relative_error": error,
                     "peak_gib_per_rank": [round(p.item() / 2**30, 2) for p in peaks]}
            report["layouts"].append(entry)
            print(json.dumps(entry), flush=True)
    report["alltoall_gbs_rank0"] = alltoall_gbs(tokens, config.hidden_size, device, dtype)
    if rank == 0:
        print(json.dumps({k: v for k, v in report.items() if k != "layouts"}), flush=True)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
