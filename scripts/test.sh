#!/usr/bin/env bash
# The one test command: set up everything (scripts/bootstrap.sh with the further test hosts,
# scripts/install_browser.sh), run the whole pytest suite (unit, parity, behaviour and integration tests
# against the default ComfyUI) with the venv's Python, then the integration tests again against every
# further ComfyUI in ../shared/hosts (see scripts/bootstrap.py). Extra arguments go to every pytest run.
# Artefacts (server logs, screenshots, junit*.xml) are kept under artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash scripts/bootstrap.sh --extra-hosts
bash scripts/install_browser.sh
mapfile -t extra_hosts < <(.venv/bin/python scripts/bootstrap.py --list-extra-hosts)
if [ "${#extra_hosts[@]}" -eq 0 ]; then
  if [ -n "${CI:-}" ]; then
    echo "[test] ERROR: no further ComfyUI host archive (../shared/hosts/comfyui-*.tar.gz) to test against" >&2
    exit 1
  fi
  echo "[test] WARNING: no further ComfyUI host found (../shared/hosts/comfyui-*.tar.gz): only the default host is tested"
fi
echo "[test] setup done in $((SECONDS - start)) s; running pytest"
mkdir -p artifacts
status=0
.venv/bin/python -m pytest tests --junitxml=artifacts/junit.xml "$@" || status=$?
echo "[test] default host: pytest exit status ${status} after $((SECONDS - start)) s"
for line in "${extra_hosts[@]}"; do
  read -r version host_path host_python <<<"$line"
  host_status=0
  COMFYUI_PATH="$host_path" COMFY_HOST_PYTHON="$host_python" STEPVIDEO_HOST_LABEL="comfyui-$version" \
    .venv/bin/python -m pytest tests/integration --junitxml="artifacts/junit-comfyui-$version.xml" "$@" \
    || host_status=$?
  [ "$host_status" -ne 5 ] || host_status=0  # the arguments selected no integration test
  echo "[test] ComfyUI $version: pytest exit status ${host_status} after $((SECONDS - start)) s"
  [ "$host_status" -eq 0 ] || status=$host_status
done
echo "[test] exit status ${status} after $((SECONDS - start)) s in all; artefacts in artifacts/"
exit "$status"
