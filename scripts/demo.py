#!/usr/bin/env python3
"""The main job: generate a video with the text-to-video workflow on a real ComfyUI server.

    .venv/bin/python scripts/demo.py [--prompt TEXT] [--seed N] [--out DIR] [--server URL]

Uses the embedded default weights (weights/stepvideo-tiny, a small model of the official architecture
trained on synthetic shapes; see research/TRAINING.md), installed into a throwaway
ComfyUI models/stepvideo/ folder exactly as a user would drop an official download (or, with --server,
a running server that offers them as models/stepvideo/stepvideo-tiny, e.g. `scripts/comfy_host.py serve`).
The shipped workflow workflows/api/text_to_video_embedded.json (the small model's settings) is queued
through POST /prompt with the prompt and seed; the MP4 comes back through /view and is saved as
OUT/demo_NNNNN_.mp4, numbered after the highest one there (a run never replaces an earlier file).
"""

import argparse
import json
import os
import re
import time

from harness.client import ComfyClient
from harness import REPO
from harness.server import ComfyHost

WORKFLOW = "text_to_video_embedded"
DEFAULT_PROMPT = "a red circle moves to the right"
PREFIX = "demo"


def demo_prompt(prompt_text, seed):
    """(API prompt, UI workflow) of workflows/*/text_to_video_embedded.json with the prompt and seed set."""
    graphs = []
    for folder in ("api", ""):
        with open(os.path.join(REPO, "workflows", folder, WORKFLOW + ".json"), encoding="utf-8") as f:
            graphs.append(json.load(f))
    prompt, workflow = graphs
    settings = {"StepVideoTextEncode": {"prompt": prompt_text}, "StepVideoSampler": {"seed": seed}}
    for node in prompt.values():
        node["inputs"].update(settings.get(node["class_type"], {}))
    return prompt, workflow


def save_new(folder, data, prefix=PREFIX):
    """Write data to folder/PREFIX_NNNNN_.mp4 with NNNNN one above the highest there (as the host's savers
    number their files); never replaces a file. Returns the path."""
    os.makedirs(folder, exist_ok=True)
    pattern = re.compile(re.escape(prefix) + r"_(\d+)_\.mp4$")
    counter = max([int(m.group(1)) for m in map(pattern.match, os.listdir(folder)) if m], default=0) + 1
    while True:
        path = os.path.join(folder, f"{prefix}_{counter:05}_.mp4")
        try:
            with open(path, "xb") as f:  # exclusive: a concurrent run that took this name first wins
                f.write(data)
            return path
        except FileExistsError:
            counter += 1


def generate(client, prompt, workflow):
    """Queue the prompt, wait, and return the MP4's bytes."""
    entry = client.run_prompt(prompt, workflow=workflow, timeout=900)
    video = next(f for f in client.output_files(entry) if f["filename"].endswith(".mp4"))
    return client.fetch_output(video)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=DEFAULT_PROMPT,
                        help=f"English or Chinese (default {DEFAULT_PROMPT!r}; e.g. 绿色圆形向左移动): a colour, a "
                             "shape and a motion; the small model follows the colour and the direction")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--out", default=os.path.join(REPO, "output", "demo"),
                        help="folder for demo_NNNNN_.mp4 (default output/demo)")
    parser.add_argument("--server", help="use this running ComfyUI (e.g. http://127.0.0.1:8188) instead of "
                                         "starting one; it must offer models/stepvideo/stepvideo-tiny")
    args = parser.parse_args()
    prompt, workflow = demo_prompt(args.prompt, args.seed)
    start = time.monotonic()
    if args.server:
        print(f"queueing {WORKFLOW} on {args.server}: {args.prompt!r}")
        data = generate(ComfyClient(args.server), prompt, workflow)
    else:
        host = ComfyHost()
        host.offer_embedded_model()
        with host:
            host.assert_pack_loaded()
            print(f"ComfyUI {host.url} started in {host.startup_seconds:.1f} s; queueing {WORKFLOW}: "
                  f"{args.prompt!r}")
            data = generate(host.client, prompt, workflow)
    path = save_new(args.out, data)
    print(f"generated in {time.monotonic() - start:.1f} s" + ("" if args.server else " (server start included)"))
    print(os.path.abspath(path))


if __name__ == "__main__":
    main()
