"""Conversions between ComfyUI IMAGE batches and the Video-VAE's video tensors (pure torch).

IMAGE: (frames, H, W, 3) float in 0..1 (ComfyUI). VAE video: (1, frames, 3, H, W) in -1..1 (official).
"""

import torch
import torch.nn.functional as F


def images_to_video(images):
    """IMAGE (N, H, W, 3) 0..1 -> (1, N, 3, H, W) in -1..1 (float32)."""
    if images.ndim != 4 or images.shape[-1] < 3:
        raise ValueError(f"expected IMAGE frames (N, H, W, 3), got shape {tuple(images.shape)}")
    return (images[..., :3].float().permute(0, 3, 1, 2)[None] * 2 - 1)


def video_to_images(video):
    """(B, N, 3, H, W) in -1..1 -> IMAGE (B*N, H, W, 3) 0..1, clamped (official post-processing range)."""
    return ((video.float().clamp(-1, 1) + 1) / 2).flatten(0, 1).permute(0, 2, 3, 1).contiguous()


def cover_and_crop(images, width, height):
    """Centre-crop to the aspect ratio of width x height, then resize (bilinear, antialiased) to it.

    images (N, H, W, 3) -> (N, height, width, 3); the official TI2V image preparation (resize to cover,
    centre-crop) with the crop taken first, so the cost is bounded by the input and the output, never by
    an upscaled intermediate (an 8000x2 image into 256x256 crops 2x2 pixels, then resizes).
    """
    _, h, w, _ = images.shape
    scale = max(height / h, width / w)
    crop_h, crop_w = min(h, max(1, round(height / scale))), min(w, max(1, round(width / scale)))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    x = images[:, top:top + crop_h, left:left + crop_w].permute(0, 3, 1, 2).float()
    if (crop_h, crop_w) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.permute(0, 2, 3, 1).clamp(0, 1)


def crop_to_multiple(images, multiple=16):
    """Centre-crop (N, H, W, C) frames so both sides are multiples of ``multiple`` (at most multiple - 1
    pixels off each side pair; 1920x1080 -> 1920x1072). ValueError when a side is shorter than ``multiple``."""
    _, h, w, _ = images.shape
    if h < multiple or w < multiple:
        raise ValueError(f"frames of {w}x{h} pixels are too small: both sides must be at least {multiple}.")
    new_h, new_w = h - h % multiple, w - w % multiple
    top, left = (h - new_h) // 2, (w - new_w) // 2
    return images[:, top:top + new_h, left:left + new_w]
