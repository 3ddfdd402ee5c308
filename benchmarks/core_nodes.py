#!/usr/bin/env python3
"""Core ComfyUI model patches on the embedded small model, measured through the nodes' own sampling path.

    python benchmarks/core_nodes.py [--steps 20,50] [--size 128,256] [--thresholds 0.05,0.2] [--repeats 5] [--compile]

On the real default host imported in this process (tests/harness/host_runtime.py), the embedded model samples
"a red circle moves to the right" (seed 3, CFG 3, shift 5, 17 frames) once plain and once per step cache
(the host's EasyCache and LazyCache node functions, start 0.15, end 0.95) and threshold. Reported per run:
DiT forward calls (each is one batched cond + uncond pass, so calls skipped = steps skipped), the wall
time of sampling (median of --repeats runs; the decode is left out: it is the same for every run), and the PSNR of the decoded clip against the plain run's. ``--compile`` also times the host's
TorchCompileModel wrapper (inductor): the first run (compiling) and a second one, against eager.
"""

import argparse
import statistics
import time

import torch

from research import behaviour_metrics  # first: it puts the host on the path and loads the model as the nodes do

import comfy_api.torch_helpers
import comfy_extras.nodes_easycache as caches
from stepvideo_pack.nodes.sampling import run_official_sampler

PROMPT = "a red circle moves to the right"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="20,50")
    parser.add_argument("--size", default="128,256")
    parser.add_argument("--thresholds", default="0.05,0.2")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per setting (median reported)")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    model = behaviour_metrics.TinyModel()
    calls = []
    forward = model.dit._forward
    model.dit._forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    positive, negative = model.conditioning(PROMPT)

    def run(patcher, steps, side, repeats=1):
        """(decoded clip, DiT passes, median sampling seconds over ``repeats`` runs; the decode is left
        out of the time: it costs the same in every run)."""
        latent = {"samples": torch.zeros(1, model.channels, 3, side // 16, side // 16)}
        times = []
        for _ in range(repeats):
            calls.clear()
            start = time.perf_counter()
            out = run_official_sampler(patcher, positive, negative, latent, 3, steps, behaviour_metrics.CFG,
                                       behaviour_metrics.SHIFT, 1.0, callback=lambda *a: None)["samples"]
            times.append(time.perf_counter() - start)
        return model.decode(out), len(calls), statistics.median(times)

    print("| size | steps | patch | threshold | DiT passes | steps skipped | time s | time vs plain | PSNR dB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for side in map(int, args.size.split(",")):
        for steps in map(int, args.steps.split(",")):
            plain, passes, seconds = run(model.model, steps, side, args.repeats)
            print(f"| {side} | {steps} | none | - | {passes} | 0 | {seconds:.2f} | 1.00x | - |", flush=True)
            for node in (caches.EasyCacheNode, caches.LazyCacheNode):
                for threshold in map(float, args.thresholds.split(",")):
                    patched = node.execute(model.model, threshold, 0.15, 0.95, False).args[0]
                    frames, cached, took = run(patched, steps, side, args.repeats)
                    print(f"| {side} | {steps} | {node.__name__[:-4]} | {threshold} | {cached} | {passes - cached} | "
                          f"{took:.2f} | {took / seconds:.2f}x | {behaviour_metrics.psnr(frames, plain):.1f} |",
                          flush=True)
    if args.compile:
        compiled = model.model.clone()
        comfy_api.torch_helpers.set_torch_compile_wrapper(compiled, backend="inductor")
        _, _, eager = run(model.model, 20, 128)
        _, _, first = run(compiled, 20, 128)
        _, _, second = run(compiled, 20, 128)
        print(f"TorchCompileModel (inductor), 20 steps at 128 px: eager {eager:.2f} s, first compiled run "
              f"{first:.2f} s, second {second:.2f} s ({eager / second:.2f}x)")


if __name__ == "__main__":
    main()
