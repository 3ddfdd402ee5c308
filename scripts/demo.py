#!/usr/bin/env python3
"""The main job: generate a video with the text-to-video workflow on a real ComfyUI server.

    .venv/bin/python scripts/demo.py [--prompt TEXT] [--seed N] [--out DIR]

Uses the embedded default weights (weights/stepvideo-tiny, a small model of the official architecture
trained on synthetic shapes; see weights/stepvideo-tiny/TRAINING.md), installed into a throwaway
ComfyUI models/stepvideo/ folder exactly as a user would drop an official download. The shipped
workflow workflows/api/text_to_video.json is queued through POST /prompt with the model name, size
and sampling settings of the small model; the MP4 comes back through /view and its path is printed.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from comfy_host import ComfyHost  # noqa: E402

EMBEDDED = os.path.join(REPO, "weights", "stepvideo-tiny")
MODEL_NAME = "stepvideo-tiny"
# Settings the small model was trained for (weights/stepvideo-tiny/TRAINING.md).
DEMO = {"width": 128, "height": 128, "frames": 34, "steps": 25, "cfg": 3.0, "shift": 5.0,
        "prompt": "a red circle moves to the right"}


def demo_prompt(prompt_text, seed):
    """workflows/api/text_to_video.json pointed at the embedded model with the demo settings."""
    with open(os.path.join(REPO, "workflows", "api", "text_to_video.json"), encoding="utf-8") as f:
        prompt = json.load(f)
    with open(os.path.join(REPO, "workflows", "text_to_video.json"), encoding="utf-8") as f:
        workflow = json.load(f)
    settings = {
        "StepVideoDiTLoader": {"model_name": MODEL_NAME, "shift": DEMO["shift"]},
        "StepVideoTextEncoderLoader": {"step_llm": MODEL_NAME, "hunyuan_clip": MODEL_NAME, "device": "cpu"},
        "StepVideoVAELoader": {"vae_name": MODEL_NAME},
        "StepVideoTextEncode": {"prompt": prompt_text, "magic": "none"},
        "StepVideoEmptyLatent": {"width": DEMO["width"], "height": DEMO["height"], "frames": DEMO["frames"]},
        "StepVideoSampler": {"seed": seed, "steps": DEMO["steps"], "cfg": DEMO["cfg"], "shift": DEMO["shift"]},
        "StepVideoSaveVideo": {"filename_prefix": "StepVideo/demo"},
        "SaveLatent": {"filename_prefix": "StepVideo/demo"},
    }
    for node in prompt.values():
        node["inputs"].update(settings.get(node["class_type"], {}))
    return prompt, workflow


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=DEMO["prompt"],
                        help="English or Chinese (e.g. 绿色圆形向左移动); the small model follows the colour and "
                             "the direction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(REPO, "output", "demo"))
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(EMBEDDED, "transformer")):
        sys.exit(f"the embedded weights are missing: {EMBEDDED}")
    prompt, workflow = demo_prompt(args.prompt, args.seed)
    host = ComfyHost()
    os.makedirs(os.path.join(host.models_dir, "stepvideo"), exist_ok=True)
    os.symlink(EMBEDDED, os.path.join(host.models_dir, "stepvideo", MODEL_NAME), target_is_directory=True)
    start = time.monotonic()
    with host:
        host.assert_pack_loaded()
        print(f"ComfyUI {host.url} started in {host.startup_seconds:.1f} s; queueing text_to_video: {args.prompt!r}")
        entry = host.client.run_prompt(prompt, workflow=workflow, timeout=900)
        video = next(f for files in entry["outputs"].values() for f in files.get("images", [])
                     if f["filename"].endswith(".mp4"))
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, video["filename"])
        with open(path, "wb") as f:
            f.write(host.client.fetch_output(video))
    print(f"generated in {time.monotonic() - start:.1f} s (server start included)")
    print(os.path.abspath(path))


if __name__ == "__main__":
    main()
