#!/usr/bin/env bash
# The one test command (CI runs it through .ci/run):
#   scripts/test.sh            set up everything (scripts/bootstrap.sh with the further test hosts,
#                              scripts/install_browser.sh) and run the whole suite: unit, parity, behaviour
#                              and integration tests against the default ComfyUI, and, at the same time,
#                              the integration tests against every further ComfyUI in ../shared/hosts.
#   scripts/test.sh --quick    the quick tier for a change to a pure layer: unit + parity tests only
#                              (default host imported in-process; no server, no browser), a minute or two.
# Extra arguments go to every pytest run (e.g. -k, -x, -m "not browser").
# The further hosts run beside the default suite because most of an integration test's time is spent
# waiting (server start, the page, polling), which overlaps well with the default suite's computation;
# their pytest output goes to artifacts/pytest-<label>.log and is printed when they finish.
# Artefacts (server logs, screenshots, junit*.xml) are kept under artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
if [ "${1:-}" = "--quick" ]; then
  shift
  bash scripts/bootstrap.sh
  echo "[test] quick tier: unit + parity tests"
  status=0
  .venv/bin/python -m pytest tests/unit "$@" || status=$?
  echo "[test] quick tier: exit status ${status} after $((SECONDS - start)) s"
  exit "$status"
fi
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

pids=()
labels=()
for line in "${extra_hosts[@]}"; do
  read -r version host_path host_python <<<"$line"
  label="comfyui-$version"
  (
    host_status=0
    COMFYUI_PATH="$host_path" COMFY_HOST_PYTHON="$host_python" STEPVIDEO_HOST_LABEL="$label" \
      .venv/bin/python -m pytest tests/integration --junitxml="artifacts/junit-$label.xml" "$@" \
      >"artifacts/pytest-$label.log" 2>&1 || host_status=$?
    [ "$host_status" -ne 5 ] || host_status=0  # the arguments selected no integration test
    exit "$host_status"
  ) &
  pids+=("$!")
  labels+=("$label")
  echo "[test] ComfyUI $version: integration tests started beside the default suite (output: artifacts/pytest-$label.log)"
done

status=0
.venv/bin/python -m pytest tests --junitxml=artifacts/junit.xml "$@" || status=$?
echo "[test] default host: pytest exit status ${status} after $((SECONDS - start)) s"
for i in "${!pids[@]}"; do
  host_status=0
  wait "${pids[$i]}" || host_status=$?
  echo "[test] ===== ${labels[$i]}: integration tests (artifacts/pytest-${labels[$i]}.log) ====="
  cat "artifacts/pytest-${labels[$i]}.log"
  echo "[test] ${labels[$i]}: pytest exit status ${host_status} after $((SECONDS - start)) s"
  [ "$host_status" -eq 0 ] || status=$host_status
done
echo "[test] exit status ${status} after $((SECONDS - start)) s in all; artefacts in artifacts/"
exit "$status"
