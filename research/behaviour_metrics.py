#!/usr/bin/env python3
"""Behavioural measurements of the small model, shared by tests/behaviour and the report.

    python research/behaviour_metrics.py [--weights weights/stepvideo-tiny]

prints every measurement and writes research/logs/behaviour.json (``--only a,b`` re-measures those and
keeps the other entries; other ``--weights`` write only to an ``--out`` named for them). The model is
loaded and sampled the way the nodes do it, on the real ComfyUI host imported in this process
(tests/harness/host_runtime.py): the DiT as the MODEL of ``load_stepvideo_model`` (bf16 weights; the host
computes in fp32 on the CPU), sampling through ``nodes.sampling.run_official_sampler``, windows from
``samplers.modes``; the VAE in fp32 on the CPU and ``StepVideoTextEncoder``. Videos are judged by the
hand-written detector of research/detectors.py.
Ground-truth clips come from dataset seed 4242, which training never used.
"""

import argparse
import json
import os
import time

import numpy as np
import torch

from harness.host_runtime import import_host

import_host()  # the pack's nodes, imported below, import the host (comfy, latent_preview)
from stepvideo_pack.media.frames import images_to_video, video_to_images  # noqa: E402
from stepvideo_pack.model_loaders.comfy_model import load_stepvideo_model  # noqa: E402
from stepvideo_pack.model_loaders.conditioning import to_conditioning  # noqa: E402
from stepvideo_pack.model_loaders.text_encoding import StepVideoTextEncoder, compose_prompts  # noqa: E402
from stepvideo_pack.model_loaders.vae_loader import load_vae  # noqa: E402
from stepvideo_pack.nodes.sampling import run_official_sampler  # noqa: E402
from stepvideo_pack.samplers.modes import (chain_windows, extension_window, image_to_video,  # noqa: E402
                                           keyframe_window, long_video_plan, sdedit_denoise)
from stepvideo_pack.samplers.video_geometry import to_comfy, to_official  # noqa: E402

from research import synthetic_data as sd  # noqa: E402
from research.constructed_vae import encode_reference  # noqa: E402
from research.detectors import detect, shape_mask  # noqa: E402

RESEARCH = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.join(os.path.dirname(RESEARCH), "weights", "stepvideo-tiny")
SIZE = 128  # pixels, the model's training resolution
STEPS, CFG, SHIFT = 20, 3.0, 5.0  # the recommended settings (TRAINING.md)
EXTENSION_CFG = 1.0  # recommended for extension: the known chunk carries the content (TRAINING.md, experiment 24)
GROUND_TRUTH_SEED = 4242
# 12 attribute combinations: every colour twice, every shape 4 times, every direction 3 times
PROMPT_SET = [(0, 0, "left"), (1, 1, "right"), (2, 2, "up"), (3, 0, "down"), (4, 1, "up"), (5, 2, "left"),
              (0, 1, "down"), (1, 2, "left"), (2, 0, "right"), (3, 2, "right"), (4, 0, "down"), (5, 1, "up")]
PROMPT_SEED_OFFSETS = (0, 100, 200)  # prompt following: each PROMPT_SET prompt at seeds index, 100 + index, 200 + index
DIRECTIONS = ("left", "right", "up", "down")
SDEDIT_STRENGTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
RELIANCE_SIGMAS = (0.7, 0.85, 0.92)  # where the layout of a generated clip is decided (shift 5: half the steps)
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
GUIDANCE_SCALES = (1.0, 2.0, 3.0, 5.0)


class TinyModel:
    """The shipped model with helpers in ComfyUI's latent layout (B, C, T, h, w); frames (F, H, W, 3) in [0, 1]."""

    def __init__(self, root=WEIGHTS, transformer=None):
        """root: the model's official folder; transformer: another DiT folder to sample with (research tools)."""
        self.model = load_stepvideo_model(transformer or os.path.join(root, "transformer"), weight_dtype="bf16",
                                          attention="sdpa")
        self.dit = self.model.model.diffusion_model
        self.vae = load_vae(os.path.join(root, "vae", "vae_v2.safetensors"), dtype=torch.float32)
        self.text = StepVideoTextEncoder(os.path.join(root, "step_llm"), os.path.join(root, "hunyuan_clip"),
                                         keep_loaded=True)
        self._prompts = {}

    @property
    def channels(self):
        return self.vae.config.decoder.z_channels

    def conditioning(self, prompt, magic=False):
        """(positive, negative) CONDITIONING of a prompt, as StepVideo Text Encode makes them."""
        key = (prompt, magic)
        if key not in self._prompts:
            embeddings = self.text.encode(compose_prompts(prompt, "", use_magic=magic)).split()
            self._prompts[key] = [to_conditioning(e) for e in embeddings]
        return self._prompts[key]

    def sample(self, prompt, latent, seed=0, steps=STEPS, cfg=CFG, shift=SHIFT, denoise=1.0, mask=None, magic=False,
               cfg_stop_sigma=0.0):
        positive, negative = self.conditioning(prompt, magic)
        start = {"samples": latent} if mask is None else {"samples": latent, "noise_mask": mask}
        return run_official_sampler(self.model, positive, negative, start, seed, steps, cfg, shift, denoise,
                                    callback=lambda *args: None, cfg_stop_sigma=cfg_stop_sigma)["samples"]

    def x0(self, prompt, noised, sigma):
        """The MODEL's x0 prediction (no CFG) for a noised latent (B, C, T, h, w) at noise level ``sigma``."""
        llm_states, extra = self.conditioning(prompt)[0][0]
        batch = noised.shape[0]
        with torch.no_grad():
            return self.model.model.apply_model(
                noised, torch.full((batch,), float(sigma)), c_crossattn=llm_states.expand(batch, -1, -1),
                **{k: v.expand(batch, *v.shape[1:]) for k, v in extra.items()}).float()

    def text_to_video(self, prompt, seed=0, chunks=1, **options):
        side = SIZE // 16
        return self.sample(prompt, torch.zeros(1, self.channels, 3 * chunks, side, side), seed=seed, **options)

    def decode(self, latent, **tiling):
        return video_to_images(self.vae.decode(to_official(latent).float(), **tiling))

    def encode(self, frames, seed=0):
        """The official posterior sample, drawn from a generator seeded with ``seed``."""
        video = images_to_video(torch.as_tensor(frames))
        return to_comfy(self.vae.encode(video, generator=torch.Generator().manual_seed(seed)))


def psnr(a, b):
    """PSNR (dB) of two images/videos in [0, 1]."""
    mse = float(((torch.as_tensor(a).float() - torch.as_tensor(b).float()) ** 2).mean())
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def ground_truth_clip(index, **attributes):
    spec = sd.sample_clip_spec(GROUND_TRUTH_SEED, index, **attributes)
    return spec, torch.from_numpy(sd.render_clip(spec, SIZE))


def frame_differences(frames):
    """Mean absolute difference of consecutive frames, (F - 1,)."""
    return (frames[1:] - frames[:-1]).abs().flatten(1).mean(1)


CHANGE_MIN = 2e-3  # a decoded frame that differs from the previous one by less than this is a held frame


KEY_STEP = 4  # decoded frames 4k of each 17-frame chunk are the VAE's key frames (constructed_vae)
CHUNK_FRAMES = 17


def key_frame_steps(frames):
    """Changes between consecutive key frames (4 frames apart) inside each 17-frame chunk: one 4-frame step
    of motion each, whatever the decoder draws between them."""
    keys = [[c + k for k in range(0, CHUNK_FRAMES, KEY_STEP)] for c in range(0, len(frames), CHUNK_FRAMES)]
    return torch.stack([(frames[b] - frames[a]).abs().mean() for chunk in keys for a, b in zip(chunk, chunk[1:])
                        if b < len(frames)])


def join_ratio(frames, join):
    """Difference across the join (frame join - 1 -> join) over the median 4-frame step between key frames.

    The small model's VAE stores key frames 4 frames apart (TRAINING.md), so the join (the last key of one
    chunk -> the first of the next) is a 1-frame step for a continuous clip (ratio ~0.1 on round trips of
    ground-truth clips) and far above 1 at a cut. The decoder's seam blend (networks/vae.py) spreads a
    jump D at a chunk border over two frames, 0.24 D then 0.36 D across the join."""
    steps = key_frame_steps(frames)
    steps = steps[steps > CHANGE_MIN]
    return float(frame_differences(frames)[join - 1] / steps.median())


def demo_smoothness(model):
    """The demo's clip (workflows/api/text_to_video_embedded.json: its prompt, seed, size, frames, steps,
    CFG and shift) decoded: how many of its frames are new pictures (a change above CHANGE_MIN from the
    frame before), and the largest frame-to-frame change over the median one."""
    with open(os.path.join(os.path.dirname(RESEARCH), "workflows", "api", "text_to_video_embedded.json"),
              encoding="utf-8") as f:
        nodes = {node["class_type"]: node["inputs"] for node in json.load(f).values()}
    size, sampler = nodes["StepVideoEmptyLatent"], nodes["StepVideoSampler"]
    latent = torch.zeros(1, model.channels, 3 * (size["frames"] // CHUNK_FRAMES), size["height"] // 16,
                         size["width"] // 16)
    frames = model.decode(model.sample(nodes["StepVideoTextEncode"]["prompt"], latent, seed=sampler["seed"],
                                       steps=sampler["steps"], cfg=sampler["cfg"], shift=sampler["shift"]))
    changes = frame_differences(frames)
    return {"frames": len(frames), "distinct_pictures": int((changes > CHANGE_MIN).sum()) + 1,
            "largest_over_median_change": float(changes.max() / changes.median()),
            "changes": [round(float(c), 4) for c in changes]}


def centre(frame):
    """(x, y) centre of the shape pixels of one (H, W, 3) frame."""
    ys, xs = np.nonzero(shape_mask(np.asarray(frame)[None])[0])
    return np.array([xs.mean(), ys.mean()]) if len(xs) else np.array([np.nan, np.nan])


# --- measurements ------------------------------------------------------------------------------------------

def detector_round_trip(model, count=16):
    """Detector hits (colour, shape, action) on VAE round trips of ``count`` ground-truth 17-frame clips."""
    hits = np.zeros(3, dtype=int)
    for index in range(count):
        spec, clip = ground_truth_clip(index, action=sd.ACTIONS[index % len(sd.ACTIONS)])
        found = detect(model.decode(model.encode(clip[:17], seed=index)))
        action, colour, _ = sd.window_action(spec, (0, 17))
        hits += [found.colour == sd.COLOUR_NAMES[colour], found.shape == spec.shape_name, found.action == action]
    return {"colour": int(hits[0]), "shape": int(hits[1]), "action": int(hits[2]), "of": count}


# caption word swaps: spec -> the English caption with one attribute changed
CAPTION_SWAPS = {"colour": lambda s: sd.describe((s.colour + 3) % len(sd.COLOURS), s.shape, s.action),
                 "shape": lambda s: sd.describe(s.colour, (s.shape + 1) % len(sd.SHAPES), s.action),
                 "direction": lambda s: sd.describe(s.colour, s.shape, OPPOSITE[s.action]),
                 "motion": lambda s: sd.describe(s.colour, s.shape, "still"),
                 "empty": lambda s: ""}


def percent_over_true(errors, digits):
    """{name: per-sigma errors} with a "true" entry -> each other entry's error over the true one, minus 1,
    in percent: averaged over sigmas ("percent") and per sigma ("per_sigma")."""
    per_sigma = {name: (100 * (v / errors["true"] - 1)).round(digits).tolist() for name, v in errors.items()
                 if name != "true"}
    return {"percent": {name: round(float(np.mean(v)), digits) for name, v in per_sigma.items()},
            "per_sigma": per_sigma}


def caption_reliance(model, count=16, sigmas=RELIANCE_SIGMAS):
    """How much the DiT uses each caption attribute: the x0-prediction error of noised ground-truth clips
    (17 frames, moving; English captions, no magic) when one attribute of the caption is swapped, over
    the error with the true caption, minus 1, in percent, averaged over clips and noise levels.

    A swap the model ignores scores ~0; one that it uses scores the share of its prediction that the
    attribute decides. Swaps: colour -> the colour three hues away, shape -> the next shape, direction
    -> the opposite one, motion -> "stays still", and the empty caption. Per noise level too.
    """
    errors = {name: np.zeros(len(sigmas)) for name in ("true", *CAPTION_SWAPS)}
    for index in range(count):
        spec, clip = ground_truth_clip(60 + index, action=DIRECTIONS[index % len(DIRECTIONS)])
        clean = model.encode(clip[:17], seed=index)
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(index))
        prompts = {"true": sd.describe(spec.colour, spec.shape, spec.action),
                   **{name: swap(spec) for name, swap in CAPTION_SWAPS.items()}}
        for name, prompt in prompts.items():
            for k, sigma in enumerate(sigmas):
                noised = (1 - sigma) * clean + sigma * noise
                errors[name][k] += float(((model.x0(prompt, noised, sigma) - clean) ** 2).mean())
    return {**percent_over_true(errors, digits=2), "sigmas": list(sigmas), "clips": count}


WORTH_SEED = 4343  # the slice of clips caption_worth measures on (training never used it)


def ideal_x0(noised, sigma, clips, allowed=None):
    """x0 of the ideal denoiser when the clean clip is known to be one of ``clips``, equally likely: the
    posterior mean sum_i w_i clips_i with w_i ~ exp(-|noised - (1 - sigma) clips_i|^2 / (2 sigma^2)).

    noised (N, D); clips (M, D); allowed (N, M) bool or None: which clips each row may be (a caption
    attribute known). Returns (N, D). With clips drawn from the data distribution this is a kernel
    estimate of the best possible x0 prediction (floored by how densely the clips cover it)."""
    log_weight = -torch.cdist(noised.double(), (1 - sigma) * clips.double()) ** 2 / (2 * sigma ** 2)
    if allowed is not None:
        log_weight = log_weight.masked_fill(~allowed, float("-inf"))
    return torch.softmax(log_weight, dim=1) @ clips.double()


def caption_worth(model, clips=6000, held_out=64, sigmas=RELIANCE_SIGMAS):
    """How much the shape and direction words are worth to the ideal denoiser, next to how much the DiT uses them.

    A slice of the training distribution (red, plain background, one of the four moves, any shape,
    random position, distance and size; 17 frames) is encoded ``clips`` times with the codec's reference
    encoder. On ``held_out`` further clips noised to each sigma: the x0 error of :func:`ideal_x0`
    restricted to the clips that share the true (shape, direction), to those with the opposite
    direction or the next shape (a swapped caption word), or with the word unknown (any direction /
    any shape); and the DiT's x0 error with the true caption and with each word swapped. Percentages
    are errors over the true-caption error, minus 1, averaged over sigmas (per sigma too).
    """
    def slice_clip(index):
        spec = sd.sample_clip_spec(WORTH_SEED, index, colour=0, background="plain",
                                   shape=(index // len(DIRECTIONS)) % len(sd.SHAPES),
                                   action=DIRECTIONS[index % len(DIRECTIONS)])
        frames = torch.from_numpy(sd.render_clip(spec, SIZE)[:17])
        return spec, encode_reference(images_to_video(frames).transpose(1, 2))[0]  # (z, 3, h, w)

    pairs = [slice_clip(i) for i in range(clips + held_out)]
    latents = torch.stack([latent for _, latent in pairs])
    shapes = torch.tensor([spec.shape for spec, _ in pairs])
    moves = torch.tensor([DIRECTIONS.index(spec.action) for spec, _ in pairs])
    bank, held = latents[:clips].flatten(1), latents[clips:]
    opposite = torch.tensor([DIRECTIONS.index(OPPOSITE[d]) for d in DIRECTIONS])
    same_shape = shapes[clips:, None] == shapes[None, :clips]
    same_move = moves[clips:, None] == moves[None, :clips]
    restrictions = {"true": same_shape & same_move,
                    "direction_swapped": same_shape & (opposite[moves[clips:]][:, None] == moves[None, :clips]),
                    "shape_swapped": ((shapes[clips:, None] + 1) % len(sd.SHAPES) == shapes[None, :clips]) & same_move,
                    "direction_unknown": same_shape, "shape_unknown": same_move}
    held_specs = [spec for spec, _ in pairs[clips:]]
    prompts = {"true": [sd.describe(s.colour, s.shape, s.action) for s in held_specs],
               "direction_swapped": [CAPTION_SWAPS["direction"](s) for s in held_specs],
               "shape_swapped": [CAPTION_SWAPS["shape"](s) for s in held_specs]}
    noise = torch.randn(held.shape, generator=torch.Generator().manual_seed(0))
    ideal = {name: np.zeros(len(sigmas)) for name in restrictions}
    dit = {name: np.zeros(len(sigmas)) for name in prompts}
    for k, sigma in enumerate(sigmas):
        noised = (1 - sigma) * held + sigma * noise
        for name, allowed in restrictions.items():
            ideal[name][k] = float(((ideal_x0(noised.flatten(1), sigma, bank, allowed) - held.flatten(1)) ** 2).mean())
        for name, texts in prompts.items():
            for i, text in enumerate(texts):
                predicted = model.x0(text, noised[i:i + 1], sigma)
                dit[name][k] += float(((predicted - held[i:i + 1]) ** 2).mean()) / len(texts)

    def percent(errors):
        return {**percent_over_true(errors, digits=1), "true_error": errors["true"].round(4).tolist()}

    return {"ideal": percent(ideal), "dit": percent(dit), "sigmas": list(sigmas), "clips": clips,
            "held_out": held_out}


def prompt_set_videos(model, language="en", seed_offsets=(0,), **options):
    """Yield (prompt, (colour, shape, direction), frames (17, H, W, 3)): one text-to-video generation per
    PROMPT_SET prompt in ``language`` and seed offset, seed = offset + the prompt's index; ``options`` go
    to ``TinyModel.sample``."""
    for offset in seed_offsets:
        for index, attributes in enumerate(PROMPT_SET):
            prompt = sd.describe(*attributes, language=language)
            yield prompt, attributes, model.decode(model.text_to_video(prompt, seed=offset + index, **options))


def prompt_following(model, language, **options):
    """Detector hits on one 17-frame generation per PROMPT_SET prompt and PROMPT_SEED_OFFSETS entry
    (36 clips: 12 clips could not tell models apart whose expected shape score sits at a threshold);
    ``options`` go to ``TinyModel.sample``."""
    hits, rows = np.zeros(3, dtype=int), []
    for prompt, (colour, shape, direction), frames in prompt_set_videos(model, language, PROMPT_SEED_OFFSETS,
                                                                        **options):
        found = detect(frames)
        result = (found.colour == sd.COLOUR_NAMES[colour], found.shape == sd.SHAPE_NAMES[shape],
                  found.action == direction)
        hits += result
        rows.append((prompt, found.colour, found.shape, found.action))
    return {"colour": int(hits[0]), "shape": int(hits[1]), "direction": int(hits[2]), "of": len(rows),
            "detections": rows}


def prompt_following_by_cfg_stop(model, stops=(0.6, 0.9)):
    """Prompt following hits (colour, shape, direction of 36) in both languages with guidance stopped
    below each noise level in ``stops`` (the sampler's cfg_stop_sigma; 0 is prompt_following itself)."""
    results = {}
    for stop in stops:
        for language in ("en", "zh"):
            found = prompt_following(model, language, cfg_stop_sigma=stop)
            results[f"{stop} {language}"] = [found["colour"], found["shape"], found["direction"]]
    return results


def shape_area_by_guidance(model):
    """How large the generated shapes are at each guidance scale: the mean fraction of shape pixels
    (detectors.shape_mask) of one 17-frame generation per English PROMPT_SET prompt (seed = its index),
    with the colour hits, next to the same fraction for VAE round trips of as many ground-truth clips
    (the trained sizes)."""
    truth = [shape_mask(model.decode(model.encode(ground_truth_clip(index)[1][:17], seed=index)).numpy()).mean()
             for index in range(len(PROMPT_SET))]
    areas, colours = [], []
    for guidance in GUIDANCE_SCALES:
        fractions, hits = [], 0
        for _, (colour, _, _), frames in prompt_set_videos(model, cfg=guidance):
            fractions.append(shape_mask(frames.numpy()).mean())
            hits += detect(frames).colour == sd.COLOUR_NAMES[colour]
        areas.append(float(np.mean(fractions)))
        colours.append(int(hits))
    return {"guidance": list(GUIDANCE_SCALES), "generated_area": areas, "colour_hits": colours,
            "ground_truth_area": float(np.mean(truth)), "of": len(PROMPT_SET)}


def image_to_video_fidelity(model):
    """First-frame PSNR (generated clip vs the input image) and how many clips move as prompted."""
    scores, reference, moved = [], [], 0
    for index, direction in enumerate(DIRECTIONS):
        spec, clip = ground_truth_clip(index, action=direction)
        image = clip[:1]
        latent = model.encode(image, seed=index)
        samples, mask = image_to_video(latent, chunks=1)
        video = model.decode(model.sample(sd.caption(spec, "en"), samples, seed=index, mask=mask))
        scores.append(psnr(video[0], image[0]))
        reference.append(psnr(model.decode(latent)[0], image[0]))
        moved += detect(video).action == direction
    return {"first_frame_psnr": scores, "vae_image_psnr": reference, "moved": moved, "of": len(DIRECTIONS)}


def extension_clips():
    """The four ground-truth clips the extension measurements continue: [(spec, frames (34, H, W, 3))], one
    per direction."""
    return [ground_truth_clip(30 + index, action=direction) for index, direction in enumerate(DIRECTIONS)]


def extension_baselines(model):
    """What :func:`join_ratio` reads at frame 17 of 34 for a true continuation (the VAE round trip of the
    ground-truth clip, each chunk encoded on its own as an extension gets it) and for a hard cut (the
    first chunk, then the same prompt sampled without it)."""
    truth, cuts = [], []
    for index, (spec, clip) in enumerate(extension_clips()):
        encoded = model.encode(clip[:17], seed=index)
        truth.append(join_ratio(model.decode(torch.cat([encoded, model.encode(clip[17:34], seed=index)], 2)), 17))
        unrelated = model.text_to_video(sd.caption(spec, "en"), seed=100 + index)
        cuts.append(join_ratio(model.decode(torch.cat([encoded, unrelated], 2)), 17))
    return {"ground_truth_join_ratio": truth, "cut_join_ratio": cuts}


def extension_join(model, cfg=EXTENSION_CFG, cfg_stop_sigma=0.0, turn=False):
    """Forward extension by one chunk of the four :func:`extension_clips` (their first chunk encoded and
    known): :func:`join_ratio` at frame 17 of the 34, and how many new chunks move as prompted (detector
    on frames 17-33). The prompt is the clip's caption, or with ``turn`` the same shape and colour moving
    the opposite way."""
    ratios, followed = [], 0
    for index, (spec, clip) in enumerate(extension_clips()):
        direction = OPPOSITE[spec.action] if turn else spec.action
        prompt = sd.describe(spec.colour, spec.shape, direction, language="en") if turn else sd.caption(spec, "en")
        window = extension_window(model.encode(clip[:17], seed=index), new_chunks=1, overlap_chunks=1)
        frames = model.decode(window.join(model.sample(prompt, window.samples, seed=100 + index, mask=window.mask,
                                                       cfg=cfg, cfg_stop_sigma=cfg_stop_sigma)))
        ratios.append(join_ratio(frames, 17))
        followed += detect(frames[17:]).action == direction
    return {"join_ratio": ratios, "direction_followed": followed, "of": len(DIRECTIONS), "cfg": cfg,
            "cfg_stop_sigma": cfg_stop_sigma}


def long_video_drift(model, chunks=4, prompt="a blue square stays still"):
    """Chained extension (2-chunk windows, 1 chunk overlap, the long-video node's loop); per chunk the
    mean RGB of the shape pixels and of the background against the first chunk (largest channel change)."""
    def sample(samples, mask, index):
        return model.sample(prompt, samples, seed=7 if index == 0 else 199 + index, mask=mask)

    side = SIZE // 16
    clip = chain_windows(long_video_plan(total_chunks=chunks, window_chunks=2, overlap_chunks=1), sample,
                         lambda new: torch.zeros(1, model.channels, 3 * new, side, side), overlap_chunks=1)
    frames = model.decode(clip).numpy()
    shape_drift, background_drift, colours = [], [], []
    first = None
    for chunk in frames.reshape(chunks, 17, *frames.shape[1:]):
        inside = shape_mask(chunk)
        means = (chunk[inside].mean(0), chunk[~inside].mean(0))
        if first is None:
            first = means
        shape_drift.append(float(np.abs(means[0] - first[0]).max()))
        background_drift.append(float(np.abs(means[1] - first[1]).max()))
        colours.append(detect(chunk).colour)
    return {"frames": int(frames.shape[0]), "shape_drift": shape_drift, "background_drift": background_drift,
            "colours": colours}


def keyframe_interpolation(model):
    """First and last frame known (one chunk + 1 frame = 18 frames): PSNR of both decoded ends against the
    given images (end_psnr: first, last per clip), of the decoded last frame against the FIRST image
    (what an unpinned end would resemble: the background is shared), and where the shape is at the
    middle frame along the straight path (0 = start, 1 = end)."""
    ends, fractions, last_vs_first = [], [], []
    for index, direction in enumerate(DIRECTIONS):
        spec, clip = ground_truth_clip(10 + index, action=direction)
        first, last = clip[:1], clip[17:18]
        window = keyframe_window(model.encode(first, seed=index), model.encode(last, seed=50 + index), chunks=1)
        frames = model.decode(window.join(model.sample(sd.caption(spec, "en"), window.samples, seed=index,
                                                       mask=window.mask)))
        ends += [psnr(frames[0], first[0]), psnr(frames[-1], last[0])]
        last_vs_first.append(psnr(frames[-1], first[0]))
        start, end, middle = centre(frames[0]), centre(frames[-1]), centre(frames[8])
        path = end - start
        fractions.append(float(np.dot(middle - start, path) / np.dot(path, path)))
    return {"end_psnr": ends, "last_frame_vs_first_image_psnr": last_vs_first, "middle_fraction": fractions}


def sdedit_similarity(model):
    """SDEdit of a ground-truth clip (a red shape moving right) with another prompt (blue, moving left):
    PSNR to the input for rising strengths."""
    spec, clip = ground_truth_clip(20, action="right", colour=0)
    latent = model.encode(clip[:17], seed=3)
    prompt = sd.describe(4, spec.shape, "left")
    scores = []
    for strength in SDEDIT_STRENGTHS:
        edited = model.sample(prompt, latent, seed=11, denoise=sdedit_denoise(strength, SHIFT))
        scores.append(psnr(model.decode(edited), clip[:17]))
    return {"strengths": list(SDEDIT_STRENGTHS), "psnr": scores}


def tiled_decode(model):
    """A generated 34-frame clip decoded whole and in 48-pixel tiles overlapping by 32 (2 x 2 tiles)."""
    latent = model.text_to_video("a green triangle moves up", seed=5, chunks=2)
    return {"psnr": psnr(model.decode(latent, tile_px=48, overlap_px=32), model.decode(latent))}


MEASUREMENTS = {
    "detector_round_trip": detector_round_trip,
    "caption_reliance": caption_reliance,
    "caption_worth": caption_worth,
    "prompt_following_en": lambda m: prompt_following(m, "en"),
    "prompt_following_zh": lambda m: prompt_following(m, "zh"),
    "prompt_following_by_cfg_stop": prompt_following_by_cfg_stop,
    "shape_area_by_guidance": shape_area_by_guidance,
    "image_to_video": image_to_video_fidelity,
    "extension_baselines": extension_baselines,
    "extension": extension_join,
    "extension_turn": lambda m: extension_join(m, turn=True),
    "extension_cfg3": lambda m: extension_join(m, cfg=CFG),
    "extension_cfg3_interval": lambda m: extension_join(m, cfg=CFG, cfg_stop_sigma=0.9),
    "extension_cfg3_turn": lambda m: extension_join(m, cfg=CFG, turn=True),
    "long_video": long_video_drift,
    "keyframes": keyframe_interpolation,
    "sdedit": sdedit_similarity,
    "tiled_decode": tiled_decode,
    "demo_smoothness": demo_smoothness,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=WEIGHTS)
    parser.add_argument("--only", default=None, help="comma-separated measurement names (their entries of --out "
                                                     "are replaced, the others kept)")
    parser.add_argument("--out", default=None, help="the JSON report (default: research/logs/behaviour.json for the "
                                                    "shipped weights, none for others)")
    args = parser.parse_args(argv)
    if args.out is None and os.path.abspath(args.weights) == os.path.abspath(WEIGHTS):
        args.out = os.path.join(RESEARCH, "logs", "behaviour.json")
    torch.manual_seed(0)
    model = TinyModel(args.weights)
    wanted = args.only.split(",") if args.only else list(MEASUREMENTS)
    results = {}
    if args.only and args.out and os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            results = json.load(f)
    for name in wanted:
        started = time.time()
        results[name] = MEASUREMENTS[name](model)
        results[name]["seconds"] = round(time.time() - started, 1)
        print(name, json.dumps(results[name], ensure_ascii=False, default=float), flush=True)
        if args.out:  # written after each measurement: nothing measured is lost if a later one fails
            with open(args.out, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1, ensure_ascii=False, default=float)


if __name__ == "__main__":
    main()
