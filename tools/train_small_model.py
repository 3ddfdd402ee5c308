#!/usr/bin/env python3
"""Train the small Step-Video model shipped as weights/stepvideo-tiny, from nothing but a seed.

    python tools/train_small_model.py --out weights/stepvideo-tiny --seed 0

Stages (each resumable: a finished stage is skipped, an interrupted one continues from its last
checkpoint in --work):

1. text     tokenizers from the caption vocabulary + tiny Step-LLM / BERT encoders, attribute
            pre-training (tools/text_models.py)                    -> OUT/step_llm, OUT/hunyuan_clip
2. vae      our v2 Video-VAE, narrow widths, z = 16, with closed-form weights
            (tools/constructed_vae.py; why not learnt: TRAINING.md) -> OUT/vae/vae_v2.safetensors
3. latents  the DiT's training clips encoded by that codec (checked against the shipped file)
4. dit      our DiT (6 layers, one 128-wide head, 2 x 2 patches) trained by flow matching
            (tools/train_dit.py)                                   -> OUT/transformer/
5. refine   more flow matching from the end of stage dit, with a fresh learning-rate cycle
                                                                   -> OUT/transformer/

Every stage writes its per-step numbers to tools/logs/<stage>.csv. Everything random is derived from
--seed (data: tools/synthetic_data.py; weights and noise: seeded torch generators), and torch runs
with a fixed thread count (--threads), so a rerun on the same machine type reproduces the weights.
"""

import argparse
import csv
import json
import math
import os
import sys
import tempfile
import time

THREADS_DEFAULT = 1  # on the shared 2-core machine one thread was ~1.5x faster than two (no spin-waiting)

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)

import torch  # noqa: E402

import pack_import  # noqa: E402,F401
from stepvideo_pack.model_loaders import official_layout  # noqa: E402
from stepvideo_pack.media.frames import images_to_video  # noqa: E402
from stepvideo_pack.model_loaders.vae_loader import load_vae  # noqa: E402

import constructed_vae  # noqa: E402
import synthetic_data  # noqa: E402
import text_models  # noqa: E402
import train_dit  # noqa: E402

LOG_DIR = os.path.join(TOOLS, "logs")
SIZE = 128  # training resolution (pixels, square): 8 x 8 latents
SCHEDULE = {  # steps per stage (about 50 minutes in all on the shared 2-core machine, one thread)
    "text_steps": 250,
    "latent_clips": 1000,
    "dit_steps": 4500,
    "refine_steps": 3000,
    "refine_lr": 5e-4,
}
QUICK = {"text_steps": 5, "latent_clips": 8, "dit_steps": 6, "refine_steps": 4, "refine_lr": 5e-4}


class CsvLog:
    """Appends dict rows to a CSV (header from the first row); also echoes every ``echo``-th row."""

    def __init__(self, path, echo=25, resume=False):
        self.path, self.echo, self.count = path, echo, 0
        self.file = open(path, "a" if resume and os.path.exists(path) else "w", newline="", encoding="utf-8")
        self.writer = None
        self.started = time.time()

    def __call__(self, row):
        if self.writer is None:
            self.writer = csv.DictWriter(self.file, fieldnames=list(row), extrasaction="ignore")
            if self.file.tell() == 0:
                self.writer.writeheader()
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.file.flush()
        self.count += 1
        if self.count % self.echo == 0:
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            print(f"[{time.time() - self.started:7.0f}s] {os.path.basename(self.path)}: {shown}", flush=True)


def done_marker(work, stage):
    return os.path.join(work, f"{stage}.done")


def mark_done(work, stage, info):
    with open(done_marker(work, stage), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)


def stage_text(args, schedule):
    log = CsvLog(os.path.join(args.logs, "text_encoders.csv"))
    started = time.time()
    text_models.build_text_side(args.out, args.seed, schedule["text_steps"], log)
    return {"seconds": time.time() - started}


def stage_vae(args, schedule):
    """The closed-form VAE (tools/constructed_vae.py), stored in bf16 (float8 where exact); checked through the users' loader."""
    started = time.time()
    vae = constructed_vae.build_constructed_vae()
    official_layout.save_vae({k: compact(v) for k, v in vae.state_dict().items()}, args.out)
    shipped = load_vae(vae_path(args), dtype=torch.float32)
    probe = torch.stack([clip_video(synthetic_data.render_clip(
        synthetic_data.sample_clip_spec(args.seed + 2, i), SIZE)[:17])[0] for i in range(4)])
    decoded = shipped.decode(shipped.encode(probe, sample=False)).clamp(-1, 1)
    psnr = 10 * math.log10(4.0 / float(((decoded - probe) ** 2).mean()))
    print(f"vae: round-trip PSNR {psnr:.2f} dB on 4 clips", flush=True)
    return {"seconds": time.time() - started, "round_trip_psnr": round(psnr, 2)}


def clip_video(frames):
    """Rendered frames (F, H, W, 3) numpy in [0, 1] -> the VAE's (1, F, 3, H, W) in [-1, 1]."""
    return images_to_video(torch.from_numpy(frames))


def compact(tensor):
    """bf16, or float8 e4m3fn where that is exact (zeros, +-1, 1/4, blur taps...; the loader casts
    per tensor, so the model is the same bf16 model in half the bytes for most of the VAE)."""
    tensor = tensor.to(torch.bfloat16)
    fp8 = tensor.to(torch.float8_e4m3fn)
    return fp8 if torch.equal(fp8.to(torch.bfloat16), tensor) else tensor


def vae_path(args):
    return os.path.join(args.out, official_layout.VAE_FILE)


def stage_latents(args, schedule):
    """Latents of the DiT's training clips: [chunk A ; chunk B ; frame 34] = (N, 7, z, h, w) float16.

    They are computed by the codec's few-line equivalent (constructed_vae.encode_reference) instead of
    running the full encoder 2x per clip; the shipped VAE, loaded with the users' loader, is checked
    to give the same latents on the first clips."""
    started = time.time()
    count = schedule["latent_clips"]
    shipped = load_vae(vae_path(args), dtype=torch.float32)
    latents = []
    for index in range(count):
        spec = synthetic_data.sample_clip_spec(args.seed + 100, index)
        video = clip_video(synthetic_data.render_clip(spec, SIZE))  # (1, 35, 3, H, W)
        pieces = [video[:, :17], video[:, 17:34], video[:, 34:35]]
        latent = torch.cat([constructed_vae.encode_reference(p.transpose(1, 2)) for p in pieces], dim=2)
        if index < 2:
            network = torch.cat([shipped.encode(p, sample=False) for p in pieces], dim=1).transpose(1, 2)
            error = float((network - latent).abs().max())
            assert error < 0.02, f"reference latents differ from the shipped VAE by {error}"
        latents.append(latent[0].transpose(0, 1).half())  # (7, z, h, w)
    torch.save({"mean": torch.stack(latents), "seed": args.seed + 100}, os.path.join(args.work, "latents.pt"))
    return {"seconds": time.time() - started, "clips": count}


def stage_dit(args, schedule):
    """Flow matching from the initialisation: ``dit_steps`` steps, lr 1e-3 cosine to 1e-4."""
    return train_phase(args, "dit_checkpoint.pt", None, 0, schedule["dit_steps"], 1e-3)


def stage_refine(args, schedule):
    """More of the same training from the end of stage dit (its weights, optimizer and EMA), with a fresh
    warm-up and cosine from ``refine_lr``; the per-step randomness continues at step ``dit_steps``."""
    first = schedule["dit_steps"]
    return train_phase(args, "refine_checkpoint.pt", "dit_checkpoint.pt", first,
                       first + schedule["refine_steps"], schedule["refine_lr"])


def train_phase(args, checkpoint_name, start_from, phase_start, steps, lr):
    """One training phase of the DiT, resumable from ``checkpoint_name`` (else started from the checkpoint
    ``start_from`` of the previous phase, else from the initialisation); writes OUT/transformer."""
    started = time.time()
    data = torch.load(os.path.join(args.work, "latents.pt"))
    specs = [synthetic_data.sample_clip_spec(data["seed"], i) for i in range(data["mean"].shape[0])]
    bank = train_dit.TextBank(os.path.join(args.out, official_layout.STEP_LLM_DIR),
                              os.path.join(args.out, official_layout.CLIP_DIR))
    bank.check_against_encoder([synthetic_data.caption(specs[0], "en"), synthetic_data.caption(specs[1], "zh")])
    model = train_dit.init_dit(train_dit.DIT_CONFIG, args.seed + 3)
    checkpoint_path = os.path.join(args.work, checkpoint_name)
    start, optimizer_state, ema_state = phase_start, None, None
    resume_from = checkpoint_path if os.path.exists(checkpoint_path) else (
        os.path.join(args.work, start_from) if start_from else None)
    if resume_from:
        saved = torch.load(resume_from)
        model.load_state_dict(saved["model"])
        start, optimizer_state, ema_state = saved["step"], saved["optimizer"], saved["ema"]
        print(f"dit: continuing at step {start} from {resume_from}", flush=True)
    log = CsvLog(os.path.join(args.logs, "dit.csv"), resume=start > 0)

    def checkpoint(step, net, optimizer, ema):
        torch.save({"step": step, "model": net.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema},
                   checkpoint_path + ".tmp")
        os.replace(checkpoint_path + ".tmp", checkpoint_path)

    ema = train_dit.train_dit(model, data["mean"], specs, bank, steps, args.seed, log, lr=lr,
                              checkpoint=checkpoint, start_step=start, optimizer_state=optimizer_state,
                              ema_state=ema_state, phase_start=phase_start)
    state = {k: v.to(torch.bfloat16) for k, v in ema.items()}
    official_layout.save_transformer(state, args.out, train_dit.DIT_CONFIG, shards=1)
    return {"seconds": time.time() - started}


STAGES = (("text", stage_text), ("vae", stage_vae), ("latents", stage_latents), ("dit", stage_dit),
          ("refine", stage_refine))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(TOOLS), "weights", "stepvideo-tiny"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="checkpoints and the latent cache (default: a folder in "
                                                     "the system temp dir named after the seed)")
    parser.add_argument("--threads", type=int, default=THREADS_DEFAULT)
    parser.add_argument("--stages", default=",".join(name for name, _ in STAGES),
                        help="comma-separated subset of: " + ", ".join(name for name, _ in STAGES))
    parser.add_argument("--logs", default=None, help=f"loss logs (default: {LOG_DIR}; with --quick: WORK/logs)")
    parser.add_argument("--quick", action="store_true", help="a few steps per stage (smoke test of the script)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work = args.work or os.path.join(tempfile.gettempdir(), f"stepvideo-tiny-train-seed{args.seed}")
    args.logs = args.logs or (os.path.join(args.work, "logs") if args.quick else LOG_DIR)
    for folder in (args.work, args.out, args.logs):
        os.makedirs(folder, exist_ok=True)
    schedule = QUICK if args.quick else SCHEDULE
    wanted = args.stages.split(",")
    summary_path = os.path.join(args.logs, "summary.json")
    summary = {}
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
    summary.update({"seed": args.seed, "threads": args.threads, "schedule": schedule})
    for name, run in STAGES:
        if name not in wanted:
            continue
        if os.path.exists(done_marker(args.work, name)):
            print(f"{name}: already done ({done_marker(args.work, name)})", flush=True)
            continue
        print(f"== stage {name}", flush=True)
        info = run(args, schedule)
        mark_done(args.work, name, info)
        summary.setdefault("stages", {})[name] = info
        with open(summary_path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
        print(f"{name}: done in {info['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
