#!/usr/bin/env python3
"""Memory taken by bad or oversized inputs, before (the old code path, written out here) and after the checks.

    python benchmarks/input_checks.py [--frames 3000] [--side 512]

Each case runs in its own process on the real default host imported in-process (tests/harness/host_runtime.py);
reported is the growth of the peak resident memory (VmHWM, reset before the case) over the resident
memory when the case starts:

* image: a 2x8000 image prepared for Image To Video at 256x256 (old: resize to cover, then crop; new:
  media.frames.cover_and_crop, crop then resize);
* video: ``--frames`` frames of ``--side`` x ``--side`` loaded with frame_limit 17 (old: decode every
  frame, then slice; new: StepVideo Load Video, ffmpeg skips and stops);
* empty latent: StepVideo Empty Latent at the widgets' maximum (4096x4096, 1020 frames) with batch 2 and
  64 (old: torch.zeros of the shape; new: the node, which refuses first);
* sampler buffers: one sampling run (2 steps) of the embedded model's MODEL with its DiT replaced by a
  function returning a fresh latent-sized tensor, so the growth is the sampler's latent-sized buffers
  alone; divided by one latent's bytes it is the count model_loaders/memory.py calls
  SAMPLER_LATENT_BUFFERS.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from harness.peak_rss import PeakGrowth

GIB = 1024 ** 3


def _measure(work):
    """(peak RSS growth in bytes, result or the exception's text) of ``work()``."""
    with PeakGrowth() as peak:
        try:
            result = work()
        except Exception as e:  # noqa: BLE001  (the refusals are the point)
            result = f"{type(e).__name__}: {str(e)[:160]}"
    return peak.growth, result


def _host():
    from harness.host_runtime import import_host

    import_host()


def case_image(variant):

    import torch
    import torch.nn.functional as F

    from stepvideo_pack.media.frames import cover_and_crop

    image = torch.rand(1, 2, 8000, 3)

    def old():
        _, h, w, _ = image.shape
        scale = max(256 / h, 256 / w)
        new_h, new_w = max(256, round(h * scale)), max(256, round(w * scale))
        x = F.interpolate(image.permute(0, 3, 1, 2), size=(new_h, new_w), mode="bilinear", antialias=True)
        top, left = (new_h - 256) // 2, (new_w - 256) // 2
        return tuple(x[:, :, top:top + 256, left:left + 256].shape)

    return _measure(old if variant == "old" else lambda: tuple(cover_and_crop(image, 256, 256).shape))


def case_video(variant, path):
    _host()
    import folder_paths
    import numpy as np
    import torch

    import imageio_ffmpeg
    from stepvideo_pack.nodes.video import StepVideoLoadVideo

    def old():
        reader = imageio_ffmpeg.read_frames(path)
        meta = next(reader)
        w, h = meta["size"]
        frames = np.stack([np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in reader])[:17]
        return tuple((torch.from_numpy(frames.copy()).float() / 255).shape)

    def new():
        folder_paths.set_input_directory(os.path.dirname(path))
        return tuple(StepVideoLoadVideo().load(os.path.basename(path), 0, 17)[0].shape)

    return _measure(old if variant == "old" else new)


def case_empty(variant, batch):
    _host()
    import torch

    from stepvideo_pack.nodes.sampling import StepVideoEmptyLatent

    def old():
        return tuple(torch.zeros(batch, 64, 180, 256, 256).shape)

    def new():
        return tuple(StepVideoEmptyLatent().generate(4096, 4096, 1020, batch)[0]["samples"].shape)

    return _measure(old if variant == "old" else new)


def case_sampler(cfg, frames, side):
    _host()
    import torch

    from research import behaviour_metrics
    from stepvideo_pack.model_loaders.memory import latent_bytes
    from stepvideo_pack.nodes.sampling import run_official_sampler

    model = behaviour_metrics.TinyModel()
    channels = model.dit.config.in_channels
    model.dit._forward = lambda x, *args, **kwargs: x[:, :channels] * 0.5  # a fresh latent-sized output
    positive, negative = model.conditioning("a red circle moves to the right")
    shape = (1, channels, frames, side // 16, side // 16)
    latent = {"samples": torch.zeros(shape)}

    def run():
        out = run_official_sampler(model.model, positive, negative, latent, 0, 2, cfg, 5.0, 1.0,
                                   callback=lambda *a: None)
        return tuple(out["samples"].shape)

    growth, result = _measure(run)
    return growth, {"result": result, "latent_bytes": latent_bytes(shape)}


def run_case(args):
    return subprocess.run([sys.executable, __file__, "--case", json.dumps(args)], capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        name, *rest = json.loads(args.case)
        growth, result = {"image": case_image, "video": case_video, "empty": case_empty,
                          "sampler": case_sampler}[name](*rest)
        print(json.dumps({"growth": growth, "result": result}, default=str))
        return
    print("| case | old: peak RSS growth | old result | new: peak RSS growth | new result |")
    print("| --- | --- | --- | --- | --- |")

    def row(label, old, new):
        old, new = json.loads(run_case(old)), json.loads(run_case(new))
        print(f"| {label} | {old['growth'] / GIB:.3f} GiB | {str(old['result'])[:70]} | {new['growth'] / GIB:.3f} GiB "
              f"| {str(new['result'])[:110]} |", flush=True)

    row("2x8000 image -> 256x256", ["image", "old"], ["image", "new"])
    with tempfile.TemporaryDirectory() as tmp:
        import imageio_ffmpeg

        path = os.path.join(tmp, "long.mp4")  # ffmpeg's test pattern, encoded without holding the frames
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                        f"testsrc=size={args.side}x{args.side}:rate=25", "-frames:v", str(args.frames),
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", path], check=True)
        size = os.path.getsize(path) / 1024 ** 2
        row(f"{args.frames} frames {args.side}x{args.side} ({size:.1f} MB), frame_limit 17",
            ["video", "old", path], ["video", "new", path])
    for batch in (2, 64):
        row(f"Empty Latent 4096x4096x1020, batch {batch}", ["empty", "old", batch], ["empty", "new", batch])
    print()
    print("| sampler run (DiT replaced) | latent | peak RSS growth | latent-sized buffers |")
    print("| --- | --- | --- | --- |")
    for cfg in (3.0, 1.0):
        out = json.loads(run_case(["sampler", cfg, 180, 2048]))
        one = out["result"]["latent_bytes"]
        print(f"| CFG {cfg:g}, 180 latent frames of 2048x2048 | {one / 1024 ** 2:.0f} MiB | "
              f"{out['growth'] / GIB:.2f} GiB | {out['growth'] / one:.1f} |", flush=True)


if __name__ == "__main__":
    main()
