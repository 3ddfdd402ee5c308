"""A second real ComfyUI server, started the way the README tells users to: `scripts/comfy_host.py serve`,
which offers only the embedded model (weights/stepvideo-tiny as models/stepvideo/stepvideo-tiny).

Fixture (session scope, started only when a test asks for it):
  embedded_server   its base URL (http://127.0.0.1:PORT); the server runs on the host under test
                    ($COMFYUI_PATH / $COMFY_HOST_PYTHON, as the CLI reads them) and is stopped at the end.
"""

import os
import signal
import subprocess
import sys

import pytest

from harness import REPO
from harness.client import ComfyClient, HostError
from harness.server import wait_until_serving
from stepvideo_pack.multigpu.pool import free_port



@pytest.fixture(scope="session")
def embedded_server(integration_artifacts_dir):
    port = free_port()
    log = os.path.join(integration_artifacts_dir, "embedded-server.log")
    command = [sys.executable, os.path.join(REPO, "scripts", "comfy_host.py"), "--log", log,
               "serve", "--port", str(port)]
    with open(os.path.join(integration_artifacts_dir, "embedded-server-cli.log"), "w") as cli_log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=cli_log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_serving(proc, ComfyClient(url), timeout=180, poll=0.5)
        except HostError as e:
            pytest.fail(f"`comfy_host.py serve`: {e}; see {log}", pytrace=False)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # the CLI stops its server on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
