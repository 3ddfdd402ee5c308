#!/usr/bin/env python3
"""One DiT block at the REAL width (6144 = 48 heads x 128, FF 24576): activation peak and time,
with and without token chunking, and the memory model's prediction.

    python benchmarks/dit_memory.py [--tokens 2048] [--chunks 0,512] [--repeats 2] [--device cpu]

Each variant runs in a fresh subprocess: the block is built on the meta device and its weights are
created directly in bf16, so the process high-water mark before the forward is the weights + inputs;
the activation peak is the high-water mark during the forward minus that. On CUDA the numbers come
from torch.cuda.max_memory_allocated instead.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

from harness.peak_rss import status_bytes
from stepvideo_pack.model_loaders.memory import dit_activation_bytes
from stepvideo_pack.networks.dit import DiTConfig, TransformerBlock
from stepvideo_pack.networks.rope3d import rope_grid, rope_tables

REAL = DiTConfig()


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_variant(tokens, chunk, repeats, device):
    """Child process: one block, bf16; returns {"peak_bytes", "seconds"}."""
    torch.manual_seed(0)
    dtype = torch.bfloat16
    with torch.device("meta"):
        block = TransformerBlock(REAL, torch.nn)
    block = block.to_empty(device=device)
    with torch.no_grad():
        for p in block.parameters():
            p.data = torch.randn(p.shape, dtype=dtype, device=device) * 0.02
    frames, width = 4, tokens // (4 * 32)
    x0 = torch.randn(1, tokens, REAL.hidden_size, dtype=dtype, device=device)
    modulation = torch.randn(1, 6 * REAL.hidden_size, dtype=dtype, device=device) * 0.1
    context = torch.randn(1, 397, REAL.hidden_size, dtype=dtype, device=device)
    mask = torch.ones(1, 1, 1, 397, dtype=torch.bool, device=device)
    cos, sin = rope_tables(rope_grid(frames, 32, width, device=device), dtype)
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            x = x0.clone()
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            else:
                base = status_bytes("VmRSS")
            start = time.perf_counter()
            block(x, modulation, context, mask, cos, sin, "sdpa", chunk or None)
            if device == "cuda":
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() - base
            else:
                peak = peak_rss_bytes() - base
            times.append(time.perf_counter() - start)
            del x
    return {"peak_bytes": peak, "seconds": sorted(times)[len(times) // 2]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048, help="video tokens (multiple of 128)")
    parser.add_argument("--chunks", default="0,512", help="comma-separated chunk sizes, 0 = unchunked")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_variant(args.tokens, int(args.child), args.repeats, args.device)))
        return
    print(f"one block, width {REAL.hidden_size}, {args.tokens} tokens, bf16, device {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| chunk_tokens | measured activation peak (MB) | model (MB) | vs unchunked | time (s) | time vs unchunked |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = None
    for chunk in [int(c) for c in args.chunks.split(",")]:
        out = subprocess.run([sys.executable, __file__, "--child", str(chunk), "--tokens", str(args.tokens),
                              "--repeats", str(args.repeats), "--device", args.device],
                             check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        model = dit_activation_bytes(REAL, 1, 4, 32, args.tokens // 128, chunk_tokens=chunk or None)
        base = base or result
        print(f"| {chunk or 'off'} | {result['peak_bytes'] / 2**20:.0f} | {model / 2**20:.0f} | "
              f"{result['peak_bytes'] / base['peak_bytes']:.0%} | {result['seconds']:.2f} | "
              f"{result['seconds'] / base['seconds']:.2f}x |")


if __name__ == "__main__":
    main()
