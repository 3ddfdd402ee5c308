#!/usr/bin/env python3
"""Deterministic tiny random-weight Step-Video checkpoints in the OFFICIAL folder layout.

    python scripts/tiny_checkpoints.py OUT_DIR [--seed N]

writes OUT_DIR/{transformer,vae,step_llm,hunyuan_clip}/ exactly as an official download is laid
out (see model_loaders/official_layout.py), with tiny widths. Tests and the host integration
suite load them through the same loaders as real weights; they prove plumbing, not quality.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pack_path import import_pack  # noqa: E402

import_pack()

from stepvideo_pack.model_loaders import official_layout  # noqa: E402
from stepvideo_pack.networks.dit import DiTConfig, StepVideoDiT  # noqa: E402

TINY_DIT = DiTConfig(num_heads=2, head_dim=128, in_channels=64, out_channels=64, num_layers=2,
                     caption_channels=(64, 32), ff_inner_dim=512)


def randomize_(module, seed, std=0.02):
    """Fill every parameter deterministically: N(0, std); norm scales (1-D ``weight``s) around 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            noise = torch.randn(p.shape, generator=gen) * std
            p.copy_(noise + 1 if name.endswith("weight") and p.ndim == 1 else noise)
    return module


def tiny_dit(config=TINY_DIT, seed=0, dtype=torch.bfloat16):
    """A randomly initialised StepVideoDiT of ``config`` in ``dtype``."""
    return randomize_(StepVideoDiT(config), seed).to(dtype)


def write_transformer(root, config=TINY_DIT, seed=0, shards=2):
    model = tiny_dit(config, seed)
    return official_layout.save_transformer(model.state_dict(), root, config, shards=shards)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_transformer(args.out_dir, seed=args.seed)
    print(f"tiny Step-Video checkpoints written to {args.out_dir}")


if __name__ == "__main__":
    main()
