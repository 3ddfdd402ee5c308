"""Generation modes as starting latents + known-frame masks (pure torch, ComfyUI latent layout).

Latents are (B, 64, T, h, w). Masks follow ComfyUI's ``noise_mask``: (B, 1, T, h, w), 1 = generate,
0 = keep the latent as given. Any sampler that honours ``noise_mask`` (ours and KSampler) runs
every mode; joins then copy the known latents back so they come out bit-identical.

Why whole chunks: the VAE turns every 17 pixel frames into 3 latent frames independently, and the
FIRST latent of a chunk encodes the chunk's first pixel frame alone (causal convolutions and
attention), exactly like a single image. So a still image can be pinned at any chunk start
(latent index 3j) — including a trailing one-latent chunk, which decodes to one frame — and clips
can be cut and joined at chunk borders without re-encoding anything.
"""

from dataclasses import dataclass

import torch

from .flow_schedule import DEFAULT_SHIFT, unshifted
from .video_geometry import LATENTS_PER_CHUNK

FORWARD, BACKWARD = "forward", "backward"


def frame_mask(reference, known):
    """(B, 1, T, h, w) float mask shaped like ``reference`` latents: 0 at latent frames in ``known``, else 1."""
    batch, _, frames, height, width = reference.shape
    mask = torch.ones(batch, 1, frames, height, width, dtype=torch.float32, device=reference.device)
    for index in known:
        mask[:, :, index] = 0.0
    return mask


def whole_chunks(latent, what):
    """Number of 3-latent chunks in ``latent``; ValueError naming ``what`` if it is not whole chunks."""
    frames = latent.shape[2]
    if frames % LATENTS_PER_CHUNK:
        raise ValueError(f"{what} has {frames} latent frames; it must be whole 17-frame chunks (a multiple of 3 "
                         "latent frames, i.e. 17, 34, 51 ... pixel frames)")
    return frames // LATENTS_PER_CHUNK


def image_to_video(image_latent, chunks):
    """Training-free image-to-video for T2V weights: the image is latent frame 0, the rest is generated.

    image_latent (B, C, 1, h, w) -> samples (B, C, 3*chunks, h, w), mask with frame 0 known.
    """
    samples = torch.zeros(image_latent.shape[:2] + (chunks * LATENTS_PER_CHUNK,) + image_latent.shape[3:],
                          dtype=image_latent.dtype, device=image_latent.device)
    samples[:, :, :1] = image_latent[:, :, :1]
    return samples, frame_mask(samples, [0])


@dataclass
class Window:
    """A sampling window over a clip: what to sample and how to put the result back together.

    samples/mask: the LATENT to sample (known latents in place, mask 0 there).
    before/after: latents that stay outside the window and are re-attached unchanged by ``join``.
    keep: slice of the sampled window that is new material (the rest is the known overlap).
    """

    samples: torch.Tensor
    mask: torch.Tensor
    before: torch.Tensor
    after: torch.Tensor
    keep: slice

    def join(self, sampled):
        """The full clip: untouched ``before`` + the window (overlap copied from the input) + ``after``."""
        window = torch.where(self.mask.expand_as(sampled) == 0, self.samples.to(sampled.dtype), sampled)
        return torch.cat([self.before.to(sampled.dtype), window, self.after.to(sampled.dtype)], dim=2)


def extension_window(clip, new_chunks, overlap_chunks=1, direction=FORWARD):
    """Extend ``clip`` (B, C, 3k, h, w) by ``new_chunks`` chunks after (forward) or before (backward) it.

    The window holds the ``overlap_chunks`` chunks of the clip next to the new part as known frames;
    ``Window.join(sampled)`` returns the whole clip with its original latents bit-identical.
    """
    total = whole_chunks(clip, "the clip to extend")
    if not 1 <= overlap_chunks <= total:
        raise ValueError(f"overlap_chunks must be between 1 and the clip's {total} chunks, got {overlap_chunks}")
    if new_chunks < 1:
        raise ValueError(f"new_chunks must be at least 1, got {new_chunks}")
    overlap = overlap_chunks * LATENTS_PER_CHUNK
    new = torch.zeros(clip.shape[:2] + (new_chunks * LATENTS_PER_CHUNK,) + clip.shape[3:],
                      dtype=clip.dtype, device=clip.device)
    if direction == FORWARD:
        samples = torch.cat([clip[:, :, -overlap:], new], dim=2)
        known, before, after = range(overlap), clip[:, :, :-overlap], clip[:, :, :0]
        keep = slice(overlap, samples.shape[2])
    elif direction == BACKWARD:
        samples = torch.cat([new, clip[:, :, :overlap]], dim=2)
        known, before, after = range(new.shape[2], samples.shape[2]), clip[:, :, :0], clip[:, :, overlap:]
        keep = slice(0, new.shape[2])
    else:
        raise ValueError(f"direction must be '{FORWARD}' or '{BACKWARD}', got {direction!r}")
    return Window(samples, frame_mask(samples, known), before, after, keep)


def bridge_window(clip_a, clip_b, new_chunks, overlap_chunks=1):
    """Frames between the end of ``clip_a`` and the start of ``clip_b`` (both whole chunks).

    Window = [last overlap chunks of A | new_chunks generated | first overlap chunks of B];
    ``join`` gives A + new + B with both clips bit-identical.
    """
    for clip, name in ((clip_a, "clip A"), (clip_b, "clip B")):
        if whole_chunks(clip, name) < overlap_chunks:
            raise ValueError(f"{name} is shorter than overlap_chunks={overlap_chunks} chunks")
    if clip_a.shape[3:] != clip_b.shape[3:] or clip_a.shape[:2] != clip_b.shape[:2]:
        raise ValueError(f"clips A {tuple(clip_a.shape)} and B {tuple(clip_b.shape)} differ in batch/channels/size")
    overlap = overlap_chunks * LATENTS_PER_CHUNK
    new = torch.zeros(clip_a.shape[:2] + (new_chunks * LATENTS_PER_CHUNK,) + clip_a.shape[3:],
                      dtype=clip_a.dtype, device=clip_a.device)
    samples = torch.cat([clip_a[:, :, -overlap:], new, clip_b[:, :, :overlap].to(clip_a.dtype)], dim=2)
    known = list(range(overlap)) + list(range(overlap + new.shape[2], samples.shape[2]))
    return Window(samples, frame_mask(samples, known), clip_a[:, :, :-overlap], clip_b[:, :, overlap:],
                  slice(overlap, overlap + new.shape[2]))


def keyframe_window(first_latent, last_latent, chunks):
    """First-to-last-frame interpolation over ``chunks`` chunks plus one trailing frame.

    first_latent/last_latent (B, C, 1, h, w) single-image latents. The window has 3*chunks + 1 latent
    frames: the first image at latent 0 (start of chunk 0) and the last image as a trailing
    one-latent chunk, which decodes to exactly one frame: 17*chunks + 1 pixel frames, the first and
    the last pinned.
    """
    if chunks < 1:
        raise ValueError(f"chunks must be at least 1, got {chunks}")
    frames = chunks * LATENTS_PER_CHUNK + 1
    samples = torch.zeros(first_latent.shape[:2] + (frames,) + first_latent.shape[3:],
                          dtype=first_latent.dtype, device=first_latent.device)
    samples[:, :, :1] = first_latent[:, :, :1]
    samples[:, :, -1:] = last_latent[:, :, :1].to(samples.dtype)
    empty = samples[:, :, :0]
    return Window(samples, frame_mask(samples, [0, frames - 1]), empty, empty, slice(0, frames))


def long_video_plan(total_chunks, window_chunks, overlap_chunks, start_chunks=None):
    """New chunks sampled by each window: the first window (unless a start clip is given) then extensions."""
    if overlap_chunks >= window_chunks:
        raise ValueError(f"overlap_chunks ({overlap_chunks}) must be smaller than the window "
                         f"({window_chunks} chunks)")
    plan, have = [], start_chunks or 0
    if not start_chunks:
        plan.append(min(window_chunks, total_chunks))
        have = plan[0]
    while have < total_chunks:
        step = min(window_chunks - overlap_chunks, total_chunks - have)
        plan.append(step)
        have += step
    return plan


def chain_windows(plan, sample, first_window, overlap_chunks, start=None, on_window=None):
    """The long-video loop: a first window (unless ``start`` is given), then chained forward extensions.

    plan: new chunks per window (:func:`long_video_plan`). sample(samples, mask, index) -> the sampled
    window (same shape as samples (1, C, T, h, w); mask None for a fresh window, else the window's
    noise_mask). first_window(chunks) -> the start latent of a fresh window. start: a clip to continue.
    on_window(clip) is called with the clip so far after every window. Each extension keeps up to
    ``overlap_chunks`` whole chunks of the clip known and copies every earlier latent bit-identically.
    Returns the clip (1, C, T, h, w).
    """
    current = start
    for index, new_chunks in enumerate(plan):
        if current is None:
            current = sample(first_window(new_chunks), None, index)
        else:
            window = extension_window(current, new_chunks, min(overlap_chunks, current.shape[2] // LATENTS_PER_CHUNK))
            current = window.join(sample(window.samples, window.mask, index))
        if on_window is not None:
            on_window(current)
    return current


def sdedit_denoise(strength, shift=DEFAULT_SHIFT):
    """Sampler ``denoise`` that starts at noise level sigma = ``strength`` (0 = keep input, 1 = ignore it)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    return unshifted(float(strength), shift)
