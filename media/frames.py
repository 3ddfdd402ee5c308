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
    """Resize (bilinear, antialiased) so the frames cover width x height, then centre-crop to it.

    images (N, H, W, 3) -> (N, height, width, 3); the official TI2V image preparation.
    """
    _, h, w, _ = images.shape
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    x = images.permute(0, 3, 1, 2).float()
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return x[:, :, top:top + height, left:left + width].permute(0, 2, 3, 1).clamp(0, 1)

