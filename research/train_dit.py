"""Stage 4 of the small model: train our Step-Video DiT on VAE latents of the synthetic clips.

Flow matching in the official convention: with t in [0, 1) (t = 0 noise), x_t = t * data + (1 - t) * noise
and the target velocity data - noise; t = 1 - sigma where the noise level sigma is drawn from a
logit-normal shifted towards noise (shift :data:`TRAIN_SHIFT`), because sampling with the official
shift (13) spends most steps at high noise.

Every clip of the latent dataset is 35 frames encoded as [chunk A (frames 0-16) = 3 latents ; chunk B
(frames 17-33) = 3 latents ; frame 34 alone = 1 latent]. Chunk B's first latent encodes frame 17 alone
(the encoder is causal), so the prefixes of this 7-latent sequence are exactly the windows the
generation modes sample:

    A        3 latents  text-to-video, image-to-video (latent 0 known)
    B        3 latents  the same, starting mid-clip
    A + 1    4 latents  keyframe interpolation (latents 0 and 3 known)
    A B      6 latents  34-frame video, extension forward/backward (one chunk known)
    A B + 1  7 latents  two-chunk keyframe interpolation

The modes keep some latents of a window known. A sampler can re-noise them to the current level at
every step (ComfyUI's noise_mask; what the released weights expect), for which plain joint denoising
of these windows is the training; or give them clean (samplers/flow_euler.py, ``clean_known``), for
which the later phases train a share of the samples with exactly those latents clean and left out of
the loss (:func:`known_latents`). The DiT has one timestep per sample, so it tells the clean latents
from the noised ones by their content; a checkpoint trained so says it in its metadata.

Text: the caption of the window in English or Chinese, composed like the nodes do (official magic
suffixes with probability 0.75, else bare), replaced by the negative/empty prompt with probability
:data:`CFG_DROPOUT` (classifier-free guidance). Embeddings come from the shipped text encoders (see
:class:`TextBank`) and are cached per text.
"""

import math
import time

import numpy as np
import torch

from stepvideo_pack.model_loaders.text_encoder_loader import (load_clip_tokenizer, load_hunyuan_clip,
                                                              load_step_llm, load_step_tokenizer)
from stepvideo_pack.model_loaders.text_encoding import StepVideoTextEncoder, compose_prompts
from stepvideo_pack.networks.dit import DiTConfig, StepVideoDiT
from stepvideo_pack.samplers.flow_schedule import shifted
from stepvideo_pack.samplers.video_geometry import LATENTS_PER_CHUNK

from research import synthetic_data
from research.text_models import CLIP_MAX_LENGTH, CLIP_WIDTH, LLM_MAX_LENGTH, MAGIC_PROBABILITY, STEP_LLM_CONFIG
from research.constructed_vae import Z_CHANNELS

# one 128-wide head (the RoPE split fixes the head width), 6 layers, 2 x 2 latent patches per token: at
# 128 x 128 pixels a 17-frame chunk is 3 x 4 x 4 = 48 tokens. On the CPU budget this trained best per
# second among the variants tried (2 heads x 4 layers, patch 1 or 2; TRAINING.md).
DIT_CONFIG = DiTConfig(num_heads=1, head_dim=128, in_channels=Z_CHANNELS, out_channels=Z_CHANNELS, num_layers=6,
                       caption_channels=(STEP_LLM_CONFIG.hidden_size, CLIP_WIDTH), ff_inner_dim=512, patch_size=2)
TRAIN_SHIFT = 3.0
CFG_DROPOUT = 0.1
WINDOWS = {  # name: (latent slice, pixel-frame window of the caption, probability)
    "A": (slice(0, 3), (0, 17), 0.30),
    "B": (slice(3, 6), (17, 34), 0.15),
    "A+1": (slice(0, 4), (0, 18), 0.15),
    "AB": (slice(0, 6), (0, 34), 0.25),
    "AB+1": (slice(0, 7), (0, 35), 0.15),
}
# the latents each generation mode keeps known in a window (samplers/modes.py), for the clean-known variants
MODE_KNOWN_LATENTS = {
    "A": ((0,),),                        # image-to-video
    "B": ((0,),),
    "A+1": ((0, 3),),                    # keyframes, one chunk
    "AB": ((0, 1, 2), (3, 4, 5), (0,)),  # extension forward / backward, two-chunk image-to-video
    "AB+1": ((0, 6),),                   # keyframes, two chunks
}
TOKENS_PER_BATCH = 1600  # batch size = this / tokens of one window


def init_dit(config, seed):
    """A StepVideoDiT with adaLN-Zero style init: N(0, 0.02) matrices, zero biases, unit norm scales, and
    zeros for the block modulation, the block/final scale-shift tables, the cross-attention output and
    the output projection, so every block starts as the identity and the model predicts 0.

    (Tried and dropped: starting as the linear denoiser v = -x through a large patch-embedding bias and
    a pseudo-inverse output layer; after 400 steps its loss was twice this init's.)"""
    generator = torch.Generator().manual_seed(seed)
    model = StepVideoDiT(config)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.ndim == 1:
                p.copy_(torch.ones_like(p) if name.endswith("weight") and "norm" in name else torch.zeros_like(p))
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
        for name, p in model.named_parameters():
            if name.endswith("scale_shift_table") or name.startswith("adaln_single.linear") \
                    or ".attn2.wo." in name or name.startswith("proj_out"):
                p.zero_()
    return model


class TextBank:
    """Text conditioning from the shipped encoders, cached per text.

    The encoders and tokenizers are loaded with the users' loaders and run as ``StepVideoTextEncoder``
    runs them (Step-LLM in bf16, HunyuanCLIP in fp32 cast to bf16), except that Step-LLM only runs up
    to the longest valid length of the batch instead of all 320 positions: it is causal, so the valid
    positions do not depend on the padding after them, and the DiT masks everything past them.
    :meth:`check_against_encoder` compares with ``StepVideoTextEncoder`` itself.

    ``batch(texts)`` -> dict of DiT inputs: llm states (B, L, D) for the longest valid length L, CLIP
    states (B, 77, Dc), mask (B, 77 + L).
    """

    def __init__(self, step_llm_path, clip_path):
        self.paths = step_llm_path, clip_path
        self.llm = load_step_llm(step_llm_path, dtype=torch.bfloat16)
        self.clip = load_hunyuan_clip(clip_path, dtype=torch.float32)
        self.step_tokenizer = load_step_tokenizer(step_llm_path)
        self.clip_tokenizer = load_clip_tokenizer(clip_path)
        self.cache = {}

    @torch.no_grad()
    def _encode(self, texts):
        ids, mask = self.step_tokenizer(texts, max_length=LLM_MAX_LENGTH)
        length = int(mask.sum(1).max())
        llm = self.llm(ids[:, :length])
        clip_ids, clip_mask = self.clip_tokenizer(texts, max_length=CLIP_MAX_LENGTH)
        clip = self.clip(clip_ids, clip_mask).to(llm.dtype)
        return [(llm[i, :int(mask[i].sum())].clone(), clip[i].clone()) for i in range(len(texts))]

    def check_against_encoder(self, texts, atol=2e-2):
        """AssertionError unless the cached path equals StepVideoTextEncoder on ``texts`` (valid positions)."""
        reference = StepVideoTextEncoder(*self.paths, keep_loaded=True).encode(texts)
        for i, (llm, clip) in enumerate(self._encode(texts)):
            assert torch.allclose(llm.float(), reference.llm_states[i, :llm.shape[0]].float(), atol=atol), texts[i]
            assert torch.allclose(clip.float(), reference.clip_states[i].float(), atol=atol), texts[i]

    def batch(self, texts):
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self._encode(missing)))
        entries = [self.cache[t] for t in texts]
        longest = max(e[0].shape[0] for e in entries)
        width = entries[0][0].shape[1]
        llm = torch.zeros(len(texts), longest, width)
        clip = torch.stack([e[1] for e in entries]).float()
        mask = torch.zeros(len(texts), clip.shape[1] + longest, dtype=torch.long)
        mask[:, :clip.shape[1]] = 1
        for i, (states, _) in enumerate(entries):
            llm[i, :states.shape[0]] = states.float()
            mask[i, clip.shape[1]:clip.shape[1] + states.shape[0]] = 1
        return {"encoder_hidden_states": llm, "encoder_hidden_states_2": clip, "encoder_attention_mask": mask}


def window_texts(specs, window, rng):
    """Prompt texts of a batch: caption in a random language, composed with/without magic, CFG dropout."""
    texts = []
    for spec in specs:
        language = "en" if rng.uniform() < 0.5 else "zh"
        positive, negative = compose_prompts(synthetic_data.caption(spec, language, window), "", variant="t2v",
                                             use_magic=bool(rng.uniform() < MAGIC_PROBABILITY))
        texts.append(negative if rng.uniform() < CFG_DROPOUT else positive)
    return texts


def sample_sigma(count, generator, sigma_range=None):
    """(count,) noise levels: logit-normal(0, 1) then the SD3 shift toward noise (:data:`TRAIN_SHIFT`), or with
    ``sigma_range`` = (low, high) uniform in it (TRAINING.md: the direction word is learnt only without
    the extreme levels)."""
    if sigma_range is not None:
        low, high = sigma_range
        return low + (high - low) * torch.rand(count, generator=generator)
    return shifted(torch.sigmoid(torch.randn(count, generator=generator)), TRAIN_SHIFT)


def cosine_learning_rate(lr, progress, warm=1.0):
    """``lr`` times the warm-up ramp ``warm`` (0..1) on a cosine from 1 to 0.1 as ``progress`` goes 0 -> 1."""
    return lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def shape_cell_weights(data, weight):
    """(B, T, 1, h, w) loss weights 1 + ``weight`` on the latent cells a shape touches, for clips on a
    plain background: cells whose channels differ from the frame's median cell (the background) by more
    than a tenth of the frame's largest difference. data (B, T, C, h, w)."""
    background = data.flatten(-2).median(-1).values[..., None, None]
    difference = (data - background).abs().mean(2, keepdim=True)
    touched = difference > 0.1 * difference.flatten(-2).amax(-1)[..., None, None]
    return 1 + weight * touched.float()


def known_latents(name, batch, rng, probability, sets=None):
    """(B, T, 1, 1, 1) bool, True at the latents a sample keeps clean: with ``probability`` one of the
    window's known-latent sets (``sets[name]`` if given, else :data:`MODE_KNOWN_LATENTS`), drawn per sample,
    else none. None when ``probability`` is 0."""
    if not probability:
        return None
    frames = WINDOWS[name][0].stop - WINDOWS[name][0].start
    known = torch.zeros(batch, frames, 1, 1, 1, dtype=torch.bool)
    choices = (sets or {}).get(name, MODE_KNOWN_LATENTS[name])
    for row in range(batch):
        if rng.uniform() < probability:
            known[row, list(choices[rng.integers(len(choices))])] = True
    return known


def seam_weights(known, weight):
    """(B, T, 1, 1, 1) loss weights 1 + ``weight`` on the latent next to a known chunk of a two-chunk
    window (extension: latent 3 when chunk A (0-2) is known, latent 2 when chunk B (3-5) is), 1 elsewhere;
    the join of an extension is drawn from that latent. known (B, T, 1, 1, 1) bool."""
    weights = torch.ones(known.shape)
    if known.shape[1] != 2 * LATENTS_PER_CHUNK:
        return weights
    flags = known[:, :, 0, 0, 0]
    chunk_a, chunk_b = flags[:, :LATENTS_PER_CHUNK].all(1), flags[:, LATENTS_PER_CHUNK:].all(1)
    weights[chunk_a & ~chunk_b, LATENTS_PER_CHUNK] += weight
    weights[chunk_b & ~chunk_a, LATENTS_PER_CHUNK - 1] += weight
    return weights


def flow_matching_loss(model, data, noise, sigma, text, shape_weight=0.0, known=None, seam_weight=0.0,
                       autocast=True):
    """The official objective: the DiT (under bf16 autocast, as at inference, unless ``autocast`` is
    False: fp32) predicts the velocity data - noise from x_t = (1 - sigma) data + sigma noise at
    t = 1 - sigma; mean squared error, or the mean weighted by :func:`shape_cell_weights`
    (``shape_weight``) and :func:`seam_weights` (``seam_weight``), normalised by the mean weight.
    ``known`` (B, T, 1, 1, 1) bool: latents given clean (x_t = data, as a clean-known sampler gives
    them) and left out of the loss.

    data, noise (B, T, C, h, w); sigma (B,); text: the DiT's text inputs (``TextBank.batch``)."""
    s = sigma[:, None, None, None, None]
    noised = (1 - s) * data + s * noise
    if known is not None:
        noised = torch.where(known, data, noised)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        prediction = model(noised, 1 - sigma, **text)
    squared = (prediction.float() - (data - noise)) ** 2
    if not shape_weight and known is None:
        return squared.mean()
    weights = shape_cell_weights(data, shape_weight) if shape_weight else torch.ones_like(squared[:, :, :1])
    if known is not None:
        weights = weights * ~known
        if seam_weight:
            weights = weights * seam_weights(known, seam_weight)
    return (weights * squared).mean() / weights.mean()


def window_probabilities(shares=None):
    """Probabilities of the :data:`WINDOWS` in their order: ``shares`` {name: p} where given, the rest
    scaled to fill 1 - sum(shares) in their :data:`WINDOWS` proportions."""
    base = np.array([WINDOWS[n][2] for n in WINDOWS])
    if not shares:
        return base / base.sum()
    fixed = np.array([n in shares for n in WINDOWS])
    probs = np.where(fixed, [shares.get(n, 0.0) for n in WINDOWS], base / base[~fixed].sum() * (1 - sum(shares.values())))
    return probs / probs.sum()


class EMA:
    def __init__(self, model, decay):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model, step):
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            self.shadow[k].mul_(decay).add_(v.detach(), alpha=1 - decay)


def train_dit(model, latents, specs, text_bank, steps, seed, log, lr=1e-3, ema_decay=0.998, checkpoint=None,
              checkpoint_every=100, start_step=0, optimizer_state=None, ema_state=None, phase_start=0,
              sigma_range=None, cosine_end=None, shape_weight=0.0, clean_known=0.0, window_shares=None,
              known_sets=None, seam_weight=0.0, autocast=True):
    """Train ``model`` in place on ``latents`` (N, 7, z, h, w) of the clips ``specs``, steps ``start_step``
    to ``steps``; the learning rate warms up over 100 steps from ``phase_start`` and follows a cosine
    from ``lr`` to ``lr / 10`` between ``phase_start`` and ``cosine_end`` (default ``steps``; a later
    phase continues a finished run with its own schedule). Noise levels: :func:`sample_sigma`; loss:
    :func:`flow_matching_loss` (``shape_weight``: on clips with a plain background only; ``seam_weight``;
    ``autocast``); ``clean_known``: the share of samples whose mode-known latents are given clean
    (:func:`known_latents`, ``known_sets`` overriding some windows' sets); ``window_shares``: {window:
    probability} overriding :data:`WINDOWS`, the other windows keeping their relative shares.

    Returns the EMA weights (state dict). Each step's randomness comes from (seed, step), so a run
    resumed from a checkpoint continues exactly.
    """
    names = list(WINDOWS)
    probs = window_probabilities(window_shares)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    ema = EMA(model, ema_decay)
    if ema_state is not None:
        ema.shadow = ema_state
    tokens_per_latent = latents.shape[-1] * latents.shape[-2] // model.config.patch_size ** 2
    model.train()
    for step in range(start_step, steps):
        started = time.time()
        rng = np.random.default_rng([seed, step, 4])
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        name = names[rng.choice(len(names), p=probs)]
        latent_slice, window, _ = WINDOWS[name]
        frames = latent_slice.stop - latent_slice.start
        batch = max(1, TOKENS_PER_BATCH // (frames * tokens_per_latent))
        picks = rng.integers(latents.shape[0], size=batch)
        data = latents[picks][:, latent_slice].float()
        noise = torch.randn(data.shape, generator=generator)
        sigma = sample_sigma(batch, generator, sigma_range)
        text = text_bank.batch(window_texts([specs[i] for i in picks], window, rng))
        warm = min(1.0, (step + 1 - phase_start) / 100)
        for group in optimizer.param_groups:
            group["lr"] = cosine_learning_rate(lr, (step - phase_start) / ((cosine_end or steps) - phase_start), warm)
        known = known_latents(name, batch, np.random.default_rng([seed, step, 5]), clean_known, known_sets)
        loss = flow_matching_loss(model, data, noise, sigma, text, shape_weight, known, seam_weight, autocast)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        optimizer.step()
        ema.update(model, step)
        log({"step": step, "window": name, "batch": batch, "loss": loss.item(), "grad_norm": grad_norm,
             "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - started})
        if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            checkpoint(step + 1, model, optimizer, ema.shadow)
    model.eval()
    return ema.shadow
