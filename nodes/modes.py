"""Generation modes as graph blocks: each builds a starting LATENT (+ noise_mask) and/or CONDITIONING.

Sampling stays generic: our sampler and KSampler both honour ``noise_mask`` and ``denoise``.
Windows (extension, bridging, keyframes) carry what they need to be put back together in the LATENT
dict under ``stepvideo_window``; samplers copy LATENT dicts, so ``StepVideo Join Window`` after the
sampler returns the whole clip with every known latent bit-identical — nothing is VAE-encoded twice.
"""

import logging

import torch

import comfy.model_management
import node_helpers

from ..media.frames import cover_and_crop
from ..networks.dit import DEFAULT_MOTION_SCORE
from ..samplers import modes
from ..samplers.flow_schedule import DEFAULT_SHIFT
from ..samplers.video_geometry import FRAMES_PER_CHUNK, LATENTS_PER_CHUNK, snap_frames, snap_size
from .host import CATEGORY, require_finite, video_samples
from .memory import require_latent_fits
from .vae import VAE_TYPE, encode_images

log = logging.getLogger(__name__)
WINDOW_KEY = "stepvideo_window"
MODES = CATEGORY + "/modes"


def _chunks_for(frames):
    """Whole 17-frame chunks for a pixel frame count (at least one)."""
    return max(1, snap_frames(frames) // FRAMES_PER_CHUNK)


def _latent_channels(vae):
    return vae.vae.config.decoder.z_channels


def _require_window_fits(node, clip, chunks):
    """require_latent_fits for a window of at most ``chunks`` 17-frame chunks at ``clip``'s size and batch."""
    require_latent_fits(node, (clip.shape[0], clip.shape[1], chunks * LATENTS_PER_CHUNK, *clip.shape[3:]))


def window_latent(window):
    """LATENT dict of a modes.Window (samples, noise_mask, and the join information)."""
    return {"samples": window.samples, "noise_mask": window.mask, WINDOW_KEY: window}


def _intermediate(latent):
    return latent.to(comfy.model_management.intermediate_device())


class StepVideoImageToVideo:
    DISPLAY_NAME = "StepVideo Image To Video"
    DESCRIPTION = ("Starts a video from an image. With TI2V weights: the official path (image resized to cover and "
                   "centre-cropped, VAE-encoded to one latent frame, given to the DiT on extra channels with the "
                   "motion score). With T2V weights: the image's latent is the known first latent frame "
                   "(training-free). The 'path' output and the log say which one ran.")
    CATEGORY = MODES
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT", "STRING")
    RETURN_NAMES = ("positive", "negative", "latent", "path")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The DiT that will sample (decides the TI2V or T2V path)."}),
            "vae": (VAE_TYPE,),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "image": ("IMAGE", {"tooltip": "The first frame (only the first image of a batch is used)."}),
            "width": ("INT", {"default": 992, "min": 16, "max": 4096, "step": 16}),
            "height": ("INT", {"default": 544, "min": 16, "max": 4096, "step": 16}),
            "frames": ("INT", {"default": 102, "min": 17, "max": 17 * 60,
                               "tooltip": "Pixel frames, snapped down to a multiple of 17 (TI2V official: 102)."}),
            "motion_score": ("FLOAT", {"default": DEFAULT_MOTION_SCORE, "min": 0.0, "max": 50.0, "step": 0.5,
                                       "tooltip": "TI2V only: how much the scene moves. 2 = steadier, 5 = default, "
                                                  "10-20 = more motion. Ignored by T2V weights."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 16}),
        }}

    def build(self, model, vae, positive, negative, image, width, height, frames, motion_score, batch_size):
        require_finite("StepVideo Image To Video", motion_score=motion_score)
        width, height, chunks = snap_size(width), snap_size(height), _chunks_for(frames)
        require_latent_fits("StepVideo Image To Video", (batch_size, _latent_channels(vae),
                                                         chunks * LATENTS_PER_CHUNK, height // 16, width // 16))
        image_latent = encode_images(vae, cover_and_crop(image[:1], width, height))  # (1, C, 1, h, w)
        image_latent = image_latent.repeat(batch_size, 1, 1, 1, 1)
        if model.model.diffusion_model.config.image_condition:
            values = {"concat_latent_image": image_latent, "motion_score": float(motion_score)}
            positive = node_helpers.conditioning_set_values(positive, values)
            negative = node_helpers.conditioning_set_values(negative, values)
            samples = torch.zeros(image_latent.shape[:2] + (chunks * 3,) + image_latent.shape[3:])
            latent = {"samples": _intermediate(samples)}
            path = f"TI2V weights: official image condition, motion score {motion_score:g}"
        else:
            samples, mask = modes.image_to_video(image_latent, chunks)
            latent = {"samples": _intermediate(samples), "noise_mask": mask}
            path = "T2V weights: first latent frame kept (training-free image-to-video)"
        log.info("StepVideo Image To Video: %s", path)
        return {"ui": {"text": [path]}, "result": (positive, negative, latent, path)}


class StepVideoExtendVideo:
    DISPLAY_NAME = "StepVideo Extend Video"
    DESCRIPTION = ("Generates the next (forward) or previous (backward) frames of a clip given as a LATENT. The "
                   "clip's whole 17-frame chunks next to the new part stay known; sample the output, then use "
                   "StepVideo Join Window to get the whole clip (the original part bit-identical).")
    CATEGORY = MODES
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("LATENT", {"tooltip": "The clip (e.g. a sampler's output or StepVideo VAE Encode of frames)."}),
            "new_frames": ("INT", {"default": 68, "min": 17, "max": 17 * 60,
                                   "tooltip": "Frames to add, snapped down to a multiple of 17."}),
            "overlap_chunks": ("INT", {"default": 1, "min": 1, "max": 12,
                                       "tooltip": "17-frame chunks of the clip the model sees as known context."}),
            "direction": ([modes.FORWARD, modes.BACKWARD], {"default": modes.FORWARD}),
        }}

    def build(self, clip, new_frames, overlap_chunks, direction):
        samples = video_samples(clip, "StepVideo Extend Video (clip)")
        _require_window_fits("StepVideo Extend Video", samples, _chunks_for(new_frames) + overlap_chunks)
        window = modes.extension_window(samples, _chunks_for(new_frames), overlap_chunks, direction)
        return (window_latent(window),)


class StepVideoBridgeClips:
    DISPLAY_NAME = "StepVideo Bridge Clips"
    DESCRIPTION = ("Generates the frames between the end of clip A and the start of clip B (both LATENTs of whole "
                   "17-frame chunks). Sample, then StepVideo Join Window gives A + bridge + B.")
    CATEGORY = MODES
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_a": ("LATENT",), "clip_b": ("LATENT",),
            "new_frames": ("INT", {"default": 34, "min": 17, "max": 17 * 60}),
            "overlap_chunks": ("INT", {"default": 1, "min": 1, "max": 12}),
        }}

    def build(self, clip_a, clip_b, new_frames, overlap_chunks):
        clip_a = video_samples(clip_a, "StepVideo Bridge Clips (clip_a)")
        clip_b = video_samples(clip_b, "StepVideo Bridge Clips (clip_b)")
        _require_window_fits("StepVideo Bridge Clips", clip_a, _chunks_for(new_frames) + 2 * overlap_chunks)
        window = modes.bridge_window(clip_a, clip_b, _chunks_for(new_frames), overlap_chunks)
        return (window_latent(window),)


class StepVideoKeyframes:
    DISPLAY_NAME = "StepVideo Keyframes (First/Last Frame)"
    DESCRIPTION = ("Frame interpolation between a first and a last image. The first image is latent frame 0; the "
                   "last image becomes a trailing one-latent chunk, which the VAE decodes to exactly one frame, so "
                   "the video has 17 x chunks + 1 frames with both ends pinned. Sample, then Join Window.")
    CATEGORY = MODES
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": (VAE_TYPE,),
            "first_image": ("IMAGE",), "last_image": ("IMAGE",),
            "width": ("INT", {"default": 992, "min": 16, "max": 4096, "step": 16}),
            "height": ("INT", {"default": 544, "min": 16, "max": 4096, "step": 16}),
            "frames": ("INT", {"default": 69, "min": 18, "max": 17 * 60 + 1,
                               "tooltip": "Total frames incl. both keyframes: 17 x chunks + 1 (snapped down)."}),
        }}

    def build(self, vae, first_image, last_image, width, height, frames):
        width, height = snap_size(width), snap_size(height)
        chunks = _chunks_for(frames - 1)
        require_latent_fits("StepVideo Keyframes", (1, _latent_channels(vae), chunks * LATENTS_PER_CHUNK + 1,
                                                    height // 16, width // 16))
        first = encode_images(vae, cover_and_crop(first_image[:1], width, height))
        last = encode_images(vae, cover_and_crop(last_image[-1:], width, height))
        return (window_latent(modes.keyframe_window(first, last, chunks)),)


class StepVideoJoinWindow:
    DISPLAY_NAME = "StepVideo Join Window"
    DESCRIPTION = ("Puts a sampled window (from Extend Video, Bridge Clips or Keyframes) back into its clip: known "
                   "latents are copied from the input, so they are bit-identical. Other latents pass through.")
    CATEGORY = MODES
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "join"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT", {"tooltip": "The sampler's output for a window."})}}

    def join(self, samples):
        window = samples.get(WINDOW_KEY)
        if window is None:
            return ({"samples": samples["samples"]},)
        joined = window.join(samples["samples"].to(window.samples.device))
        return ({"samples": _intermediate(joined)},)


class StepVideoSDEdit:
    DISPLAY_NAME = "StepVideo SDEdit (Video To Video)"
    DESCRIPTION = ("Video-to-video (or image-to-image): encodes the frames and returns their LATENT and the sampler "
                   "'denoise' that starts sampling at noise level = strength (0 returns the input, 1 ignores it). "
                   "Connect denoise to StepVideo Sampler's denoise (KSampler's denoise gives nearly the same start).")
    CATEGORY = MODES
    RETURN_TYPES = ("LATENT", "FLOAT")
    RETURN_NAMES = ("latent", "denoise")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": (VAE_TYPE,),
            "images": ("IMAGE", {"tooltip": "The clip (frames snap down to a multiple of 17) or one image. Sides "
                                            "are centre-cropped to multiples of 16 (1080 -> 1072)."}),
            "strength": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 1.0, "step": 0.01,
                                   "tooltip": "Noise level to start from: 0 keeps the input, 1 ignores it."}),
            "shift": ("FLOAT", {"default": DEFAULT_SHIFT, "min": 1.0, "max": 100.0, "step": 0.1,
                                "tooltip": "The sampler's shift (the denoise value depends on it)."}),
        }}

    def build(self, vae, images, strength, shift):
        require_finite("StepVideo SDEdit", strength=strength, shift=shift)
        frames = snap_frames(images.shape[0])
        if frames != images.shape[0]:
            log.warning("StepVideo SDEdit: %d frames snapped down to %d (multiples of 17)", images.shape[0], frames)
        latent = encode_images(vae, images[:frames])
        return ({"samples": _intermediate(latent)}, modes.sdedit_denoise(strength, shift))
