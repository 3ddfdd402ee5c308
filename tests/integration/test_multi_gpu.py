"""StepVideo Multi-GPU through a real ComfyUI server (CPU, gloo, 2 worker processes).

The module starts its own server (the last test stops it): the embedded model sampled by 2 workers gives the
same latent as one process, with our sampler (sequence degree 2) and with KSampler (CFG degree 2); an
interrupt stops a long run and the workers serve the next one; a killed worker fails that prompt with an
error naming it and the server keeps serving; after the server stops, no worker process remains.
"""

import os
import signal
import time

import pytest

from harness.client import status_str
from harness import REPO
from harness.server import ComfyHost
from stepvideo_setup import EMBEDDED, HEIGHT, WIDTH, saved_latent, text_to_latent_graph

pytestmark = pytest.mark.multigpu


def worker_pids(server_pid):
    """Pids of the multi-GPU workers (multigpu/worker.py) the server process started."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a.endswith(os.path.join("multigpu", "worker.py")) for a in args) and \
                "--parent" in args and args[args.index("--parent") + 1] == str(server_pid):
            pids.append(int(entry))
    return sorted(pids)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def host(tmp_path_factory, integration_artifacts_dir):
    """A server of its own with the embedded model in models/stepvideo/ (stopped by the last test)."""
    server = ComfyHost(base_dir=str(tmp_path_factory.mktemp("multigpu_base")),
                       log_path=os.path.join(integration_artifacts_dir, "comfyui-multigpu-server.log"))
    os.makedirs(os.path.join(server.models_dir, "stepvideo"))
    os.symlink(os.path.join(REPO, "weights", EMBEDDED), os.path.join(server.models_dir, "stepvideo", EMBEDDED))
    server.start()
    yield server
    server.stop()


def prompt(sampler="StepVideoSampler", sequence=None, cfg_degree=1, steps=3, seed=7, size=(WIDTH, HEIGHT, 17),
           shard=False):
    """Encode, (StepVideo Multi-GPU), sample the embedded model (96x64x17) with CFG 4, save the LATENT."""
    graph = text_to_latent_graph(EMBEDDED, EMBEDDED, EMBEDDED, size, steps, 4.0, 5.0, seed, negative="blurry",
                                 prefix="StepVideo/multigpu")
    model = ["1", 0]
    if sequence is not None:
        graph["7"] = {"class_type": "StepVideoMultiGPU", "inputs": {
            "model": model, "sequence_degree": sequence, "cfg_degree": cfg_degree, "devices": "cpu",
            "shard_weights": shard}}
        model = ["7", 0]
    graph["5"]["inputs"]["model"] = model
    if sampler == "KSampler":
        graph["5"] = {"class_type": "KSampler", "inputs": {
            "model": model, "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["4", 0], "seed": seed,
            "steps": steps, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
    return graph


def latent_of(client, graph):
    return saved_latent(client, client.run_prompt(graph, timeout=300), "6").float()


@pytest.mark.parametrize("sampler, sequence, cfg_degree, shard", [("StepVideoSampler", 2, 1, False),
                                                                  ("KSampler", 1, 2, False),
                                                                  ("StepVideoSampler", 2, 1, True)])
def test_two_workers_give_the_one_process_latent(host, sampler, sequence, cfg_degree, shard):
    reference = latent_of(host.client, prompt(sampler))
    other_seed = latent_of(host.client, prompt(sampler, seed=8))
    parallel = latent_of(host.client, prompt(sampler, sequence, cfg_degree, shard=shard))
    assert len(worker_pids(host.proc.pid)) == 2
    assert parallel.shape == reference.shape
    error = (parallel - reference).abs().max().item()
    assert error <= 1e-4 * max(1.0, reference.abs().max().item()), error
    assert (other_seed - reference).abs().max().item() > 100 * max(error, 1e-6)  # the comparison can tell


def test_interrupt_stops_the_workers_run_and_they_serve_the_next(host):
    prompt_id = host.client.queue_prompt(prompt(sequence=2, steps=500, size=(256, 256, 51)))  # minutes of work
    host.client.wait_until_running(prompt_id)
    time.sleep(2.0)  # into the sampling steps (the models are loaded by the earlier tests)
    started = time.monotonic()
    host.client.interrupt()
    entry = host.client.wait_for_history(prompt_id, timeout=60)
    assert status_str(entry) != "success"  # stopped before the end ...
    assert not [m for m in entry["status"]["messages"] if m[0] == "execution_error"]  # ... by the interrupt
    assert time.monotonic() - started < 20
    assert latent_of(host.client, prompt(sequence=2)).isfinite().all()


def test_killed_worker_fails_the_prompt_clearly_and_the_server_keeps_serving(host):
    latent_of(host.client, prompt(sequence=2))
    victim = worker_pids(host.proc.pid)[-1]
    os.kill(victim, signal.SIGKILL)
    prompt_id = host.client.queue_prompt(prompt(sequence=2, seed=9))
    entry = host.client.wait_for_history(prompt_id, timeout=120)
    assert status_str(entry) == "error"
    text = str(entry["status"]["messages"])
    assert "Multi-GPU" in text and "worker rank" in text and "exited" in text, text
    assert victim not in worker_pids(host.proc.pid)
    assert latent_of(host.client, prompt(sequence=2, seed=9)).isfinite().all()  # new workers
    assert len(worker_pids(host.proc.pid)) == 2


def test_no_worker_outlives_the_server(host):
    latent_of(host.client, prompt(sequence=2))
    pids = worker_pids(host.proc.pid)
    assert len(pids) == 2
    host.stop()  # SIGTERM/SIGKILL to the server's process group; the workers run in sessions of their own
    deadline = time.monotonic() + 15
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)]
