#!/usr/bin/env python3
"""Deterministic tiny random-weight Step-Video checkpoints in the OFFICIAL folder layout.

    .venv/bin/python -m harness.tiny_checkpoints OUT_DIR [--seed N]

writes OUT_DIR/{transformer,vae,step_llm,hunyuan_clip}/ exactly as an official download is laid
out (see model_loaders/official_layout.py), with tiny widths. Tests and the host integration
suite load them through the same loaders as real weights; they prove plumbing, not quality.
"""

import argparse
import os
import shutil

import torch

from stepvideo_pack.model_loaders import official_layout
from stepvideo_pack.networks.dit import DiTConfig, StepVideoDiT
from stepvideo_pack.networks.step_llm import StepLLM, StepLLMConfig
from stepvideo_pack.networks.vae import VAEConfig, VAEDecoderConfig, VAEEncoderConfig, VideoVAE

from . import FIXTURES

PARITY = os.path.join(FIXTURES, "parity")
STEP_TOKENIZER = os.path.join(PARITY, "step_tokenizer", official_layout.STEP_TOKENIZER_FILE)  # 1000 pieces
TINY_CLIP = os.path.join(PARITY, "hunyuan_clip_tiny")  # BERT 64 wide, vocab 801, with its tokenizer

TINY_LLM = StepLLMConfig(hidden_size=256, num_layers=2, num_heads=2, num_groups=1, ffn_width=512, vocab_size=1024)
TINY_CLIP_WIDTH = 64
# 16 latent channels: the v2 heads are 32 * z wide, so z = 64 alone would make a 100 MB "tiny" VAE.
# The host glue takes the channel count from the loaded model (empty latents are resized to it).
TINY_LATENT_CHANNELS = 16
TINY_VAE = VAEConfig(VAEEncoderConfig(ch=32, ch_mult=(1, 1, 2, 2), z_channels=TINY_LATENT_CHANNELS),
                     VAEDecoderConfig(ch=32, ch_mult=(1, 1, 2, 2), z_channels=TINY_LATENT_CHANNELS))
TINY_DIT = DiTConfig(num_heads=2, head_dim=128, in_channels=TINY_LATENT_CHANNELS,
                     out_channels=TINY_LATENT_CHANNELS, num_layers=2,
                     caption_channels=(TINY_LLM.hidden_size, TINY_CLIP_WIDTH), ff_inner_dim=512)


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


def write_transformer(root, config=TINY_DIT, seed=0, shards=2, metadata=None):
    model = tiny_dit(config, seed)
    return official_layout.save_transformer(model.state_dict(), root, config, shards=shards, metadata=metadata)


def write_vae(root, config=TINY_VAE, seed=2):
    """vae/vae_v2.safetensors (fp32 like the official file, official file key names)."""
    return official_layout.save_vae(randomize_(VideoVAE(config), seed).state_dict(), root)


def write_step_llm(root, config=TINY_LLM, seed=1):
    """step_llm/ with shards, index, hub config.json and the tiny fixture tokenizer."""
    model = randomize_(StepLLM(config), seed).to(torch.bfloat16)
    hub = {"hidden_size": config.hidden_size, "num_layers": config.num_layers, "num_attention_heads": config.num_heads,
           "num_attention_groups": config.num_groups, "kv_channels": config.hidden_size // config.num_heads,
           "ffn_hidden_size": config.ffn_width, "padded_vocab_size": config.vocab_size,
           "orig_vocab_size": config.vocab_size, "layernorm_epsilon": config.eps}
    folder = official_layout.save_sharded(model.state_dict(), os.path.join(root, official_layout.STEP_LLM_DIR),
                                          "model", shards=2, config=hub)
    shutil.copy(STEP_TOKENIZER, folder)
    return folder


def write_hunyuan_clip(root):
    """hunyuan_clip/ = the tiny BERT of the parity fixtures (clip_text_encoder/ + tokenizer/)."""
    folder = os.path.join(root, official_layout.CLIP_DIR)
    for part in ("clip_text_encoder", "tokenizer"):
        shutil.copytree(os.path.join(TINY_CLIP, part), os.path.join(folder, part), dirs_exist_ok=True)
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_transformer(args.out_dir, seed=args.seed)
    write_vae(args.out_dir, seed=args.seed + 2)
    write_step_llm(args.out_dir, seed=args.seed + 1)
    write_hunyuan_clip(args.out_dir)
    print(f"tiny Step-Video checkpoints written to {args.out_dir}")


if __name__ == "__main__":
    main()
