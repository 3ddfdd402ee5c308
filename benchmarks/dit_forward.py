#!/usr/bin/env python3
"""DiT forward: our StepVideoDiT vs the official StepVideoModel, same weights and inputs, one process.

    python benchmarks/dit_forward.py [--official PATH] [--repeats 5] [--threads N]

Interleaves the two implementations (warm-up, then ``repeats`` timed calls each), prints median
seconds per forward, the ratio official/ours and the max abs difference of the outputs.
"""

import argparse
import os
import statistics
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

from benchmarks.official_import import default_checkout, official_available, official_dit
from stepvideo_pack.networks.dit import DiTConfig, StepVideoDiT

CASES = [  # (name, config, frames, height, width, dtype)
    ("1024 wide x 4 layers, 768 tokens, fp32", DiTConfig(num_heads=8, num_layers=4, ff_inner_dim=4096,
                                                         caption_channels=(1024, 256)), 3, 16, 16, torch.float32),
    ("1024 wide x 4 layers, 1536 tokens, bf16", DiTConfig(num_heads=8, num_layers=4, ff_inner_dim=4096,
                                                          caption_channels=(1024, 256)), 6, 16, 16, torch.bfloat16),
]


def inputs(config, frames, height, width, dtype):
    gen = torch.Generator().manual_seed(0)
    mask = torch.ones(2, 77 + 64)
    mask[1, 77 + 40:] = 0
    return dict(hidden_states=torch.randn(2, frames, config.in_channels, height, width, generator=gen).to(dtype),
                timestep=torch.tensor([0.3, 0.3]).to(dtype),
                encoder_hidden_states=torch.randn(2, 64, config.caption_channels[0], generator=gen).to(dtype),
                encoder_hidden_states_2=torch.randn(2, 77, config.caption_channels[1], generator=gen).to(dtype),
                encoder_attention_mask=mask.to(dtype))


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", default=default_checkout())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    have_official = official_available(args.official)
    if not have_official:
        print(f"no official checkout at {args.official}: timing ours only (set OFFICIAL_T2V or --official)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| case | ours (s) | official (s) | official / ours | max abs diff |")
    print("| --- | --- | --- | --- | --- |")
    for name, config, frames, height, width, dtype in CASES:
        ours = StepVideoDiT(config)
        with torch.no_grad():
            for p in ours.parameters():
                p.normal_(0, 0.02)
        ours = ours.to(dtype).eval()
        feed = inputs(config, frames, height, width, dtype)
        with torch.inference_mode():
            ours(**feed)
            row = [name]
            official = official_dit(args.official, config, ours.state_dict(), dtype) if have_official else None
            if official is not None:
                official(**feed, return_dict=False)
            t_ours, out_ours = timed(lambda: ours(**feed), args.repeats)
            row.append(f"{t_ours:.3f}")
            if official is not None:
                t_off, out_off = timed(lambda: official(**feed, return_dict=False), args.repeats)
                diff = (out_ours.double() - out_off.double()).abs().max().item()
                row += [f"{t_off:.3f}", f"{t_off / t_ours:.2f}x", f"{diff:.2e}"]
            else:
                row += ["-", "-", "-"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
