#!/usr/bin/env bash
# Set up .venv/ (CPU torch + pack, host and test requirements) and the ComfyUI host (.host/ComfyUI,
# or $COMFYUI_PATH). Idempotent and quick when nothing changed. Details: scripts/bootstrap.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${BOOTSTRAP_PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$candidate"; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "[bootstrap] ERROR: Python 3.11 not found (the CPU torch 2.13.0 wheel needs it); set BOOTSTRAP_PYTHON" >&2
  exit 1
fi
exec "$PY" scripts/bootstrap.py "$@"
