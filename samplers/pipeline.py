"""Text-to-latent sampling with our DiT outside ComfyUI (parity checks, training evaluation, tests).

Latents use ComfyUI's layout (B, C, T, h, w) like the modes in ``samplers.modes``; the DiT and the
VAE use the official (B, T, C, h, w), converted here. Noise is ``torch.randn`` from a CPU generator
seeded with ``seed``, the same noise ComfyUI's samplers draw for a batch.
"""

import torch

from .flow_euler import cfg_combine, guidance_at, sample_flow_euler
from .flow_schedule import DEFAULT_SHIFT, comfy_velocity, partial_noise_levels, timestep_from_sigma


def to_official(latent):
    """(B, C, T, h, w) -> (B, T, C, h, w)."""
    return latent.movedim(1, 2)


def to_comfy(latent):
    """(B, T, C, h, w) -> (B, C, T, h, w)."""
    return latent.movedim(2, 1)


def dit_velocity(dit, cond, uncond=None, guidance=1.0, condition=None, motion_score=5.0, dtype=None,
                 cfg_stop_sigma=0.0):
    """velocity(x, sigma) for ``sample_flow_euler``: the DiT on [cond, uncond] with CFG, ComfyUI convention.

    cond/uncond: TextEmbeddings (batch 1 or the latent batch). condition: TI2V image-condition latents
    (B, C, T, h, w) or None. dtype: compute dtype (default: the dtype of the DiT's modulation table, which
    the loaders keep in the compute dtype whatever the matmul weights are stored as: fp8, quantized).
    cfg_stop_sigma: no guidance (the prompt pass alone) below this noise level (``flow_euler.guidance_at``).
    """
    dtype = dtype or dit.scale_shift_table.dtype

    def text_batch(batch, use_cfg):
        parts = [cond, uncond] if use_cfg else [cond]
        tensors = {}
        for key in ("encoder_hidden_states", "encoder_hidden_states_2", "encoder_attention_mask"):
            pieces = [p.dit_inputs()[key].expand(batch, *p.dit_inputs()[key].shape[1:]) for p in parts]
            tensors[key] = torch.cat(pieces).to(dtype)
        return tensors

    def velocity(x, sigma):
        scale = guidance_at(sigma, guidance, cfg_stop_sigma)
        use_cfg = uncond is not None and scale != 1.0
        batch = x.shape[0]
        copies = 2 if use_cfg else 1
        latents = to_official(x).repeat(copies, 1, 1, 1, 1).to(dtype)
        t = torch.full((batch * copies,), timestep_from_sigma(sigma))
        extra = {}
        if condition is not None:
            extra = {"condition_hidden_states": to_official(condition).repeat(copies, 1, 1, 1, 1).to(dtype),
                     "motion_score": motion_score}
        with torch.no_grad():
            v = dit(latents, t, **text_batch(batch, use_cfg), **extra).float()
        if use_cfg:
            v = cfg_combine(*v.chunk(2), scale)
        return comfy_velocity(to_comfy(v))

    return velocity


def sample(dit, cond, uncond, latent, seed=0, steps=30, guidance=9.0, shift=DEFAULT_SHIFT, denoise=1.0, mask=None,
           condition=None, motion_score=5.0, callback=None, step_mask=None, cfg_stop_sigma=0.0):
    """Sample a (B, C, T, h, w) latent with the official Euler loop; ``latent`` is the start (zeros for T2V).

    ``mask``/``step_mask``: known frames (``flow_euler.sample_flow_euler``), given clean when the DiT's
    checkpoint says it was trained so (``dit.clean_known``). ``cfg_stop_sigma``: guidance only at noise
    levels >= this (``flow_euler.guidance_at``; 0 = every step)."""
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    velocity = dit_velocity(dit, cond, uncond, guidance, condition, motion_score, cfg_stop_sigma=cfg_stop_sigma)
    return sample_flow_euler(velocity, noise, partial_noise_levels(steps, shift, denoise), latent=latent, mask=mask,
                             callback=callback, step_mask=step_mask, clean_known=dit.clean_known)
