"""Fixtures for tests against ONE real ComfyUI server per pytest session, with this pack installed.

Fixtures (all session-scoped unless noted):
  host_models_dir    models/ of the session server, BEFORE it starts (write checkpoints here).
  host_input_dir     input/ of the session server (LoadImage/LoadVideo files), also before start.
  host_setup         runs every fixture named in HOST_SETUP_FIXTURES before the server starts, returns
                     {name: value}. To give the server tiny models, write a session fixture that takes
                     `host_models_dir`, puts files there and returns what tests need (paths, names),
                     define or import it in this file, and add its name to HOST_SETUP_FIXTURES.
                     Tests then request that fixture by name to get its value.
  comfy_host         the started harness.server.ComfyHost (.url, .client, .models_dir, .output_dir,
                     .log_path, .assert_pack_loaded(), .pack_nodes()). Stopped at session end, even on
                     failure or Ctrl-C.
  comfy_client       comfy_host.client: queue_prompt / wait_for_history / run_prompt / output_files /
                     fetch_output / interrupt / object_info / models (harness.client.ComfyClient).
  comfy_browser      (function scope) a ComfyBrowser (tests/integration/browser.py) on a freshly
                     loaded page; one Chromium per session, reloaded for each test.
  integration_artifacts_dir   artifacts/integration/ (server log, screenshots, browser logs).
  embedded_server    the URL of a second server started by `scripts/comfy_host.py serve`, holding only the
                     embedded model (tests/integration/embedded_server.py); started on first use.

Every test under tests/integration/ is marked `integration`; browser tests are marked `browser`.
A failing integration test gets the tail of the server log in its report.
"""

import json
import os
import struct
import time

import pytest

from embedded_server import embedded_server  # noqa: F401  (a second server: `comfy_host.py serve`)
from quantized_setup import quantized_models  # noqa: F401  (setup fixture, see above)
from stepvideo_setup import embedded_models, stepvideo_inputs, stepvideo_models  # noqa: F401  (setup fixtures)
from harness.client import HostError
from harness.server import ARTIFACTS, ComfyHost

# Session fixtures that must run before the server starts (e.g. ones writing tiny checkpoints into
# host_models_dir). Order is kept. Each may depend on host_models_dir / host_input_dir / comfy_host_unstarted.
HOST_SETUP_FIXTURES = ["smoke_model_file", "stepvideo_models", "stepvideo_inputs", "embedded_models",
                       "quantized_models"]
# Server flags: live previews on (the host's default is none), as users run it to watch a generation.
SERVER_ARGS = ["--preview-method", "auto"]

# Frontend settings written into the fresh user dir: no first-run template dialog in the way.
FRONTEND_SETTINGS = {"Comfy.TutorialCompleted": True}

INTEGRATION_DIR = os.path.dirname(os.path.abspath(__file__))
# artifacts/integration/, or artifacts/integration-<label>/ for a further host (scripts/test.sh sets the label)
ARTIFACTS_DIR = os.path.join(ARTIFACTS, "integration" + (f"-{os.environ['STEPVIDEO_HOST_LABEL']}"
                                                         if os.environ.get("STEPVIDEO_HOST_LABEL") else ""))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.path).startswith(INTEGRATION_DIR + os.sep):
            item.add_marker(pytest.mark.integration)
            if "comfy_browser" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, "rep_" + report.when, report)
    if report.failed and "comfy_host" in getattr(item, "fixturenames", ()):
        host = _STATE.get("host")
        if host is not None:
            report.sections.append(("ComfyUI server log (tail; full log: %s)" % host.log_path, host.log_tail(8000)))
    return report


_STATE = {}


def record_timing(name, seconds):
    """Add a measurement to artifacts/integration/timings.json (rewritten each session)."""
    timings = _STATE.setdefault("timings", {})
    timings[name] = round(seconds, 2)
    path = os.path.join(ARTIFACTS_DIR, "timings.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(timings, f, indent=1)


@pytest.fixture(scope="session")
def integration_artifacts_dir():
    os.makedirs(ARTIFACTS_DIR, exist_ok=True)
    return ARTIFACTS_DIR


@pytest.fixture(scope="session")
def comfy_host_unstarted(tmp_path_factory, integration_artifacts_dir):
    """The session's ComfyHost with its folders made and the pack linked in, not started yet."""
    log_path = os.path.join(integration_artifacts_dir, "comfyui-server.log")
    if os.path.exists(log_path):
        os.remove(log_path)
    try:
        host = ComfyHost(base_dir=str(tmp_path_factory.mktemp("comfy_base")), log_path=log_path,
                         frontend_settings=FRONTEND_SETTINGS, extra_args=SERVER_ARGS)
    except HostError as e:
        pytest.fail(f"cannot set up the ComfyUI host: {e}", pytrace=False)
    _STATE["host"] = host
    yield host
    host.stop()


@pytest.fixture(scope="session")
def host_models_dir(comfy_host_unstarted):
    """models/ of the session server; populate it from fixtures listed in HOST_SETUP_FIXTURES."""
    return comfy_host_unstarted.models_dir


@pytest.fixture(scope="session")
def host_input_dir(comfy_host_unstarted):
    return comfy_host_unstarted.input_dir


@pytest.fixture(scope="session")
def host_setup(request, comfy_host_unstarted):
    """Run the HOST_SETUP_FIXTURES (before the server starts); {name: value}."""
    if comfy_host_unstarted.running:
        raise HostError("host_setup requested after the server started")
    return {name: request.getfixturevalue(name) for name in HOST_SETUP_FIXTURES}


@pytest.fixture(scope="session")
def smoke_model_file(host_models_dir):
    """An example setup fixture: a valid, empty safetensors file in models/checkpoints -> (folder, name)."""
    folder, name = "checkpoints", "stepvideo_smoke_empty.safetensors"
    header = b"{}" + b" " * 6
    os.makedirs(os.path.join(host_models_dir, folder), exist_ok=True)
    with open(os.path.join(host_models_dir, folder, name), "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
    return folder, name


@pytest.fixture(scope="session")
def comfy_host(comfy_host_unstarted, host_setup):
    """The running session server (started once; stopped at session end)."""
    host = comfy_host_unstarted
    if not host.running:
        try:
            host.start()
        except HostError as e:
            pytest.fail(str(e), pytrace=False)
        record_timing("server_startup_s", host.startup_seconds)
    yield host
    host.stop()


@pytest.fixture(scope="session")
def comfy_client(comfy_host):
    return comfy_host.client


# --------------------------------------------------------------------------------------------- browser

@pytest.fixture(scope="session")
def _browser_session(comfy_host, integration_artifacts_dir):
    from browser import ComfyBrowser, browser_available

    problem = browser_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run: {problem}", pytrace=False)
        pytest.skip(f"browser tests skipped: {problem}")
    page = ComfyBrowser(comfy_host.url, os.path.join(integration_artifacts_dir, "browser"))
    t0 = time.monotonic()
    page.start()
    record_timing("browser_start_and_page_ready_s", time.monotonic() - t0)
    yield page
    page.close()


@pytest.fixture
def comfy_browser(request, _browser_session):
    """The session's Chromium on a freshly (re)loaded ComfyUI page; screenshot on failure."""
    page = _browser_session
    if page.driver is None:
        pytest.fail("the session browser is gone (closed after an earlier error)")
    if page.used:
        page.open()
    page.console_log()  # start each test with an empty console buffer
    page.used = True
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        page.screenshot("FAILED-" + request.node.name)
