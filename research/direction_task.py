#!/usr/bin/env python3
"""The stripped-down direction task of research/TRAINING.md (experiments 10-16): can our
DiT learn to use the direction word, and under which noise-level schedule?

    python research/direction_task.py --steps 6000 --sigma-range 0.4,0.9 --save mid.pt      # experiment 15
    python research/direction_task.py --init mid.pt --steps 2000 --lr 3e-4 --save cur.pt   # 16: then all levels
    python research/direction_task.py --init cur.pt --steps 0 --generate 1,3,5             # sample it

Data: 17-frame clips (128 x 128) of a red circle on a plain background (``--varied``: the dataset's
colours and shapes) moving left / right / up / down by ``--distance`` of the width, captioned by the
motion alone ("moves to the left"; ``--captions full``: "a red circle moves to the left"), encoded by
the shipped codec's reference encoder; 32 more clips are held out. The DiT has the shipped
configuration (``--heads`` apart) and starts from its initialisation (or ``--init``); batch 16, AdamW
(weight decay 0.01), a 100-step warm-up (none after ``--init``) and a cosine to 10% of ``--lr``; the
empty caption 10% of the time. Noise levels: the shipped logit-normal shifted by 3, or uniform in
``--sigma-range``. One thread; each step's randomness comes from its index, so a run is reproducible
on the same machine type.

Every ``--every`` steps it prints the x0 error of the held-out clips at sigma 0.75 / 0.85 / 0.9 with the
true caption and how much larger it is with the opposite direction ("dir") or "stays still" ("still"),
in percent: the direction swap is the number TRAINING.md quotes. ``--generate`` samples 12 clips from
noise through the pack's sampler (20 steps, shift 5, seeds 0-11 asking for left, right, up, down in
turn) at each listed CFG and counts the clips the detector sees moving as asked (chance: 3).
"""

import argparse
import dataclasses
import os
import tempfile
import time

import numpy as np
import torch

from stepvideo_pack.model_loaders import official_layout

from research import behaviour_metrics
from research import synthetic_data as sd
from research import train_dit
from research.detectors import detect
from research.train_small_model import SIZE, clip_video, reference_latents

DATA_SEED = 777
HELD_OUT = 32
BATCH = 16
EVAL_SIGMAS = (0.75, 0.85, 0.9)
STILL = "stays still"


def task_spec(index, distance, varied=False):
    """Clip ``index`` of the task: a red circle (with ``varied``: the dataset's colours and shapes), 0.18-0.24
    of the width, on plain ground, 17 frames, moving ``distance`` of the width in one of the four
    directions, its track inside the frame."""
    pinned = {} if varied else {"colour": 0, "shape": 0}
    base = sd.sample_clip_spec(DATA_SEED, index, action="left", background="plain", **pinned)
    rng = np.random.default_rng([7, index])
    rng.uniform()  # (two unused draws, kept so that the clips are those of the runs in TRAINING.md)
    action = behaviour_metrics.DIRECTIONS[rng.integers(4)]
    rng.uniform()
    size = rng.uniform(0.18, 0.24)
    lo, hi = size / 2 + sd.MARGIN, 1 - size / 2 - sd.MARGIN
    along = lo + rng.uniform() * max(hi - lo - distance, 0.0)
    across = rng.uniform(lo, hi)
    (dx, dy), _, _ = sd.MOVES[action]
    if dx + dy < 0:  # moving towards the smaller coordinate: start at the far end
        along += distance
    step = (dx + dy) * distance
    start, end = ((along, across), (along + step, across)) if dx else ((across, along), (across, along + step))
    return dataclasses.replace(base, action=action, start=start, end=end, size0=size, size1=size, frames=17)


def caption(spec, action, full=False):
    """The motion alone ("moves to the left", "stays still"), or with ``full`` the dataset's caption of the
    clip's colour and shape with that motion ("a red circle moves to the left")."""
    if full:
        return sd.describe(spec.colour, spec.shape, action)
    return sd.MOVES[action][1] if action in sd.MOVES else STILL


def encode_clips(specs):
    """(N, 3, z, 8, 8) latents of the clips, in the DiT's (N, T, C, h, w) layout."""
    return torch.stack([reference_latents(clip_video(sd.render_clip(s, SIZE))) for s in specs])


def encoded(bank, texts):
    """``bank.batch(texts)`` with the text encoders under bf16 autocast, as the runs in TRAINING.md encoded
    the task's captions (not quite the pack's encoding, which ``train_dit`` uses; TextBank keeps the first
    encoding of each text)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return bank.batch(texts)


@torch.no_grad()
def direction_swap(model, bank, clips, specs, full=False):
    """{sigma: (x0 error with the true caption, % more with the opposite direction, % more with "stays still")}."""
    model.eval()
    captions = {"true": [caption(s, s.action, full) for s in specs],
                "dir": [caption(s, behaviour_metrics.OPPOSITE[s.action], full) for s in specs],
                "still": [caption(s, "still", full) for s in specs]}
    noise = torch.randn(clips.shape, generator=torch.Generator().manual_seed(9))
    result = {}
    for sigma in EVAL_SIGMAS:
        noised = (1 - sigma) * clips + sigma * noise
        errors = {}
        for name, texts in captions.items():
            text = encoded(bank, texts)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                velocity = model(noised, torch.full((len(specs),), 1 - sigma), **text).float()
            errors[name] = float(((noised + sigma * velocity - clips) ** 2).mean())
        result[sigma] = (errors["true"], 100 * (errors["dir"] / errors["true"] - 1),
                         100 * (errors["still"] / errors["true"] - 1))
    model.train()
    return result


def describe_swap(result):
    return " | ".join(f"s{sigma}: {error:.4f} dir{d:+.1f} still{s:+.1f}" for sigma, (error, d, s) in result.items())


def train(model, bank, clips, specs, steps, lr, sigma_range, warm_up, every, full=False, log=print):
    """AdamW on the flow-matching loss (see the module docstring); prints the direction swap every ``every`` steps."""
    train_clips, held_clips = clips[:-HELD_OUT], clips[-HELD_OUT:]
    texts = [caption(s, s.action, full) for s in specs[:-HELD_OUT]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    started, running = time.time(), 0.0
    model.train()
    for step in range(steps):
        generator, rng = torch.Generator().manual_seed(step), np.random.default_rng(step)
        picks = rng.integers(len(texts), size=BATCH)
        data = train_clips[picks]
        noise = torch.randn(data.shape, generator=generator)
        sigma = train_dit.sample_sigma(BATCH, generator, sigma_range)
        ramp = min(1.0, (step + 1) / 100) if warm_up else 1.0
        for group in optimizer.param_groups:
            group["lr"] = train_dit.cosine_learning_rate(lr, step / steps, ramp)
        batch_texts = [texts[j] if rng.uniform() > train_dit.CFG_DROPOUT else "" for j in picks]
        loss = train_dit.flow_matching_loss(model, data, noise, sigma, encoded(bank, batch_texts))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = 0.98 * running + 0.02 * loss.item()
        if (step + 1) % every == 0 or step + 1 == steps:
            swap = describe_swap(direction_swap(model, bank, held_clips, specs[-HELD_OUT:], full))
            log(f"step {step + 1} loss {running / (1 - 0.98 ** (step + 1)):.4f} "
                f"{(time.time() - started) / (step + 1):.2f}s/step | {swap}")


def generation_hits(dit, guidance_scales, specs, full=False, seeds=12, log=print):
    """Samples the task's prompts from noise with ``dit`` (saved as an official transformer/ folder and loaded
    as a MODEL, bf16) and the shipped VAE and text encoders, seed i asking for the i-th of left, right, up,
    down in turn (and, with ``full``, for the colour and shape of ``specs[i]``); returns
    {cfg: (hits, detected actions)} over ``seeds`` seeds."""
    with tempfile.TemporaryDirectory() as folder:
        model = behaviour_metrics.TinyModel(
            transformer=official_layout.save_transformer(dit.state_dict(), folder, dit.config, shards=1))
    results = {}
    for cfg in guidance_scales:
        found = []
        for seed in range(seeds):
            wanted = behaviour_metrics.DIRECTIONS[seed % 4]
            prompt = caption(specs[seed], wanted, full)
            frames = model.decode(model.text_to_video(prompt, seed=seed, cfg=cfg, shift=5.0))
            found.append(detect(frames).action)
        hits = sum(f == behaviour_metrics.DIRECTIONS[i % 4] for i, f in enumerate(found))
        results[cfg] = (hits, found)
        log(f"generation cfg {cfg}: moves as asked {hits} / {seeds} {found}")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=3000, help="training clips (32 more are held out)")
    parser.add_argument("--distance", type=float, default=0.5, help="displacement over the 17 frames, of the width")
    parser.add_argument("--captions", choices=("motion", "full"), default="motion",
                        help='"moves to the left" or the dataset\'s "a red circle moves to the left"')
    parser.add_argument("--varied", action="store_true", help="the dataset's colours and shapes, not a red circle")
    parser.add_argument("--heads", type=int, default=1, help="attention heads of the DiT (the shipped one: 1)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sigma-range", default=None, help="low,high: uniform noise levels (default: the "
                                                            "shipped logit-normal)")
    parser.add_argument("--init", default=None, help="start from this --save file (no warm-up)")
    parser.add_argument("--save", default=None, help="write the DiT's state dict here")
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--generate", default=None, help="comma-separated CFG scales to sample at after training")
    parser.add_argument("--seeds", type=int, default=12, help="clips sampled per CFG scale by --generate")
    args = parser.parse_args(argv)
    full = args.captions == "full"
    sigma_range = tuple(map(float, args.sigma_range.split(","))) if args.sigma_range else None
    specs = [task_spec(i, args.distance, args.varied) for i in range(args.clips + HELD_OUT)]
    clips = encode_clips(specs)
    weights = behaviour_metrics.WEIGHTS
    bank = train_dit.TextBank(os.path.join(weights, official_layout.STEP_LLM_DIR),
                              os.path.join(weights, official_layout.CLIP_DIR))
    model = train_dit.init_dit(dataclasses.replace(train_dit.DIT_CONFIG, num_heads=args.heads), 3)
    if args.init:
        model.load_state_dict(torch.load(args.init))
    if args.steps:
        train(model, bank, clips, specs, args.steps, args.lr, sigma_range, warm_up=not args.init, every=args.every,
              full=full)
    else:
        print(describe_swap(direction_swap(model, bank, clips[-HELD_OUT:], specs[-HELD_OUT:], full)))
    if args.save:
        torch.save(model.state_dict(), args.save)
    if args.generate:
        return generation_hits(model, [float(c) for c in args.generate.split(",")], specs, full, args.seeds)
    return None


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
