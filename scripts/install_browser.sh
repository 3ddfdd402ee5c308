#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the browser tests, and a CJK font (WenQuanYi Zen Hei) so
# the screenshots show Chinese prompts instead of empty boxes. Idempotent; instant when all are present.
set -euo pipefail
packages=()
if ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }; then
  packages+=(chromium chromium-driver)
fi
if ! { command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh family 2>/dev/null)" ]; }; then
  packages+=(fonts-wqy-zenhei)
fi
if [ "${#packages[@]}" -eq 0 ]; then
  echo "[install_browser] present: $(chromium --version 2>/dev/null | head -1); $(chromedriver --version | head -1);" \
       "CJK font: $(fc-list :lang=zh family | head -1)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "[install_browser] ERROR: need root (or sudo) to apt-get install ${packages[*]}" >&2; exit 1
  fi
fi
echo "[install_browser] apt-get install ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
if ! { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"; } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "[install_browser] ERROR: apt-get failed (full log: $log)" >&2
  exit 1
fi
rm -f "$log"
echo "[install_browser] installed: $(chromium --version 2>/dev/null | head -1); $(chromedriver --version | head -1);" \
     "CJK font: $(fc-list :lang=zh family | head -1)"
