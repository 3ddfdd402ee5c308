"""Start and stop a real ComfyUI server with this pack installed (no torch import: a CLI starts quickly).

    from harness.server import ComfyHost
    host = ComfyHost()                      # throwaway base directory; nothing starts yet
    # ... write model files under host.models_dir / input files under host.input_dir ...
    with host:                              # starts, waits until ready, ALWAYS stops
        host.assert_pack_loaded()           # the pack's nodes are served by /object_info
        entry = host.client.run_prompt(api_prompt)   # host.client: a harness.client.ComfyClient

The server runs `main.py --cpu --disable-api-nodes` on 127.0.0.1 and a free port, with a throwaway
`--base-directory` (models/ input/ output/ user/ custom_nodes/ temp/ inside), an in-memory database,
and only this pack loaded: it is linked into custom_nodes/ as PACK_FOLDER_NAME whatever the clone's path.
Its log goes to a file (kept under artifacts/). Stopping terminates, then kills, its whole process
group; an atexit hook, SIGTERM/SIGHUP handlers and a parent-death signal make sure nothing is left.

Which ComfyUI: the comfyui_path argument, else $COMFYUI_PATH, else .host/ComfyUI (made by scripts/bootstrap.sh).
Which Python: the python argument, else $COMFY_HOST_PYTHON, else .venv/bin/python, else this interpreter.
Extra server flags: $COMFY_HOST_EXTRA_ARGS (e.g. "--verbose DEBUG").
"""

import atexit
import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from stepvideo_pack.multigpu.pool import free_port

from . import REPO
from .client import ComfyClient, HostError

PACK_FOLDER_NAME = "ComfyUI-StepVideo"
DEFAULT_HOST_DIR = os.path.join(REPO, ".host", "ComfyUI")
ARTIFACTS = os.path.join(REPO, "artifacts")
EMBEDDED_MODEL_NAME = "stepvideo-tiny"  # the embedded model's folder, also its name under models/stepvideo/
EMBEDDED_MODEL_DIR = os.path.join(REPO, "weights", EMBEDDED_MODEL_NAME)


_LIVE_HOSTS = set()
_LIVE_LOCK = threading.Lock()
_SIGNALS_INSTALLED = False


def _stop_all_hosts():
    with _LIVE_LOCK:
        hosts = list(_LIVE_HOSTS)
    for host in hosts:
        host.stop()


def _install_signal_handlers():
    """Turn SIGTERM/SIGHUP into SystemExit so context managers and atexit stop servers (main thread only)."""
    global _SIGNALS_INSTALLED
    if _SIGNALS_INSTALLED or threading.current_thread() is not threading.main_thread():
        return
    _SIGNALS_INSTALLED = True

    def handler(signum, frame):
        _stop_all_hosts()
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, handler)


atexit.register(_stop_all_hosts)


def die_with_parent():
    """preexec_fn: the server gets SIGKILL if the process that started it dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


_REAPER_SOURCE = """import os, signal, sys
sys.stdin.buffer.read()  # returns when the pipe's only writer (the starting process) closes it or dies
try:
    os.killpg(int(sys.argv[1]), signal.SIGKILL)
except OSError:
    pass
"""


class GroupReaper:
    """Kill a process group when this process dies, however it dies (SIGKILL included), or on fire().

    A tiny watcher process in its own session blocks on a pipe whose write end only this process holds
    (non-inheritable, so children never keep it open); when it closes, the watcher kills the group.
    This also catches grandchildren a parent-death signal would miss (Chromium under ChromeDriver,
    an ffmpeg under the server)."""

    def __init__(self, pgid):
        read_end, self._write_end = os.pipe()
        try:
            self._watcher = subprocess.Popen([sys.executable, "-c", _REAPER_SOURCE, str(pgid)], stdin=read_end,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                             start_new_session=True)
        finally:
            os.close(read_end)

    def fire(self):
        """Kill the group now (idempotent)."""
        if self._write_end is not None:
            os.close(self._write_end)
            self._write_end = None
            try:
                self._watcher.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._watcher.kill()


def wait_until_serving(proc, client, timeout, poll=0.25):
    """Return once the server process ``proc`` answers ``client``'s GET /system_stats; HostError when the
    process exits first ("exited with code N while starting") or ``timeout`` seconds pass ("not ready")."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise HostError(f"ComfyUI exited with code {proc.returncode} while starting")
        try:
            client.system_stats(timeout=2)
            return
        except (OSError, HostError):
            pass
        if time.monotonic() > deadline:
            raise HostError(f"ComfyUI not ready after {timeout} s")
        time.sleep(poll)


def default_comfyui_path():
    return os.path.abspath(os.environ.get("COMFYUI_PATH") or DEFAULT_HOST_DIR)


def default_python():
    """$COMFY_HOST_PYTHON (the interpreter scripts/bootstrap.py made for a second host), else .venv's."""
    if os.environ.get("COMFY_HOST_PYTHON"):
        return os.environ["COMFY_HOST_PYTHON"]
    venv_python = os.path.join(REPO, ".venv", "bin", "python")
    return venv_python if os.path.exists(venv_python) else sys.executable


class ComfyHost:
    """One ComfyUI server process with this pack linked in. See the module docstring."""

    def __init__(self, comfyui_path=None, python=None, base_dir=None, port=None, log_path=None,
                 pack_dir=REPO, pack_name=PACK_FOLDER_NAME, only_this_pack=True, cpu=True,
                 extra_args=(), env=None, startup_timeout=180, frontend_settings=None):
        self.comfyui_path = os.path.abspath(comfyui_path or default_comfyui_path())
        if not os.path.isfile(os.path.join(self.comfyui_path, "main.py")):
            raise HostError(f"no ComfyUI at {self.comfyui_path} (run scripts/bootstrap.sh, or set COMFYUI_PATH)")
        self.python = python or default_python()
        self._owns_base = base_dir is None
        self.base_dir = os.path.abspath(base_dir or tempfile.mkdtemp(prefix="comfy-stepvideo-"))
        self.models_dir = os.path.join(self.base_dir, "models")
        self.input_dir = os.path.join(self.base_dir, "input")
        self.output_dir = os.path.join(self.base_dir, "output")
        self.user_dir = os.path.join(self.base_dir, "user")
        self.custom_nodes_dir = os.path.join(self.base_dir, "custom_nodes")
        self.pack_dir = os.path.abspath(pack_dir)
        self.pack_name = pack_name
        self.pack_link = os.path.join(self.custom_nodes_dir, pack_name)
        self.requested_port = port
        self.port = None
        self.log_path = os.path.abspath(log_path or os.path.join(
            ARTIFACTS, "comfy_host", time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}.log"))
        self.only_this_pack = only_this_pack
        self.cpu = cpu
        self.extra_args = list(extra_args) + shlex.split(os.environ.get("COMFY_HOST_EXTRA_ARGS", ""))
        self.env = env
        self.startup_timeout = startup_timeout
        self.proc = None
        self.client = None
        self.startup_seconds = None
        self._log_file = None
        self._reaper = None
        self._prepare_dirs(frontend_settings)

    # -- layout
    def _prepare_dirs(self, frontend_settings):
        for d in (self.models_dir, self.input_dir, self.output_dir, self.user_dir, self.custom_nodes_dir):
            os.makedirs(d, exist_ok=True)
        if os.path.islink(self.pack_link) or os.path.exists(self.pack_link):
            if os.path.realpath(self.pack_link) != os.path.realpath(self.pack_dir):
                if not os.path.islink(self.pack_link):
                    raise HostError(f"{self.pack_link} exists and is not a link to {self.pack_dir}")
                os.remove(self.pack_link)
        if not os.path.islink(self.pack_link):
            os.symlink(self.pack_dir, self.pack_link, target_is_directory=True)
        if frontend_settings:
            settings_path = os.path.join(self.user_dir, "default", "comfy.settings.json")
            os.makedirs(os.path.dirname(settings_path), exist_ok=True)
            current = {}
            if os.path.exists(settings_path):
                with open(settings_path, encoding="utf-8") as f:
                    current = json.load(f)
            current.update(frontend_settings)
            with open(settings_path, "w", encoding="utf-8") as f:
                json.dump(current, f, indent=1)

    def offer_embedded_model(self):
        """Link weights/stepvideo-tiny into models/stepvideo/stepvideo-tiny (as a user drops an official
        download there), unless that name is taken already. Returns the folder's path."""
        if not os.path.isdir(os.path.join(EMBEDDED_MODEL_DIR, "transformer")):
            raise HostError(f"the embedded weights are missing: {EMBEDDED_MODEL_DIR}")
        link = os.path.join(self.models_dir, "stepvideo", EMBEDDED_MODEL_NAME)
        if not os.path.lexists(link):
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(EMBEDDED_MODEL_DIR, link, target_is_directory=True)
        return link

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def command(self):
        cmd = [self.python, "-u", os.path.join(self.comfyui_path, "main.py"),
               "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", self.base_dir,
               "--database-url", "sqlite:///:memory:",
               "--disable-api-nodes", "--disable-auto-launch", "--log-stdout"]
        if self.cpu:
            cmd.append("--cpu")
        if self.only_this_pack:
            cmd += ["--disable-all-custom-nodes", "--whitelist-custom-nodes", self.pack_name]
        return cmd + self.extra_args

    # -- lifecycle
    def start(self):
        if self.proc is not None:
            raise HostError("already started")
        _install_signal_handlers()
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        env = dict(os.environ if self.env is None else self.env)
        env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"})
        for attempt in range(3):
            self.port = self.requested_port or free_port()
            self._log_file = open(self.log_path, "a", encoding="utf-8")
            self._log_file.write(f"# {' '.join(shlex.quote(c) for c in self.command())}\n")
            self._log_file.flush()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(self.command(), cwd=self.comfyui_path, env=env, stdin=subprocess.DEVNULL,
                                         stdout=self._log_file, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=die_with_parent)
            self._reaper = GroupReaper(self.proc.pid)
            with _LIVE_LOCK:
                _LIVE_HOSTS.add(self)
            self.client = ComfyClient(self.url)
            try:
                wait_until_serving(self.proc, self.client, self.startup_timeout)
            except HostError as e:
                failure = HostError(f"{e}; log {self.log_path}:\n{self.log_tail()}")
                retry = ("address already in use" in self.log_tail(4000).lower()
                         and self.requested_port is None and attempt < 2)
                self.stop(remove_base=not retry)
                if not retry:
                    raise failure from None
                continue
            self.startup_seconds = time.monotonic() - t0
            return self

    def stop(self, remove_base=True):
        """Terminate the process group, kill it after 10 s; idempotent. Removes a throwaway base dir."""
        proc, self.proc = self.proc, None
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    # the group may outlive its leader: make sure nothing in it survives
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
                break
            try:
                proc.wait(timeout=10)  # reap it (no zombie) whichever way the loop ended
            except subprocess.TimeoutExpired:
                pass
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.fire()
        with _LIVE_LOCK:
            _LIVE_HOSTS.discard(self)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if remove_base and self._owns_base and os.path.isdir(self.base_dir):
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # -- log (for people reading failures; pass/fail never depends on its wording)
    def log_text(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, chars=6000):
        return self.log_text()[-chars:]

    # -- the pack, as the HTTP API sees it
    def pack_nodes(self):
        """{class_type: info} of the nodes /object_info attributes to this pack (none when its import failed)."""
        module = f"custom_nodes.{self.pack_name}"
        return {name: info for name, info in self.client.object_info().items()
                if info.get("python_module") == module}

    def assert_pack_loaded(self):
        """The pack's nodes as /object_info serves them; HostError (with the log tail to read) when there are none."""
        nodes = self.pack_nodes()
        if not nodes:
            raise HostError(f"{self.pack_name} serves no nodes: its import failed or it was not loaded; log "
                            f"{self.log_path}:\n{self.log_tail()}")
        return nodes
