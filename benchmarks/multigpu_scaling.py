#!/usr/bin/env python3
"""Multi-GPU DiT: measured scaling on this machine, and the communication / speed-up on paper for the real size.

    python benchmarks/multigpu_scaling.py [--repeats 5] [--gpu-tflops 400] [--link-gbs 300 25]

1. Measured (CPU, gloo, side by side in one run): a random-weight DiT (8 heads x 128, 4 layers) forward of a
   [cond; uncond] batch of 2 at 3 x 16 x 32 latents (1536 tokens), 1 process x 1 thread vs 2 processes x
   1 thread each as sequence 2 (Ulysses) and as CFG 2; median seconds per forward and the speed-up.
   Also the parameter bytes each rank holds with the blocks whole and FSDP2-sharded.
2. Computed for the released DiT (48 layers, 48 heads x 128) at 544x992x204 (75,888 tokens), one sampling step
   (cond + uncond): the Ulysses all-to-all bytes each rank sends, the FSDP2 weight all-gather bytes, the
   parameter bytes per rank, and the step time on paper: FLOPs / (ranks x --gpu-tflops) plus the bytes each
   rank sends / link bandwidth (no overlap assumed, so a lower bound on the speed-up), for each --link-gbs.
"""

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HERE = os.path.dirname(os.path.abspath(__file__))

from stepvideo_pack.model_loaders.materialize import build_on_meta
from stepvideo_pack.multigpu.pool import free_port
from stepvideo_pack.multigpu.sequence_parallel import ParallelLayout, parallel_forward
from stepvideo_pack.multigpu.sharding import resident_parameter_bytes, shard_blocks
from stepvideo_pack.networks.dit import DiTConfig, StepVideoDiT

BENCH = DiTConfig(num_heads=8, num_layers=4, ff_inner_dim=4096, in_channels=16, out_channels=16,
                  caption_channels=(1024, 256))
LATENT = (3, 16, 32)  # frames, height, width -> 1536 tokens
RELEASED = DiTConfig()
VIDEO = (544, 992, 204)


def bench_inputs(config, seed=0):
    gen = torch.Generator().manual_seed(seed)
    frames, height, width = LATENT
    mask = torch.ones(2, 77 + 64)
    mask[1, 77 + 20:] = 0
    return dict(hidden_states=torch.randn(2, frames, config.in_channels, height, width, generator=gen),
                timestep=torch.tensor([0.3, 0.3]),
                encoder_hidden_states=torch.randn(2, 64, config.caption_channels[0], generator=gen),
                encoder_hidden_states_2=torch.randn(2, 77, config.caption_channels[1], generator=gen),
                encoder_attention_mask=mask)


def bench_dit():
    torch.manual_seed(0)
    dit = StepVideoDiT(BENCH)
    for p in dit.parameters():
        p.data.normal_(0, 0.02)
    return dit.eval()


def rank_main(rank, world, port, layouts, repeats, queue):
    """Time ``parallel_forward`` for each (cfg, sequence, shard) layout of ``world`` ranks; rank 0 reports."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    inputs = bench_inputs(BENCH)
    for cfg, sequence, shard in layouts:
        layout = ParallelLayout.create(cfg, sequence)
        dit = bench_dit()
        if shard:
            shard_blocks(dit, "cpu")
        times = []
        for i in range(repeats + 1):
            dist.barrier()
            t0 = time.perf_counter()
            parallel_forward(dit, layout, **inputs)
            times.append(time.perf_counter() - t0)
        if rank == 0:
            queue.put(((cfg, sequence, shard), statistics.median(times[1:]), resident_parameter_bytes(dit)))
    dist.destroy_process_group()


def measure(world, layouts, repeats):
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(rank_main, args=(world, free_port(), layouts, repeats, queue), nprocs=world, join=True)
    return [queue.get() for _ in layouts]


def parameter_counts(config):
    """(block parameters, other parameters) of a DiT, counted on the meta device."""
    dit = build_on_meta(lambda: StepVideoDiT(config))
    blocks = sum(p.numel() for p in dit.transformer_blocks.parameters())
    return blocks, sum(p.numel() for p in dit.parameters()) - blocks


def step_costs(config, tokens, context_tokens, world, cfg, bytes_per_value=2):
    """One sampling step (2 rows, batched into one forward per rank) at ``world`` ranks = cfg x sequence: FLOPs of
    all ranks, bytes each rank sends in the Ulysses all-to-alls, bytes each rank receives in FSDP2 weight
    all-gathers, parameter bytes per rank."""
    blocks, other = parameter_counts(config)
    d, layers, sequence = config.hidden_size, config.num_layers, world // cfg
    rows_per_rank = 2 // cfg
    flops_row = 2 * blocks * tokens + layers * (4 * tokens * tokens * d + 4 * tokens * context_tokens * d)
    alltoall = rows_per_rank * layers * 4 * (tokens / sequence) * d * bytes_per_value * (sequence - 1) / sequence
    weights = blocks * bytes_per_value
    gather = weights * (world - 1) / world  # every block gathered once per forward; one forward per rank per step
    return {"flops": 2 * flops_row, "alltoall_bytes": alltoall, "fsdp_gather_bytes": gather,
            "params_whole": (blocks + other) * bytes_per_value, "params_sharded": (blocks / world + other) * bytes_per_value}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu-tflops", type=float, default=400.0, help="effective bf16 TFLOP/s of one GPU")
    parser.add_argument("--link-gbs", type=float, nargs="+", default=[300.0, 25.0],
                        help="GB/s each GPU sends in an all-to-all (NVLink/NVSwitch ~300, PCIe 4.0 x16 ~25)")
    args = parser.parse_args()

    print(f"## Measured: {os.cpu_count()} CPU cores, torch {torch.__version__}, gloo; DiT {BENCH.num_heads} heads x "
          f"{BENCH.head_dim}, {BENCH.num_layers} layers, batch 2 (cond+uncond), {LATENT[0] * LATENT[1] * LATENT[2]} "
          f"tokens, median of {args.repeats}")
    single = measure(1, [(1, 1, False)], args.repeats)
    double = measure(2, [(1, 2, False), (2, 1, False), (1, 2, True)], args.repeats)
    base = single[0][1]
    print("| ranks x threads | layout | s / forward | speed-up | parameter MB per rank |")
    print("| --- | --- | --- | --- | --- |")
    for (cfg, sequence, shard), seconds, params in single + double:
        ranks = cfg * sequence
        print(f"| {ranks} x 1 | cfg {cfg} x sequence {sequence}{', blocks sharded' if shard else ''} | "
              f"{seconds:.3f} | {base / seconds:.2f}x | {params / 2**20:.1f} |")

    height, width, frames = VIDEO
    tokens = (frames // 17 * 3) * (height // 16) * (width // 16)
    context = 77 + 320
    print(f"\n## Computed: released DiT ({RELEASED.num_layers} layers, {RELEASED.num_heads} heads x "
          f"{RELEASED.head_dim}), {height}x{width}x{frames} = {tokens} tokens, bf16, one step (cond + uncond); "
          f"{args.gpu_tflops:.0f} TFLOP/s per GPU")
    one = step_costs(RELEASED, tokens, context, 1, 1)
    t1 = one["flops"] / (args.gpu_tflops * 1e12)
    print(f"1 GPU: {one['flops'] / 1e15:.1f} PFLOP per step -> {t1:.1f} s; weights {one['params_whole'] / 2**30:.1f} GiB")
    links = " | ".join(f"speed-up @ {g:.0f} GB/s" for g in args.link_gbs)
    print(f"| ranks | layout | all-to-all GB sent per rank per step | FSDP2 gather GB per rank per step | "
          f"weights GiB per rank (whole / sharded) | {links} |")
    print("| --- | --- | --- | --- | --- |" + " --- |" * len(args.link_gbs))
    for world in (2, 4, 8):
        for cfg in (1, 2):
            c = step_costs(RELEASED, tokens, context, world, cfg)
            compute = c["flops"] / (world * args.gpu_tflops * 1e12)
            speedups = " | ".join(f"{t1 / (compute + c['alltoall_bytes'] / (g * 1e9)):.2f}x" for g in args.link_gbs)
            print(f"| {world} | cfg {cfg} x sequence {world // cfg} | {c['alltoall_bytes'] / 1e9:.1f} | "
                  f"{c['fsdp_gather_bytes'] / 1e9:.1f} | {c['params_whole'] / 2**30:.1f} / "
                  f"{c['params_sharded'] / 2**30:.1f} | {speedups} |")


if __name__ == "__main__":
    main()
