"""The official Euler flow-matching loop, with CFG and known-region (noise_mask) handling.

Everything here is in ComfyUI's convention (sigma = noise level, velocity = noise - data); see
``flow_schedule`` for the mapping to the official one. The loop is the official scheduler's step
x <- x + v * (sigma_next - sigma) in float32, so with the official schedule and a velocity that
wraps the DiT it reproduces the official pipeline.
"""

import torch


def cfg_combine(cond, uncond, guidance):
    """Classifier-free guidance: uncond + guidance * (cond - uncond) (official order and formula)."""
    return uncond + guidance * (cond - uncond)


def guidance_at(sigma, guidance, stop_sigma=0.0):
    """The CFG scale at noise level ``sigma``: ``guidance`` while sigma >= ``stop_sigma``, 1 below it.

    A scale of 1 is the prompt pass alone (no unconditional pass), so the steps below ``stop_sigma``
    cost half. ``stop_sigma`` 0 guides every step, as the official pipeline does. The layout is
    decided at the high noise levels, the detail at the low ones, where guidance sharpens shapes but
    also adds contrast and grain (README, "Guidance interval").
    """
    return guidance if sigma >= stop_sigma else 1.0


def start_latent(noise, sigma, latent=None):
    """The sample at noise level ``sigma``: sigma * noise + (1 - sigma) * latent (latent None -> zeros)."""
    if latent is None:
        return sigma * noise
    return sigma * noise + (1 - sigma) * latent


def sample_flow_euler(velocity, noise, sigmas, latent=None, mask=None, callback=None, clean_known=False):
    """Integrate from ``sigmas[0]`` to ``sigmas[-1]`` with Euler steps.

    Args:
        velocity: f(x, sigma) -> (noise - data) estimate, same shape as x; sigma a float.
        noise: initial noise, any shape; the loop runs in float32.
        sigmas: (N+1,) decreasing noise levels (``flow_schedule.noise_levels``/``partial_noise_levels``).
        latent: the clean latent to start from (SDEdit/img2img) and to keep where ``mask`` is 0.
        mask: optional, broadcastable to x; 1 = generate, 0 = known (ComfyUI ``noise_mask``
            convention). Known positions are re-noised to the current level before every model call
            and are exactly ``latent`` in the result.
        callback: f(step, x, denoised) after each step, for progress/preview/interrupt.
        clean_known: give the model the known positions clean (``latent`` itself) at every step instead
            of re-noised, for DiTs trained that way (their checkpoints say so in the safetensors metadata
            ``model_loaders.dit_loader.KNOWN_LATENTS_KEY``; the released weights do not).

    Returns the float32 sample at ``sigmas[-1]``.
    """
    noise = noise.float()
    latent = None if latent is None else latent.float()
    if mask is not None:
        if latent is None:
            raise ValueError("a mask needs the latent whose masked-out part is kept")
        mask = mask.float()
    sigmas = [float(s) for s in sigmas]
    if len(sigmas) < 2:
        return latent.clone() if latent is not None else noise.clone()
    x = start_latent(noise, sigmas[0], latent)
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        if mask is not None:
            x = mask * x + (1 - mask) * (latent if clean_known else start_latent(noise, sigma, latent))
        v = velocity(x, sigma).float()
        if callback is not None:
            callback(i, x, x - sigma * v)
        x = x + v * (sigma_next - sigma)
    if mask is not None:
        final = latent if sigmas[-1] == 0 else start_latent(noise, sigmas[-1], latent)
        x = mask * x + (1 - mask) * final  # exact copy of ``final`` where mask == 0
    return x
