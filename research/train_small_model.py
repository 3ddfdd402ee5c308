#!/usr/bin/env python3
"""Train the small Step-Video model shipped as weights/stepvideo-tiny, from nothing but a seed.

    python research/train_small_model.py --out weights/stepvideo-tiny --seed 0

Stages (each resumable: a finished stage is skipped, an interrupted one continues from its last
checkpoint in --work):

1. text     tokenizers from the caption vocabulary + tiny Step-LLM / BERT encoders, attribute
            pre-training (research/text_models.py)                    -> OUT/step_llm, OUT/hunyuan_clip
2. vae      our v2 Video-VAE, narrow widths, z = 16, with closed-form weights
            (research/constructed_vae.py; why not learnt: TRAINING.md) -> OUT/vae/vae_v2.safetensors
3. latents  the DiT's training clips encoded by that codec (checked against the shipped file): the
            dataset, and two slices of it for the curriculum (DATASETS)
4-10.       our DiT (6 layers, one 128-wide head, 2 x 2 patches) trained by flow matching
            (research/train_dit.py) in a curriculum (DIT_PHASES; why: TRAINING.md) -> OUT/transformer/
   dit_red     one red circle on plain ground doing every action, noise levels in [0.4, 0.9]
   dit_varied  the six colours and three shapes on plain ground, every action, [0.4, 0.9]
   dit_all     the dataset, every noise level (the shipped logit-normal)
   dit_shapes  back on plain ground, [0.2, 0.7], the loss on the shape's latent cells weighted 5x
   dit_context the dataset, every noise level, half the samples with the modes' known latents clean
               (the checkpoint says so in its metadata; the samplers then give them clean)
   dit_context_shapes  plain ground, [0.2, 0.7], shape cells weighted 6x, known latents as dit_context
   dit_join    the dataset, half the windows two-chunk ones with a known chunk (extension), 3 in 4 samples
               with their known latents clean, the latent at the seam weighted 5x; fp32 (from the exported
               weights of dit_context_shapes)

Stage text writes its per-step numbers to research/logs/text_encoders.csv, the DiT phases theirs to
research/logs/dit.csv (one log, the step count runs on). Everything random is derived from
--seed (data: research/synthetic_data.py; weights and noise: seeded torch generators), and torch runs
with a fixed thread count (--threads), so a rerun on the same machine type reproduces the weights.
"""

import argparse
import csv
import dataclasses
import functools
import json
import math
import os
import sys
import tempfile
import time

import torch

from stepvideo_pack.model_loaders import official_layout
from stepvideo_pack.model_loaders.dit_loader import KNOWN_LATENTS_KEY, load_dit
from stepvideo_pack.media.frames import images_to_video
from stepvideo_pack.model_loaders.vae_loader import load_vae

from research import constructed_vae
from research import synthetic_data
from research import text_models
from research import train_dit

THREADS_DEFAULT = 1  # on the shared 2-core machine one thread was ~1.5x faster than two (no spin-waiting)
RESEARCH = os.path.dirname(os.path.abspath(__file__))
LOG_DIR = os.path.join(RESEARCH, "logs")
SIZE = 128  # training resolution (pixels, square): 8 x 8 latents
DATASETS = {  # latent cache: (data seed = --seed + this, clip attributes pinned); research/synthetic_data.py
    "latents": (100, {}),  # the dataset itself
    "latents_red_circles": (300, {"colour": 0, "shape": 0, "background": "plain"}),
    "latents_plain": (400, {"background": "plain"}),
}
@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of the DiT's curriculum (TRAINING.md); the options go to ``train_dit.train_dit``."""

    stage: str
    cache: str                # latent cache (DATASETS)
    sigma_range: tuple = None  # noise levels: None for the shipped logit-normal, else uniform in (low, high)
    lr: float = 3e-4          # peak learning rate
    shape_weight: float = 0.0  # extra loss weight on the shape's latent cells
    clean_known: float = 0.0  # share of samples with the modes' known latents given clean
    window_shares: dict = None  # {window: probability} overriding train_dit.WINDOWS
    known_sets: dict = None   # {window: known-latent sets} overriding train_dit.MODE_KNOWN_LATENTS
    seam_weight: float = 0.0  # extra loss weight on the latent next to a known chunk (train_dit.seam_weights)
    autocast: bool = True     # bf16 autocast (False: fp32, ~10x faster on CPUs without native bf16)
    from_export: bool = False  # start from the previous phase's exported (bf16) EMA weights, model and EMA


DIT_PHASES = (
    Phase("dit_red", "latents_red_circles", (0.4, 0.9), lr=1e-3),
    Phase("dit_varied", "latents_plain", (0.4, 0.9), lr=5e-4),
    Phase("dit_all", "latents"),
    Phase("dit_shapes", "latents_plain", (0.2, 0.7), shape_weight=4.0),
    Phase("dit_context", "latents", clean_known=0.5),
    Phase("dit_context_shapes", "latents_plain", (0.2, 0.7), shape_weight=5.0, clean_known=0.5),
    Phase("dit_join", "latents", clean_known=0.75, window_shares={"AB": 0.5},
          known_sets={"AB": ((0, 1, 2), (3, 4, 5))}, seam_weight=4.0, autocast=False, from_export=True),
)
JOIN_STEPS = 9000
SCHEDULE = {  # text steps, clips per latent cache, and (steps, cosine length) per DiT phase
    "text_steps": 250,
    "latent_clips": 1000,
    "dit_red": (3100, 5000),  # stopped at 3,100 of a 5,000-step cosine, once it read the direction
    "dit_varied": (3000, 3000),
    "dit_all": (2500, 2500),
    "dit_shapes": (2000, 2000),
    "dit_context": (2500, 2500),
    "dit_context_shapes": (2000, 2000),
    "dit_join": (JOIN_STEPS, JOIN_STEPS),
}
QUICK = {"text_steps": 5, "latent_clips": 8, "dit_red": (3, 5), "dit_varied": (2, 2), "dit_all": (2, 2),
         "dit_shapes": (2, 2), "dit_context": (2, 2), "dit_context_shapes": (2, 2), "dit_join": (2, 2)}


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
    """The closed-form VAE (research/constructed_vae.py), stored in bf16 (float8 where exact); checked through the users' loader."""
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


def reference_latents(video):
    """The VAE's (1, F, 3, H, W) video -> its latents (T, z, h, w) in the DiT's layout, by the codec's few-line
    equivalent (constructed_vae.encode_reference) instead of the full encoder."""
    return constructed_vae.encode_reference(video.transpose(1, 2))[0].transpose(0, 1)


def compact(tensor):
    """bf16, or float8 e4m3fn where that is exact (zeros, +-1, 1/4, blur taps...; the loader casts
    per tensor, so the model is the same bf16 model in half the bytes for most of the VAE)."""
    tensor = tensor.to(torch.bfloat16)
    fp8 = tensor.to(torch.float8_e4m3fn)
    return fp8 if torch.equal(fp8.to(torch.bfloat16), tensor) else tensor


def vae_path(args):
    return os.path.join(args.out, official_layout.VAE_FILE)


def stage_latents(args, schedule):
    """Latents of the DiT's training clips, one cache per entry of DATASETS: [chunk A ; chunk B ; frame 34]
    = (N, 7, z, h, w) float16, with the data seed and the pinned attributes that give back the clips' specs.

    They are computed by reference_latents instead of running the full encoder 2x per clip; the shipped
    VAE, loaded with the users' loader, is checked to give the same latents on the first clips of every
    cache."""
    started = time.time()
    shipped = load_vae(vae_path(args), dtype=torch.float32)
    for name, (offset, pins) in DATASETS.items():
        seed, latents = args.seed + offset, []
        for index in range(schedule["latent_clips"]):
            video = clip_video(synthetic_data.render_clip(synthetic_data.sample_clip_spec(seed, index, **pins), SIZE))
            pieces = [video[:, :17], video[:, 17:34], video[:, 34:35]]  # (1, F, 3, H, W) each
            latent = torch.cat([reference_latents(p) for p in pieces])  # (7, z, h, w)
            if index < 2:
                network = torch.cat([shipped.encode(p, sample=False)[0] for p in pieces])
                error = float((network - latent).abs().max())
                assert error < 0.02, f"{name}: reference latents differ from the shipped VAE by {error}"
            latents.append(latent.half())
        torch.save({"mean": torch.stack(latents), "seed": seed, "pins": pins}, os.path.join(args.work, f"{name}.pt"))
    return {"seconds": time.time() - started, "clips": schedule["latent_clips"] * len(DATASETS)}


def train_phase(args, schedule, index):
    """Phase DIT_PHASES[index] of the DiT (stage function): its ``schedule`` steps on its latent cache and
    noise levels, continuing from the step where the previous phases end. Resumable from its own
    checkpoint, else started from the previous phase's (its weights, EMA and step count; a fresh
    optimizer, 100-step warm-up and cosine; with ``from_export`` its EMA rounded to bf16 as exported, or
    the exported OUT/transformer when that checkpoint is not in --work), else from the initialisation;
    writes OUT/transformer."""
    phase = DIT_PHASES[index]
    phase_start = sum(schedule[p.stage][0] for p in DIT_PHASES[:index])
    steps, cosine_length = schedule[phase.stage]
    previous = os.path.join(args.work, f"{DIT_PHASES[index - 1].stage}.pt") if index else None
    started = time.time()
    cache_path = os.path.join(args.work, f"{phase.cache}.pt")
    if not os.path.exists(cache_path):
        sys.exit(f"{cache_path} is missing (a work folder of an older version?): delete "
                 f"{done_marker(args.work, 'latents')} and rerun with --stages latents,{phase.stage}")
    data = torch.load(cache_path)
    pins = data.get("pins", {})  # (caches of older versions hold the unpinned dataset only)
    specs = [synthetic_data.sample_clip_spec(data["seed"], i, **pins) for i in range(data["mean"].shape[0])]
    bank = train_dit.TextBank(os.path.join(args.out, official_layout.STEP_LLM_DIR),
                              os.path.join(args.out, official_layout.CLIP_DIR))
    bank.check_against_encoder([synthetic_data.caption(specs[0], "en"), synthetic_data.caption(specs[1], "zh")])
    model = train_dit.init_dit(train_dit.DIT_CONFIG, args.seed + 3)
    checkpoint_path = os.path.join(args.work, f"{phase.stage}.pt")
    start, optimizer_state, ema_state = phase_start, None, None
    if os.path.exists(checkpoint_path):  # this phase, interrupted: continue exactly
        saved = torch.load(checkpoint_path)
        model.load_state_dict(saved["model"])
        start, optimizer_state, ema_state = saved["step"], saved["optimizer"], saved["ema"]
        print(f"dit: continuing at step {start} from {checkpoint_path}", flush=True)
    elif phase.from_export:
        exported = previous_export(args, previous, phase_start)
        model.load_state_dict(exported)
        ema_state = {k: v.clone() for k, v in exported.items()}
    elif previous:
        saved = load_previous(previous, phase_start)
        model.load_state_dict(saved["model"])
        ema_state = saved["ema"]
        print(f"dit: continuing at step {start} from {previous}", flush=True)
    log = CsvLog(os.path.join(args.logs, "dit.csv"), resume=start > 0)

    def checkpoint(step, net, optimizer, ema):
        torch.save({"step": step, "model": net.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema},
                   checkpoint_path + ".tmp")
        os.replace(checkpoint_path + ".tmp", checkpoint_path)

    ema = train_dit.train_dit(model, data["mean"], specs, bank, phase_start + steps, args.seed, log, lr=phase.lr,
                              checkpoint=checkpoint, start_step=start, optimizer_state=optimizer_state,
                              ema_state=ema_state, phase_start=phase_start, sigma_range=phase.sigma_range,
                              cosine_end=phase_start + cosine_length, shape_weight=phase.shape_weight,
                              clean_known=phase.clean_known, window_shares=phase.window_shares,
                              known_sets=phase.known_sets, seam_weight=phase.seam_weight, autocast=phase.autocast)
    state = {k: v.to(torch.bfloat16) for k, v in ema.items()}
    trained_clean = any(p.clean_known for p in DIT_PHASES[:index + 1])
    official_layout.save_transformer(state, args.out, train_dit.DIT_CONFIG, shards=1,
                                     metadata={KNOWN_LATENTS_KEY: "clean"} if trained_clean else None)
    return {"seconds": time.time() - started}


def load_previous(previous, phase_start):
    """The previous phase's checkpoint (step, model, optimizer, EMA), checked to end where this phase starts."""
    saved = torch.load(previous)
    assert saved["step"] == phase_start, f"{previous} ends at step {saved['step']}, not {phase_start}"
    return saved


def previous_export(args, previous, phase_start):
    """The previous phase's weights as it exported them (its EMA in bf16), as float32: from its checkpoint
    in --work, else from OUT/transformer (e.g. continuing the shipped weights without their work folder)."""
    if os.path.exists(previous):
        saved = load_previous(previous, phase_start)
        print(f"dit: starting at step {phase_start} from the exported EMA of {previous}", flush=True)
        return {k: v.to(torch.bfloat16).float() for k, v in saved["ema"].items()}
    folder = os.path.join(args.out, official_layout.TRANSFORMER_DIR)
    print(f"dit: {previous} not found; starting at step {phase_start} from the exported {folder}", flush=True)
    return load_dit(folder, weight_dtype=torch.float32).state_dict()


STAGES = (("text", stage_text), ("vae", stage_vae), ("latents", stage_latents),
          *((phase.stage, functools.partial(train_phase, index=i)) for i, phase in enumerate(DIT_PHASES)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(RESEARCH), "weights", "stepvideo-tiny"))
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
