#!/usr/bin/env bash
# The one test command (CI runs it through .ci/run):
#   scripts/test.sh            set up everything (scripts/bootstrap.sh with the further test hosts,
#                              scripts/install_browser.sh) and run the whole suite: unit, parity and
#                              behaviour tests, and the integration tests against the default ComfyUI and
#                              against every further ComfyUI in ../shared/hosts.
#   scripts/test.sh --quick    the quick tier for a change to a pure layer: unit + parity tests only
#                              (default host imported in-process; no server, no browser), a minute or two.
# Extra arguments go to every pytest run (e.g. -k, -x, -m "not browser").
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
# Two lanes, one CPU thread each (OMP_NUM_THREADS=1, inherited by the ComfyUI servers the tests start), so
# they share the cores without oversubscribing them: the behaviour tests (pure computation) in the
# background, and in the foreground the unit and parity tests and then the integration tests on each host
# in turn (mostly servers, the page and waiting). The behaviour lane's output is printed when it ends.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
run_pytest() {  # label, then pytest arguments; exit status 5 (nothing selected, e.g. by -k) counts as success
  local label=$1 rc=0
  shift
  .venv/bin/python -m pytest "$@" || rc=$?
  [ "$rc" -ne 5 ] || rc=0
  echo "[test] ${label}: pytest exit status ${rc} after $((SECONDS - start)) s"
  return "$rc"
}
run_pytest "behaviour tests" tests/behaviour --junitxml=artifacts/junit-behaviour.xml "$@" \
  >artifacts/pytest-behaviour.log 2>&1 &
behaviour_pid=$!
echo "[test] behaviour tests started in the background (output: artifacts/pytest-behaviour.log)"

status=0
run_pytest "unit + parity + integration, default host" tests/unit tests/integration \
  --junitxml=artifacts/junit.xml "$@" || status=$?
for line in "${extra_hosts[@]}"; do
  read -r version host_path host_python <<<"$line"
  COMFYUI_PATH="$host_path" COMFY_HOST_PYTHON="$host_python" STEPVIDEO_HOST_LABEL="comfyui-$version" \
    run_pytest "integration, ComfyUI $version" tests/integration --junitxml="artifacts/junit-comfyui-$version.xml" \
    "$@" || status=$?
done
behaviour_status=0
wait "$behaviour_pid" || behaviour_status=$?
echo "[test] ===== behaviour tests (artifacts/pytest-behaviour.log) ====="
cat artifacts/pytest-behaviour.log
[ "$behaviour_status" -eq 0 ] || status=$behaviour_status
echo "[test] exit status ${status} after $((SECONDS - start)) s in all; artefacts in artifacts/"
exit "$status"
