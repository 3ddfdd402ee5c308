#!/usr/bin/env bash
# The main job: set up the environment if needed (scripts/bootstrap.sh), then generate a text-to-video
# clip through a real ComfyUI server with the embedded default weights and print the MP4's path.
# Arguments go to scripts/demo.py (e.g. --prompt "红色圆形向右移动" --seed 3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh >&2
exec .venv/bin/python scripts/demo.py "$@"
