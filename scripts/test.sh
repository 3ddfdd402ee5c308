#!/usr/bin/env bash
# The one test command: set up everything (scripts/bootstrap.sh, scripts/install_browser.sh), then run
# the whole pytest suite (unit tests and integration tests against a real ComfyUI) with the venv's Python.
# Extra arguments go to pytest. Artefacts (server log, screenshots, junit.xml) are kept under artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash scripts/bootstrap.sh
bash scripts/install_browser.sh
echo "[test] setup done in $((SECONDS - start)) s; running pytest"
mkdir -p artifacts
status=0
.venv/bin/python -m pytest tests --junitxml=artifacts/junit.xml "$@" || status=$?
echo "[test] pytest exit status ${status} after $((SECONDS - start)) s in all; artefacts in artifacts/"
exit "$status"
