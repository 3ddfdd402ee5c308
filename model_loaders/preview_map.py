"""A linear latent -> RGB map for live previews, fitted to a Video-VAE's own encoder (pure torch).

A host previews a latent by mapping each latent cell's channels to one colour with a fixed linear
map (ComfyUI's ``latent_rgb_factors``: (C, 3) and a bias (3,), output in -1..1). Step-Video has no
published map, and the released VAE and the embedded small model's VAE need different ones, so the
map is fitted to whichever VAE is in use: synthetic clips of smooth colour fields are encoded, and
each latent cell's posterior mean is regressed (least squares with a small ridge) onto the mean
colour of the pixels it encodes. Fitting costs one encode of a few small clips; :class:`PreviewMaps`
caches each fit on disk by VAE file identity, so it happens once per file.
"""

import hashlib
import json
import logging
import os
import tempfile

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

FIT_CLIPS = 6
FIT_CELLS = 8  # latent cells per side of each fitting clip
RIDGE = 1e-3
FORMAT_VERSION = 1


def colour_fields(count, height, width, seed=0):
    """``count`` smooth random colour images (count, 3, height, width) in -1..1 (coarse noise, upsampled)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 3, 3, generator=generator) * 2 - 1
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True).clamp(-1, 1)


def fit_preview_map(vae, clips=FIT_CLIPS, cells=FIT_CELLS, seed=0):
    """{"factors": (C, 3) list, "bias": (3,) list} mapping the VAE's latent means to mean colours in -1..1.

    vae: a networks.vae.VideoVAE. Each clip holds one colour field for a whole chunk of frames, so every
    latent frame of it is paired with that field's mean colour over each cell's pixels.
    """
    factor = vae.config.spatial_factor
    images = colour_fields(clips, cells * factor, cells * factor, seed)
    video = images[:, None].expand(-1, vae.config.frame_len, -1, -1, -1)
    with torch.no_grad():
        latents = vae.encode(video.to(vae.device, vae.dtype), sample=False).float().cpu()  # (B, T', C, h, w)
    colours = F.avg_pool2d(images, factor)  # (B, 3, h, w)
    features = latents.permute(0, 1, 3, 4, 2).flatten(0, 3)  # (B*T'*h*w, C)
    targets = colours[:, None].expand(-1, latents.shape[1], -1, -1, -1).permute(0, 1, 3, 4, 2).flatten(0, 3)
    design = torch.cat([features, torch.ones(features.shape[0], 1)], dim=1).double()
    gram = design.T @ design + RIDGE * torch.eye(design.shape[1], dtype=torch.float64)
    solution = torch.linalg.solve(gram, design.T @ targets.double())  # (C + 1, 3)
    return {"factors": solution[:-1].float().tolist(), "bias": solution[-1].float().tolist()}


def file_identity(path):
    """[absolute path, size, mtime_ns]: changes when the file is replaced."""
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


class PreviewMaps:
    """Preview maps fitted once per VAE file, kept as JSON files in ``cache_dir``.

    The VAE a graph decodes with is the right one to preview with, but a sampler may run before the
    VAE loader does; so every VAE file a loader opens is remembered as the latest one for its latent
    channel count, and a DiT without a VAE beside it previews with that.
    """

    def __init__(self, cache_dir):
        self.cache_dir = cache_dir

    def _path(self, name):
        return os.path.join(self.cache_dir, name)

    def _write(self, name, data):
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, self._path(name))
        except OSError as e:
            log.warning("Step-Video: cannot write the preview map cache %s: %s", self.cache_dir, e)

    def _read(self, name):
        try:
            with open(self._path(name), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def remember(self, vae_path, channels):
        """Record ``vae_path`` as the latest VAE file for ``channels`` latent channels."""
        self._write(f"latest-{channels}.json", {"path": os.path.abspath(vae_path)})

    def latest(self, channels):
        """The VAE file last remembered for ``channels`` (None if none, or gone)."""
        entry = self._read(f"latest-{channels}.json")
        return entry["path"] if entry and os.path.isfile(entry.get("path", "")) else None

    def for_vae(self, vae_path, load_vae):
        """The map fitted to the VAE at ``vae_path`` (``load_vae(path)`` -> VideoVAE, called only on a miss)."""
        identity = file_identity(vae_path)
        name = hashlib.sha256(json.dumps([FORMAT_VERSION, identity]).encode()).hexdigest()[:32] + ".json"
        cached = self._read(name)
        if cached and cached.get("identity") == identity:
            return cached["map"]
        log.info("Step-Video: fitting the live-preview colours to %s (once per VAE file)", vae_path)
        fitted = fit_preview_map(load_vae(vae_path))
        self._write(name, {"identity": identity, "map": fitted})
        return fitted
