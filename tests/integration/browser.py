"""Drive the real ComfyUI page in headless Chromium (Debian's chromium + chromium-driver, via Selenium).

    with ComfyBrowser(host.url, artifacts_dir) as page:   # starts Chromium, opens the page, waits for app
        page.drop_json(workflow_ui)                        # a real `drop` DragEvent carrying a File
        page.wait_for_node_types({"EmptyImage", "SaveImage"})
        graph = page.graph()                               # app.graph.serialize(): UI format
        page.set_widget(1, "width", 80)                    # a user edit (runs the widget callback)
        page.fix_seed_controls()                           # 'control after generate' -> fixed
        entry = page.run_from_page(client)                 # app.queuePrompt(0, 1), then /history entry
        page.screenshot("name")                            # -> artifacts_dir/name.png
        page.drop_file("clip.mp4", mp4_bytes, "video/mp4") # a video carrying its workflow/prompt

Chromium runs with the flags this machine needs (no sandbox as root, no background networking: the
network is closed) and a fresh --user-data-dir. ChromeDriver and Chromium live in their own process group,
get SIGKILL if the test process dies, and are killed as a group by close().
"""

import base64
import json
import os
import shutil
import signal
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import JavascriptException, WebDriverException
from selenium.webdriver.chrome.service import Service

from harness.server import GroupReaper, die_with_parent

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BINARY", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--no-default-browser-check", "--mute-audio"]


def browser_available():
    """None when Chromium and ChromeDriver are installed, else a sentence saying what is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    return None if not missing else f"missing {', '.join(missing)} (run scripts/install_browser.sh)"


_DROP_JS = """
const [name, mime, b64, done] = arguments;
try {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const file = new File([bytes], name, {type: mime});
  const dt = new DataTransfer();
  dt.items.add(file);
  const target = document.querySelector('#graph-canvas') || document.querySelector('canvas');
  if (!target) { done('no graph canvas in the page'); return; }
  const rect = target.getBoundingClientRect();
  const at = {bubbles: true, cancelable: true, dataTransfer: dt,
              clientX: rect.left + rect.width / 2, clientY: rect.top + rect.height / 2};
  for (const type of ['dragenter', 'dragover', 'drop']) target.dispatchEvent(new DragEvent(type, at));
  done(null);
} catch (e) { done(String(e && e.stack || e)); }
"""

_QUEUE_JS = """
const done = arguments[arguments.length - 1];
Promise.resolve(window.app.queuePrompt(0, 1)).then(r => done({ok: true, result: r === undefined ? null : r}),
                                                    e => done({ok: false, error: String(e && e.stack || e)}));
"""


class BrowserError(AssertionError):
    pass


class ComfyBrowser:
    def __init__(self, url, artifacts_dir, width=1600, height=1000, page_timeout=90):
        self.url = url.rstrip("/")
        self.artifacts_dir = artifacts_dir
        self.width, self.height = width, height
        self.page_timeout = page_timeout
        self.driver = None
        self.service = None
        self.user_data_dir = None
        self.ready_seconds = None
        self.used = False  # set by fixtures: reload before the next test
        self.console_entries = []
        self._reaper = None

    # -- lifecycle
    def start(self):
        problem = browser_available()
        if problem:
            raise BrowserError(problem)
        os.makedirs(self.artifacts_dir, exist_ok=True)
        self.user_data_dir = tempfile.mkdtemp(prefix="chromium-comfy-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={self.user_data_dir}",
                                      f"--window-size={self.width},{self.height}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.service = Service(executable_path=CHROMEDRIVER,
                               log_output=os.path.join(self.artifacts_dir, "chromedriver.log"),
                               popen_kw={"start_new_session": True, "preexec_fn": die_with_parent})
        try:
            self.driver = webdriver.Chrome(service=self.service, options=options)
            self._reaper = GroupReaper(self.service.process.pid)  # Chromium runs in ChromeDriver's group
            self.driver.set_script_timeout(120)
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def open(self, forget_workflows=True):
        """(Re)load the page and wait until the frontend's `app` has a graph and a canvas.

        forget_workflows: clear the page's local/session storage first, so the frontend does not
        restore the workflows (tabs) of the previous test."""
        t0 = time.monotonic()
        if forget_workflows and self.driver.current_url.startswith(self.url):
            self.js("localStorage.clear(); sessionStorage.clear();")
        self.driver.get(self.url + "/")
        self.wait_for("window.app && window.app.graph && window.app.canvas && "
                      "document.querySelector('#graph-canvas') && true", self.page_timeout, "window.app ready")
        self.ready_seconds = time.monotonic() - t0
        self.used = False

    def close(self):
        """Quit Chromium and ChromeDriver; kill their process group in any case; idempotent."""
        if self.driver is not None:
            self.console_log()
            try:
                with open(os.path.join(self.artifacts_dir, "console.json"), "w", encoding="utf-8") as f:
                    json.dump(self.console_entries, f, indent=1)
            except OSError:
                pass
        driver, self.driver = self.driver, None
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        service, self.service = self.service, None
        process = getattr(service, "process", None)
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                process.wait(timeout=10)
            except Exception:
                pass
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.fire()
        if self.user_data_dir:
            shutil.rmtree(self.user_data_dir, ignore_errors=True)
            self.user_data_dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False

    # -- page helpers
    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def wait_for(self, expression, timeout=30, what=None):
        """Poll a JS expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        last_error = None
        while True:
            try:
                value = self.js("return (" + expression + ");")
                if value:
                    return value
            except JavascriptException as e:
                last_error = e
            if time.monotonic() > deadline:
                self.screenshot("timeout-" + "".join(c if c.isalnum() else "_" for c in (what or "wait"))[:40])
                raise BrowserError(f"timed out after {timeout} s waiting for {what or expression}"
                                   + (f" (last JS error: {last_error.msg})" if last_error else ""))
            time.sleep(0.2)

    def drop_file(self, name, data, mime_type):
        """Dispatch dragenter/dragover/drop with a File (name, bytes, MIME type) on the graph canvas."""
        b64 = base64.b64encode(data).decode("ascii")
        error = self.driver.execute_async_script(_DROP_JS, name, mime_type, b64)
        if error:
            raise BrowserError(f"drop of {name} failed in the page: {error}")

    def drop_json(self, obj, name="workflow.json"):
        self.drop_file(name, json.dumps(obj).encode(), "application/json")

    def graph(self):
        """The current graph in UI format (app.graph.serialize())."""
        return self.js("return window.app.graph.serialize();")

    def node_types(self):
        return sorted(n["type"] for n in self.graph()["nodes"])

    def nodes_of_type(self, node_type):
        return [n for n in self.graph()["nodes"] if n["type"] == node_type]

    def wait_for_node_types(self, expected, timeout=30):
        """Wait until the graph holds exactly these node types (a set, or a list with multiplicity)."""
        expected_sorted = sorted(expected)
        deadline = time.monotonic() + timeout
        while True:
            found = self.node_types()
            if (found == expected_sorted) if isinstance(expected, (list, tuple)) else (set(found) == set(expected)):
                return found
            if time.monotonic() > deadline:
                self.screenshot("timeout-node-types")
                raise BrowserError(f"graph node types {found}, expected {expected_sorted}")
            time.sleep(0.2)

    def api_prompt(self):
        """What the page would send: app.graphToPrompt() -> {"output": API format, "workflow": UI format}."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.app.graphToPrompt().then(r => done({output: r.output, workflow: r.workflow}),"
            " e => done({error: String(e)}));")

    def queue(self):
        """Click-equivalent of Queue: app.queuePrompt(0, 1) in the page."""
        result = self.driver.execute_async_script(_QUEUE_JS)
        if not result.get("ok"):
            raise BrowserError(f"app.queuePrompt failed: {result.get('error')}")
        return result.get("result")

    def queue_and_wait_id(self, client, timeout=30):
        """Queue from the page and return the new prompt's id (found through the server's /queue and /history)."""
        def known():
            q = client.queue()
            ids = {item[1] for item in q.get("queue_running", []) + q.get("queue_pending", [])}
            return ids | set(client.history())
        before = known()
        self.queue()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = known() - before
            if new:
                if len(new) > 1:
                    raise BrowserError(f"one queue click made several prompts: {sorted(new)}")
                return new.pop()
            time.sleep(0.1)
        self.screenshot("timeout-queue")
        raise BrowserError(f"no prompt reached the server within {timeout} s of app.queuePrompt")

    def run_from_page(self, client, timeout=120):
        """Queue from the page and wait for the run; returns the /history entry (any status)."""
        prompt_id = self.queue_and_wait_id(client)
        return client.wait_for_history(prompt_id, timeout=timeout)

    def set_widget(self, node_id, name, value):
        """Set a widget of a node in the page's graph, as a user edit would (runs the widget callback)."""
        error = self.js("""
            const [id, name, value] = arguments;
            const node = window.app.graph.getNodeById(id);
            if (!node) return 'no node ' + id;
            const w = (node.widgets || []).find(w => w.name === name);
            if (!w) return 'node ' + id + ' has no widget ' + name + ': ' + (node.widgets || []).map(w => w.name);
            w.value = value;
            if (w.callback) w.callback(value, window.app.canvas, node);
            window.app.graph.setDirtyCanvas(true, true);
            return null;""", node_id, name, value)
        if error:
            raise BrowserError(error)

    def fix_seed_controls(self):
        """Set every 'control after generate' widget to 'fixed' (the frontend adds one, set to 'randomize',
        after each input named seed/noise_seed, so queuing from the page would otherwise change seeds).
        Returns how many were changed."""
        return self.js("""
            let count = 0;
            for (const node of window.app.graph.nodes)
              for (const w of (node.widgets || []))
                if (w.name === 'control_after_generate' && w.value !== 'fixed') { w.value = 'fixed'; count++; }
            return count;""")

    def screenshot(self, name):
        """Save a PNG of the page into the artifacts folder and return its path."""
        if self.driver is None:
            return None
        path = os.path.join(self.artifacts_dir, name + ".png")
        try:
            self.driver.save_screenshot(path)
        except WebDriverException:
            return None
        return path

    def console_log(self):
        """Browser console entries since the last call ([{level, message, ...}]); all of them are also
        written to console.json in the artifacts folder when the browser closes."""
        try:
            entries = self.driver.get_log("browser")
        except WebDriverException:
            return []
        self.console_entries.extend(entries)
        return entries

    def pack_console_problems(self, script_path="/extensions/ComfyUI-StepVideo/"):
        """Console warnings and errors since the last call that come from the pack's own scripts: logged by them
        (the message starts with their URL) or about them (the frontend naming their URL, e.g. a failed load).
        Everything else is the frontend's or the browser's own output, which differs between host versions
        (it may even name our nodes, e.g. a blocked look-up of them in an online registry)."""
        return [e for e in self.console_log()
                if e.get("level") in ("WARNING", "SEVERE") and script_path in e.get("message", "")]
