#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the browser tests (idempotent; instant when present).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "[install_browser] present: $(chromium --version 2>/dev/null | head -1); $(chromedriver --version | head -1)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "[install_browser] ERROR: need root (or sudo) to apt-get install chromium chromium-driver" >&2; exit 1
  fi
fi
echo "[install_browser] apt-get install chromium chromium-driver"
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
if ! { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver; } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "[install_browser] ERROR: apt-get failed (full log: $log)" >&2
  exit 1
fi
rm -f "$log"
echo "[install_browser] installed: $(chromium --version 2>/dev/null | head -1); $(chromedriver --version | head -1)"
