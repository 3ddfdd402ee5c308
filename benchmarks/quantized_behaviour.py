#!/usr/bin/env python3
"""Prompt following of the embedded small model with its DiT and Step-LLM in every pre-quantized format.

    python benchmarks/quantized_behaviour.py [--seeds 0] [--json out.json]

The shipped weights (weights/stepvideo-tiny) are converted with the pack's converter; the model is then
judged exactly as research/behaviour_metrics.py judges it (same sampler settings, prompts and detector):
colour, shape and direction hits of one text-to-video clip per PROMPT_SET prompt and seed offset, in
English and Chinese. The default is the reduced set (seed offset 0 only: 12 clips per language instead
of the behaviour tests' 36) to keep the run within minutes on a 2-core CPU. Also reported: how many
parameters of each model ended up in the target format (the small model's 128-wide DiT layers are no
whole K-quant block, so under the K-quant targets most of its layers fall back to Q8_0; its Step-LLM
is 256 wide and takes the target format).
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch

from research import behaviour_metrics as bm  # imports the host and the pack
from research import synthetic_data as sd
from research.detectors import detect
from stepvideo_pack.model_loaders.quantized_writer import convert
from stepvideo_pack.model_loaders.text_encoding import StepVideoTextEncoder
from stepvideo_pack.model_loaders.weight_files import open_weights
from stepvideo_pack.networks.quant_formats import FORMATS


def share_in_target(path, target):
    """Fraction of the parameters stored in ``target`` itself."""
    weights = open_weights(path)
    total = sum(int(np.prod(i.shape)) for i in weights.info.values())
    quantized = sum(int(np.prod(weights.info[k].shape)) for k, f in weights.formats.items() if f == target)
    return quantized / total


def hits(model, language, seed_offsets):
    found = np.zeros(3, dtype=int)
    count = 0
    for _, (colour, shape, direction), frames in bm.prompt_set_videos(model, language, seed_offsets):
        detected = detect(frames)
        found += (detected.colour == sd.COLOUR_NAMES[colour], detected.shape == sd.SHAPE_NAMES[shape],
                  detected.action == direction)
        count += 1
    return {"colour": int(found[0]), "shape": int(found[1]), "direction": int(found[2]), "of": count}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="seed offsets (comma-separated; the tests use 0,100,200)")
    parser.add_argument("--formats", default="bf16," + ",".join(FORMATS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    offsets = tuple(int(s) for s in args.seeds.split(","))
    torch.manual_seed(0)
    model = bm.TinyModel(bm.WEIGHTS)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for fmt in args.formats.split(","):
            started = time.time()
            row = {"format": fmt}
            if fmt != "bf16":
                suffix = ".safetensors" if fmt == "fp8_scaled" else ".gguf"
                dit, llm = os.path.join(scratch, "dit" + suffix), os.path.join(scratch, "step_llm" + suffix)
                convert(os.path.join(bm.WEIGHTS, "transformer"), dit, fmt)
                convert(os.path.join(bm.WEIGHTS, "step_llm"), llm, fmt)
                model = bm.TinyModel(bm.WEIGHTS, transformer=dit)  # the quantized DiT as the loader node makes it
                model.text = StepVideoTextEncoder(llm, os.path.join(bm.WEIGHTS, "hunyuan_clip"), keep_loaded=True)
                row["dit_share"], row["llm_share"] = share_in_target(dit, fmt), share_in_target(llm, fmt)
            for language in ("en", "zh"):
                row[language] = hits(model, language, offsets)
            row["seconds"] = round(time.time() - started, 1)
            print(json.dumps(row, ensure_ascii=False), flush=True)
            rows.append(row)
    print("\n| format | share in format (DiT / Step-LLM) | colour en / zh | shape en / zh | direction en / zh |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        share = f"{r['dit_share']:.0%} / {r['llm_share']:.0%}" if "dit_share" in r else "-"
        cells = [f"{r['en'][k]}/{r['en']['of']} / {r['zh'][k]}/{r['zh']['of']}" for k in ("colour", "shape", "direction")]
        print(f"| {r['format']} | {share} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
