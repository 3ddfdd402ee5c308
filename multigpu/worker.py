"""A worker process of the multi-GPU pool: one rank of the sequence/CFG-parallel DiT.

Started by multigpu/pool.py as ``python multigpu/worker.py --address HOST:PORT --rank R ...`` (the
authentication key in $STEPVIDEO_WORKER_KEY). It connects back to the coordinator (the ComfyUI
process) over a multiprocessing connection, joins the torch.distributed group of the workers, loads
its copy of the DiT and then serves requests (pickled tuples):

    ("load", spec)       spec: path, weight_dtype, compute_dtype, attention, shard_weights -> ("ready",)
    ("forward", inputs)  the official forward's keyword arguments -> ("result", out) from rank 0,
                         ("done",) from the others, ("interrupted",) when stopped part-way
    ("interrupt",)       read by a side thread at any time: every rank stops at the same block
    ("stop",)            exit

A failure answers ("error", traceback text). The worker exits by itself when the coordinator goes away
(end of file on the connection, or its parent process changes), whatever it is doing.
"""

import argparse
import os
import pickle
import queue
import sys
import threading
import time
import traceback

STOP = ("stop",)


def send(conn, message):
    """Send a message by value (plain pickle: torch's multiprocessing pickler would pass tensors as handles)."""
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def recv(conn):
    return pickle.loads(conn.recv_bytes())


class Interrupted(Exception):
    """The coordinator asked to stop the current forward."""


def watch_coordinator(conn, requests, interrupt, parent):
    """Side thread: route messages (interrupt -> event, others -> queue); exit the process when the
    coordinator is gone (connection closed, or the parent process replaced by another)."""

    def orphan_check():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=orphan_check, daemon=True).start()
    while True:
        try:
            message = recv(conn)
        except (EOFError, OSError):
            os._exit(3)  # the coordinator died or closed the pool: no orphan, even mid-forward
        if message[0] == "interrupt":
            interrupt.set()
            continue
        if message[0] == "forward":
            interrupt.clear()  # here, in arrival order: an interrupt sent after this forward is never lost
        requests.put(message)


def interrupt_patch(interrupt, device):
    """A blocks hook (transformer_options patches_replace): before each block, all ranks agree whether
    the coordinator asked to stop (one-element all-reduce), and all raise Interrupted at the same block."""
    import torch
    import torch.distributed as dist

    def patch(args, extra):
        flag = torch.tensor([1.0 if interrupt.is_set() else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():
            raise Interrupted()
        return extra["original_block"](args)

    return patch


def serve(args, conn):
    import torch
    import torch.distributed as dist

    from stepvideo_pack.model_loaders.dit_loader import load_dit
    from stepvideo_pack.multigpu.sequence_parallel import ParallelLayout, parallel_forward
    from stepvideo_pack.multigpu.sharding import shard_blocks
    from stepvideo_pack.networks.attention import resolve_backend

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(args.threads)
    requests, interrupt = queue.Queue(), threading.Event()
    threading.Thread(target=watch_coordinator, args=(conn, requests, interrupt, args.parent), daemon=True).start()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=args.init,
                            rank=args.rank, world_size=args.cfg * args.sequence)
    layout = ParallelLayout.create(args.cfg, args.sequence)
    dit = None
    while True:
        message = requests.get()
        if message == STOP:
            return
        try:
            if message[0] == "load":
                spec = message[1]
                shard = spec.get("shard_weights", False)
                dit = load_dit(spec["path"], weight_dtype=spec["weight_dtype"], compute_dtype=spec["compute_dtype"],
                               device="cpu" if shard else device)
                if shard:
                    shard_blocks(dit, device)
                dit.attention_backend = resolve_backend(spec["attention"])[0]
                send(conn, ("ready",))
            elif message[0] == "forward":
                inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in message[1].items()}
                patches = {("double_block", i): interrupt_patch(interrupt, device)
                           for i in range(len(dit.transformer_blocks))}
                try:
                    out = parallel_forward(dit, layout, transformer_options={"patches_replace": {"dit": patches}},
                                           **inputs)
                except Interrupted:
                    send(conn, ("interrupted",))
                    continue
                send(conn, ("result", out.cpu()) if args.rank == 0 else ("done",))
        except Exception:
            send(conn, ("error", traceback.format_exc()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="coordinator HOST:PORT")
    parser.add_argument("--init", required=True, help="torch.distributed init method (tcp://HOST:PORT)")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--cfg", type=int, required=True)
    parser.add_argument("--sequence", type=int, required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (CPU workers)")
    parser.add_argument("--parent", type=int, required=True, help="coordinator pid (exit when it is gone)")
    args = parser.parse_args(argv)
    from multiprocessing.connection import Client

    host, port = args.address.rsplit(":", 1)
    conn = Client((host, int(port)), authkey=bytes.fromhex(os.environ.pop("STEPVIDEO_WORKER_KEY")))
    send(conn, ("hello", args.rank, os.getpid()))
    code = 0
    try:
        serve(args, conn)
    except BaseException:
        code = 1
        try:
            send(conn, ("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        os._exit(code)  # skip interpreter teardown (daemon threads blocked on the connection, the process group)


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
    from pack_path import import_pack

    import_pack()
    from stepvideo_pack.multigpu.worker import main as package_main

    package_main()
