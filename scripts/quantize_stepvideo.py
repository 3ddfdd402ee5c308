#!/usr/bin/env python3
"""Convert the official Step-Video DiT or Step-LLM into one pre-quantized file.

    python scripts/quantize_stepvideo.py SRC OUT --format Q4_K

SRC is the official ``transformer/`` or ``step_llm/`` folder (or a single bf16 file of either); the
format is one of fp8_scaled (OUT ends in .safetensors), Q8_0, Q6_K, Q5_K, Q4_K (OUT ends in .gguf).
Which tensors are quantized and which stay bf16 is decided per tensor by
``model_loaders/quantize.storage_for`` (see the README's "Pre-quantized files" section). Tensors are
streamed in row chunks, so RAM stays at a few hundred MB whatever the model size; the output is
written to OUT.partial and renamed when complete. Put DiT files in ComfyUI/models/diffusion_models/
(or models/unet/), Step-LLM files in ComfyUI/models/text_encoders/.
"""

import argparse
import sys
import time

from pack_path import import_pack  # scripts/pack_path.py: the pack from this folder, whatever its name

import_pack()

from stepvideo_pack.model_loaders.errors import CheckpointError  # noqa: E402
from stepvideo_pack.model_loaders.quantize import TARGETS  # noqa: E402
from stepvideo_pack.model_loaders.quantized_writer import DEFAULT_CHUNK_VALUES, convert  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="official transformer/ or step_llm/ folder")
    parser.add_argument("out", help="output file (.gguf, or .safetensors for fp8_scaled)")
    parser.add_argument("--format", required=True, choices=TARGETS)
    parser.add_argument("--chunk-values", type=int, default=DEFAULT_CHUNK_VALUES,
                        help="values quantized per step (sets the RAM bound)")
    args = parser.parse_args(argv)
    start = time.monotonic()

    def progress(done, total, name):
        print(f"\r{done}/{total} tensors ({time.monotonic() - start:.0f} s) {name[:60]:<60}", end="", flush=True)

    try:
        summary = convert(args.src, args.out, args.format, chunk_values=args.chunk_values, progress=progress)
    except (CheckpointError, ValueError) as e:
        sys.exit(f"\nerror: {e}")
    print(f"\n{summary['kind']} written to {args.out}: {summary['bytes'] / 2**30:.2f} GiB, tensors by storage "
          f"{summary['counts']}, {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
