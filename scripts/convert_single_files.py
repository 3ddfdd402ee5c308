#!/usr/bin/env python3
"""Convert an official Step-LLM or HunyuanCLIP folder into ONE .safetensors that carries its tokenizer.

    python scripts/convert_single_files.py SRC OUT.safetensors

SRC is the official ``step_llm/`` folder or the ``hunyuan_clip/`` folder (or its ``clip_text_encoder/``).
OUT can sit alone in ComfyUI's ``models/text_encoders/`` folder (details: model_loaders/single_files.py).
Runs with the Python of your ComfyUI; tensors are written one at a time, so converting the 39 GB Step-LLM
needs about as much free disk, not RAM.
"""

import argparse
import os
import sys

from pack_path import import_pack  # scripts/pack_path.py: the pack from this folder, whatever its name

import_pack()

from stepvideo_pack.model_loaders.errors import CheckpointError  # noqa: E402
from stepvideo_pack.model_loaders.single_files import convert  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="official step_llm/ or hunyuan_clip/ folder")
    parser.add_argument("out", help="output .safetensors file")
    args = parser.parse_args(argv)
    if not args.out.endswith(".safetensors"):
        parser.error("the output file name must end with .safetensors")
    try:
        kind, out = convert(args.src, args.out)
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    print(f"{kind} written to {out} ({os.path.getsize(out) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
