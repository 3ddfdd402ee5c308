"""Frame and size rules of the Step-Video latent grid (the official pipeline's snapping), and its layouts.

The Video-VAE maps every 17 pixel frames to 3 latent frames independently (a single image to 1
latent frame) and 16x16 pixels to one latent position. The official pipeline snaps requests down
to that grid: frames -> max(frames // 17 * 17, 1), height/width -> max(x // 16 * 16, 16).
"""

FRAMES_PER_CHUNK = 17
LATENTS_PER_CHUNK = 3
SPATIAL = 16


def snap_frames(frames):
    """Pixel frames the model can produce for a request: a multiple of 17, or 1 (an image)."""
    return max(int(frames) // FRAMES_PER_CHUNK * FRAMES_PER_CHUNK, 1)


def snap_size(pixels):
    """Height or width snapped down to a multiple of 16 (at least 16)."""
    return max(int(pixels) // SPATIAL * SPATIAL, SPATIAL)


def latent_frames(frames):
    """Latent frames of ``frames`` pixel frames (after snapping): 17 -> 3, 204 -> 36, 1 -> 1."""
    return max(int(frames) // FRAMES_PER_CHUNK * LATENTS_PER_CHUNK, 1)


def frames_within(latents):
    """The inverse of ``latent_frames``: the most requestable pixel frames (a multiple of 17, or 1) whose
    latent has at most ``latents`` frames; 0 when not even one latent frame is allowed."""
    if latents >= LATENTS_PER_CHUNK:
        return int(latents) // LATENTS_PER_CHUNK * FRAMES_PER_CHUNK
    return 1 if latents >= 1 else 0


def pixel_frames(latents):
    """Pixel frames decoded from ``latents`` latent frames: 17 per whole 3-latent chunk; a last chunk of
    t < 3 latents decodes to 8t - 7 frames (the decoder's causal 8x upsampling), e.g. 1 -> 1."""
    whole, rest = divmod(int(latents), LATENTS_PER_CHUNK)
    return whole * FRAMES_PER_CHUNK + (8 * rest - 7 if rest else 0)


def to_official(latent):
    """ComfyUI's latent layout (B, C, T, h, w) -> the official networks' (B, T, C, h, w)."""
    return latent.movedim(1, 2)


def to_comfy(latent):
    """The official networks' latent layout (B, T, C, h, w) -> ComfyUI's (B, C, T, h, w)."""
    return latent.movedim(2, 1)


def snapping_note():
    return ("Frames snap down to a multiple of 17 (each 17 frames become 3 latent frames; 1 frame = an image); "
            "width and height snap down to multiples of 16.")
