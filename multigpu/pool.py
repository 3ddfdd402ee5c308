"""Coordinator side of the multi-GPU workers: start them, send them forwards, always tear them down.

The coordinator (the ComfyUI process) holds no rank: it sends each forward's inputs to every worker
(multigpu/worker.py) and gets the output from rank 0. While it waits it watches the workers: one that
exits or fails stops the whole pool (the others could be blocked in a collective) and raises
:class:`WorkerError` naming the rank and why; the next forward starts a fresh pool. ``should_stop``
(the host's interrupt flag) is forwarded to the workers, which all stop at the same block.
Workers run in their own session (a Ctrl+C meant for the server reaches them only through the
coordinator) and exit by themselves when the coordinator's connection closes, however it dies.
"""

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Listener, wait

from .worker import recv, send

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
EXIT_GRACE_S = 5.0  # how long a worker whose connection closed may take to report its exit status


class WorkerError(RuntimeError):
    """A worker exited, failed, or did not start; the pool has been stopped."""


class WorkerInterrupted(Exception):
    """The workers stopped the forward because ``should_stop`` said so."""


def parse_devices(text, world, cuda_count):
    """Devices of the ranks from "auto", "cpu", or a comma list ("cuda:0,cuda:1" / "0,1"); one per rank.

    auto: cuda:0..world-1 when there are CUDA GPUs (enough of them), else CPU for every rank.
    """
    text = text.strip().lower()
    if text == "auto":
        if cuda_count == 0:
            return ["cpu"] * world
        if cuda_count < world:
            raise ValueError(f"{world} ranks need {world} GPUs, this machine has {cuda_count}")
        return [f"cuda:{i}" for i in range(world)]
    if text == "cpu":
        return ["cpu"] * world
    devices = [d.strip() if not d.strip().isdigit() else f"cuda:{d.strip()}" for d in text.split(",") if d.strip()]
    if len(devices) != world:
        raise ValueError(f"devices {text!r} names {len(devices)} devices for {world} ranks (cfg x sequence degree)")
    for d in devices:
        if d != "cpu" and not (d.startswith("cuda:") and d[5:].isdigit() and int(d[5:]) < cuda_count):
            raise ValueError(f"device {d!r} in {text!r} is not 'cpu' or one of the {cuda_count} CUDA GPUs (cuda:N)")
    if len({d for d in devices if d != "cpu"}) != sum(d != "cpu" for d in devices):
        raise ValueError(f"devices {text!r}: each GPU can hold one rank")
    if 0 < sum(d == "cpu" for d in devices) < world:
        raise ValueError(f"devices {text!r}: mixing CPU and GPU ranks is not supported")
    return devices


def free_port():
    """A TCP port free on 127.0.0.1 now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs, conns):
    """Ask the workers to stop, then kill whatever is left (idempotent; also run at exit and on collection)."""
    for conn in filter(None, conns):
        try:
            send(conn, ("stop",))
            conn.close()
        except OSError:
            pass
    deadline = time.monotonic() + 3.0
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    procs.clear()
    conns.clear()


class WorkerPool:
    """``cfg_degree x sequence_degree`` worker processes holding the DiT of ``spec`` (see worker.py "load")."""

    def __init__(self, spec, cfg_degree, sequence_degree, devices, threads=None, start_timeout=600.0):
        self.spec, self.cfg_degree, self.sequence_degree = spec, cfg_degree, sequence_degree
        self.world = cfg_degree * sequence_degree
        if len(devices) != self.world:
            raise ValueError(f"{len(devices)} devices for {self.world} ranks")
        self.devices = devices
        self.threads = threads or max(1, (os.cpu_count() or 1) // self.world)
        self.start_timeout = start_timeout
        self.procs, self.conns = [], []  # by rank
        self._finalizer = None

    @property
    def running(self):
        return bool(self.procs)

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def start(self):
        """Start the workers and load the DiT in each (no-op when running). Raises WorkerError on failure."""
        if self.running:
            return
        key = secrets.token_bytes(32)
        listener = Listener(("127.0.0.1", 0), authkey=key)
        init = f"tcp://127.0.0.1:{free_port()}"
        env = dict(os.environ, STEPVIDEO_WORKER_KEY=key.hex(), PYTHONUNBUFFERED="1")
        self.procs = [subprocess.Popen(
            [sys.executable, WORKER_SCRIPT, "--address", "%s:%d" % listener.address, "--init", init,
             "--rank", str(rank), "--cfg", str(self.cfg_degree), "--sequence", str(self.sequence_degree),
             "--device", device, "--threads", str(self.threads), "--parent", str(os.getpid())],
            env=env, stdin=subprocess.DEVNULL, start_new_session=True) for rank, device in enumerate(self.devices)]
        self.conns = [None] * self.world
        self._finalizer = weakref.finalize(self, _stop, self.procs, self.conns)
        accepted = []
        threading.Thread(target=self._accept, args=(listener, accepted), daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        try:
            while len(accepted) < self.world:
                self._check_alive(range(self.world), "while starting")
                if time.monotonic() > deadline:
                    raise self._failure(f"the workers did not connect within {self.start_timeout:.0f} s")
                time.sleep(0.05)
        finally:
            listener.close()
        for conn, hello in accepted:
            self.conns[hello[1]] = conn
        self._request(("load", self.spec))

    @staticmethod
    def _accept(listener, accepted):
        try:
            while True:
                conn = listener.accept()
                accepted.append((conn, recv(conn)))
        except (OSError, EOFError):
            pass  # listener closed

    def forward(self, inputs, should_stop=None):
        """The official forward's output (B, F, C, H, W) for keyword ``inputs`` (CPU tensors and numbers).

        Starts the pool if needed. Raises WorkerInterrupted when ``should_stop()`` turned true and the
        workers stopped part-way, WorkerError when a worker failed or died (the pool is then stopped).
        """
        self.start()
        replies = self._request(("forward", inputs), should_stop)
        if any(r[0] == "interrupted" for r in replies):
            raise WorkerInterrupted()
        return replies[0][1]

    def _request(self, message, should_stop=None):
        """Send ``message`` to every rank; their replies by rank."""
        self._check_alive(range(self.world), "since the last request")
        for rank, conn in enumerate(self.conns):
            try:
                send(conn, message)
            except OSError as e:
                self._check_alive([rank], "before a request")
                raise self._failure(f"cannot reach worker rank {rank}: {e}") from None
        pending = dict(zip(self.conns, range(self.world)))
        replies, interrupt_sent = [None] * self.world, False
        while pending:
            if should_stop is not None and not interrupt_sent and should_stop():
                for conn in self.conns:
                    send(conn, ("interrupt",))
                interrupt_sent = True
            for conn in wait(list(pending), timeout=0.2):
                rank = pending.pop(conn)
                try:
                    replies[rank] = recv(conn)
                except (EOFError, OSError):
                    # A dying process closes its sockets before its exit status is ready: give it a moment,
                    # so the error names the exit code rather than only the closed connection.
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.procs[rank].wait(timeout=EXIT_GRACE_S)
                    self._check_alive([rank], "during a request")
                    raise self._failure(f"worker rank {rank} closed its connection") from None
                if replies[rank][0] == "error":
                    raise self._failure(f"worker rank {rank} ({self.devices[rank]}) failed:\n{replies[rank][1]}")
            self._check_alive([r for r in pending.values()], "during a request")
        return replies

    def _check_alive(self, ranks, when):
        for rank in ranks:
            proc = self.procs[rank]
            if proc.poll() is not None:
                conn = self.conns[rank] if rank < len(self.conns) else None
                if conn is not None and conn.poll(0):  # it said why before exiting
                    try:
                        reply = recv(conn)
                        if reply[0] == "error":
                            raise self._failure(f"worker rank {rank} ({self.devices[rank]}) failed:\n{reply[1]}")
                    except (EOFError, OSError):
                        pass
                raise self._failure(f"worker rank {rank} (pid {proc.pid}, {self.devices[rank]}) exited with code "
                                    f"{proc.returncode} {when}")

    def _failure(self, message):
        self.close()
        return WorkerError(f"Step-Video Multi-GPU: {message}. All workers were stopped; the next run starts new ones.")

    def close(self):
        """Stop every worker (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()
        self.procs, self.conns = [], []
