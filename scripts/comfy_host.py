#!/usr/bin/env python3
"""Run a real ComfyUI with this pack installed, from the command line (the library is tests/harness).

    .venv/bin/python scripts/comfy_host.py serve [--port N]        run until Ctrl-C (open the printed URL)
    .venv/bin/python scripts/comfy_host.py check                   start, list the pack's nodes (fails without any), stop
    .venv/bin/python scripts/comfy_host.py run PROMPT.json [--out DIR] [--timeout S]
                                                          queue an API-format workflow, save its outputs

The server offers the embedded small model (weights/stepvideo-tiny) as models/stepvideo/stepvideo-tiny,
so workflows/api/text_to_video_embedded.json runs out of the box (--no-embedded-model: do not link it).
Which ComfyUI: --comfyui PATH, else $COMFYUI_PATH, else .host/ComfyUI (made by scripts/bootstrap.sh).
Which Python runs the server: --python, else $COMFY_HOST_PYTHON, else .venv/bin/python.
"""

import argparse
import json
import os
import sys
import time

from harness.client import HostError
from harness.server import ARTIFACTS, EMBEDDED_MODEL_NAME, ComfyHost


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH or .host/ComfyUI)")
    parser.add_argument("--python", help="interpreter for the server (default: .venv/bin/python)")
    parser.add_argument("--base-dir", help="keep models/, input/, output/, user/ here instead of a temp dir")
    parser.add_argument("--log", help="server log file")
    parser.add_argument("--gpu", action="store_true", help="do not pass --cpu")
    parser.add_argument("--all-custom-nodes", action="store_true", help="load every pack in custom_nodes/")
    parser.add_argument("--no-embedded-model", action="store_true",
                        help=f"do not offer weights/stepvideo-tiny as models/stepvideo/{EMBEDDED_MODEL_NAME}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run until Ctrl-C")
    serve.add_argument("--port", type=int)
    sub.add_parser("check", help="start, list the pack's nodes as the server serves them, stop")
    run = sub.add_parser("run", help="queue an API-format prompt JSON and save its outputs")
    run.add_argument("prompt")
    run.add_argument("--out", default=os.path.join(ARTIFACTS, "comfy_host_run"))
    run.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    host = ComfyHost(comfyui_path=args.comfyui, python=args.python, base_dir=args.base_dir, log_path=args.log,
                     port=getattr(args, "port", None), cpu=not args.gpu, only_this_pack=not args.all_custom_nodes)
    if not args.no_embedded_model:
        print("offering the embedded model as", host.offer_embedded_model(), flush=True)
    print(f"starting ComfyUI from {host.comfyui_path}; log {host.log_path}", flush=True)
    with host:
        print(f"ready in {host.startup_seconds:.1f} s at {host.url} (base dir {host.base_dir})", flush=True)
        if args.cmd == "check":
            try:
                nodes = host.assert_pack_loaded()
            except HostError as e:
                print(e)
                return 1
            print(f"{len(nodes)} pack nodes:", ", ".join(sorted(nodes)))
            return 0
        if args.cmd == "serve":
            try:
                while host.running:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
            return 0
        with open(args.prompt, encoding="utf-8") as f:
            prompt = json.load(f)
        t0 = time.monotonic()
        entry = host.client.run_prompt(prompt, timeout=args.timeout)
        os.makedirs(args.out, exist_ok=True)
        for item in host.client.output_files(entry):
            path = os.path.join(args.out, item["filename"])
            with open(path, "wb") as f:
                f.write(host.client.fetch_output(item))
            print("wrote", path)
        print(f"finished in {time.monotonic() - t0:.1f} s")
        return 0


if __name__ == "__main__":
    sys.exit(main())
