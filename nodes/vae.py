"""Video-VAE loader, decode (streamed, optionally tiled) and encode nodes.

The VAE is our own socket type: its 17 <-> 3 chunking and seam blending are not expressible with
ComfyUI's VAE object. It is wrapped in a ModelPatcher so ComfyUI's memory management can make room
for it (e.g. unload the DiT) before a decode, exactly as for its own VAEs.
"""

import logging

import torch

import comfy.model_management
import comfy.model_patcher

from ..media.frames import crop_to_multiple, images_to_video, video_to_images
from ..model_loaders.vae_loader import load_vae
from ..networks.vae_tiling import DEFAULT_OVERLAP_PX, auto_tile_px, work_bytes_per_px
from ..samplers.video_geometry import to_comfy, to_official
from ..samplers.video_geometry import snap_frames
from .host import CATEGORY, Progress, model_choices, model_path, preview_maps, video_samples
from .memory import require_ram

log = logging.getLogger(__name__)
VAE_TYPE = "STEPVIDEO_VAE"
VAE_DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TILING = ("auto", "off", "on")
DECODE_OUTPUT_COPIES = 3  # the decoded video and the two float32 copies video_to_images makes of it


class StepVideoVAE:
    """A loaded VideoVAE with the ModelPatcher that moves it between the offload and compute devices."""

    def __init__(self, vae):
        self.vae = vae
        holder = torch.nn.Module()  # ComfyUI sets bookkeeping attributes (device, ...) on the managed module
        holder.vae = vae
        self.patcher = comfy.model_patcher.ModelPatcher(holder, load_device=comfy.model_management.vae_device(),
                                                        offload_device=comfy.model_management.vae_offload_device())

    def ready(self, activation_bytes):
        """Load to the compute device, first freeing ``activation_bytes`` for the work (other models unload)."""
        comfy.model_management.load_models_gpu([self.patcher], memory_required=activation_bytes)
        return self.vae


def ready_with_tiles(handle, direction, tiling, tile_px, height, width):
    """(VAE on its compute device, its tile_px) for the node's tiling mode and a frame of height x width pixels.

    off: whole frames; on: ``tile_px``; auto: the whole frame when its work fits, else the largest tile that
    fits in what ComfyUI reports free on the VAE's device once the VAE is loaded (the host's own count, so
    the models it unloaded to make room are counted as free)."""
    per_px = work_bytes_per_px(handle.vae, direction)
    requested = None if tiling != "on" else int(tile_px)
    sides = [side if requested is None else min(requested, side) for side in (height, width)]
    vae = handle.ready(int(per_px * sides[0] * sides[1]))  # asks ComfyUI to free that much first
    if tiling != "auto":
        return vae, requested
    free = comfy.model_management.get_free_memory(vae.device)
    return vae, auto_tile_px(free, per_px, height, width, vae.config.spatial_factor)


def decode_latent(handle, samples, tiling="auto", tile_px=512, overlap_px=DEFAULT_OVERLAP_PX):
    """LATENT samples (B, C, T, h, w) -> IMAGE (B*frames, H, W, 3), streamed chunk by chunk with progress."""
    config = handle.vae.config
    height, width = samples.shape[-2] * config.spatial_factor, samples.shape[-1] * config.spatial_factor
    frames = config.decoded_frames(samples.shape[2])
    output = samples.shape[0] * frames * height * width * 3 * 4
    require_ram("StepVideo VAE Decode", f"decoding {list(samples.shape)} to {samples.shape[0]} x {frames} frames of "
                f"{width}x{height}", DECODE_OUTPUT_COPIES * output,
                "decode a smaller latent (a saved LATENT can be decoded later where there is more memory).")
    vae, tile = ready_with_tiles(handle, "decode", tiling, tile_px, height, width)
    chunks = -(-samples.shape[2] // config.latent_len)
    video = vae.decode(to_official(samples), tile_px=tile, overlap_px=overlap_px,
                       on_progress=Progress(chunks), output_device=comfy.model_management.intermediate_device())
    return video_to_images(video)


def encode_images(handle, images, tiling="auto", tile_px=512, overlap_px=DEFAULT_OVERLAP_PX, generator=None,
                  sample=False):
    """IMAGE (N, H, W, 3) -> LATENT samples (1, C, T', h, w); N snapped to a multiple of 17 (or 1), sides
    centre-cropped to multiples of the VAE's 16 (1920x1080 -> 1920x1072).

    sample=False returns the posterior mean (deterministic); True draws the official posterior sample.
    """
    config = handle.vae.config
    frames = snap_frames(images.shape[0])
    factor = config.spatial_factor
    cropped = crop_to_multiple(images[:frames], factor)
    if cropped.shape[1:3] != images.shape[1:3]:
        log.info("StepVideo VAE: frames of %dx%d centre-cropped to %dx%d (multiples of %d)", images.shape[2],
                 images.shape[1], cropped.shape[2], cropped.shape[1], factor)
    video = images_to_video(cropped)
    vae, tile = ready_with_tiles(handle, "encode", tiling, tile_px, video.shape[-2], video.shape[-1])
    chunks = -(-frames // config.frame_len)
    latent = vae.encode(video, generator=generator, sample=sample, tile_px=tile, overlap_px=overlap_px,
                        on_progress=Progress(chunks), output_device=comfy.model_management.intermediate_device())
    return to_comfy(latent).float()


class StepVideoVAELoader:
    DISPLAY_NAME = "StepVideo VAE Loader"
    DESCRIPTION = ("Loads the Step-Video Video-VAE v2 (vae/vae_v2.safetensors of an official folder in "
                   "models/stepvideo/, or a single file in models/vae/).")
    CATEGORY = CATEGORY + "/loaders"
    RETURN_TYPES = (VAE_TYPE,)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (model_choices("vae", "vae"), {"tooltip": "Official folder (its vae/vae_v2.safetensors) "
                                                                  "or a single-file Step-Video VAE."}),
            "dtype": (list(VAE_DTYPES), {"default": "auto",
                      "tooltip": "auto = bf16 on a GPU (as the official server runs it), fp32 on the CPU."}),
        }}

    def load(self, vae_name, dtype):
        path = model_path("vae", "vae", vae_name, "StepVideo VAE Loader")
        device = comfy.model_management.vae_device()
        chosen = VAE_DTYPES[dtype] or (torch.float32 if device.type == "cpu" else torch.bfloat16)
        vae = load_vae(path, dtype=chosen, device=comfy.model_management.vae_offload_device())
        preview_maps().remember(path, vae.config.decoder.z_channels)  # a DiT without a VAE beside it previews with it
        return (StepVideoVAE(vae),)


def _tiling_inputs():
    return {
        "tiling": (list(TILING), {"default": "auto",
                   "tooltip": "auto: spatial tiles only if a whole frame does not fit in free memory (sized from it). "
                              "on: always tile with tile_px. off: whole frames. Time is always streamed in the "
                              "official 17-frame chunks (exact)."}),
        "tile_px": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 16,
                            "tooltip": "Tile side in pixels when tiling is on."}),
        "overlap_px": ("INT", {"default": DEFAULT_OVERLAP_PX, "min": 0, "max": 512, "step": 16,
                               "tooltip": "Overlap of neighbouring tiles, blended with linear ramps."}),
    }


class StepVideoVAEDecode:
    DISPLAY_NAME = "StepVideo VAE Decode"
    DESCRIPTION = ("LATENT -> IMAGE frames. Decodes one official 17-frame chunk at a time (exact, with the official "
                   "seam blend) and optionally in spatial tiles, so peak memory is set by the chunk/tile, not the "
                   "video. Progress and interrupt per chunk/tile. Tip: save the LATENT first (SaveLatent) so a "
                   "failed decode never costs the sampling run.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": (VAE_TYPE,), "samples": ("LATENT",), **_tiling_inputs()}}

    def decode(self, vae, samples, tiling, tile_px, overlap_px):
        return (decode_latent(vae, video_samples(samples, "StepVideo VAE Decode (samples)"), tiling, tile_px,
                              overlap_px),)


class StepVideoVAEEncode:
    DISPLAY_NAME = "StepVideo VAE Encode"
    DESCRIPTION = ("IMAGE frames -> LATENT (17 frames -> 3 latent frames; one image -> 1 latent frame). Frames snap "
                   "down to a multiple of 17; width and height are centre-cropped to multiples of 16 (1920x1080 -> "
                   "1920x1072), losing at most 15 pixels.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": (VAE_TYPE,), "images": ("IMAGE",), **_tiling_inputs(),
            "sample_posterior": ("BOOLEAN", {"default": False,
                                 "tooltip": "off: the posterior mean (deterministic). on: a random posterior sample "
                                            "like the official encode, drawn with seed."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
        }}

    def encode(self, vae, images, tiling, tile_px, overlap_px, sample_posterior, seed):
        generator = torch.Generator().manual_seed(seed) if sample_posterior else None
        return ({"samples": encode_images(vae, images, tiling, tile_px, overlap_px, generator, sample_posterior)},)
