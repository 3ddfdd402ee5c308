"""The official flow-matching schedule and the one conversion to ComfyUI's sigma convention.

Official convention (``FlowMatchDiscreteScheduler``, reverse=False): t = 0 is pure noise, t = 1 is
clean data, x_t = t * data + (1 - t) * noise, and the DiT predicts v = data - noise. With
s = linspace(1, 0, N + 1) and the SD3 time shift s' = shift * s / (1 + (shift - 1) * s), the
timesteps are t_i = 1 - s'_i.

ComfyUI convention (flow/CONST): sigma = noise level, x = (1 - sigma) * data + sigma * noise, the
model returns (noise - data). Hence sigma = 1 - t = s' and v_comfy = -v_official. The functions
``timestep_from_sigma`` and ``comfy_velocity`` below are the only place this conversion is written.
"""

import torch

DEFAULT_SHIFT = 13.0


def shifted(s, shift):
    """SD3 time shift: shift * s / (1 + (shift - 1) * s), elementwise (float32 in, float32 out)."""
    return shift * s / (1 + (shift - 1) * s)


def unshifted(sigma, shift):
    """The inverse of ``shifted``: the unshifted time s whose shifted noise level equals ``sigma``."""
    return sigma / (shift - (shift - 1) * sigma)


def official_timesteps(steps, shift=DEFAULT_SHIFT):
    """The official scheduler's (timesteps (N,), sigmas (N+1,)): increasing from 0 (noise) to 1 (data)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    sigmas = 1 - shifted(torch.linspace(1, 0, steps + 1, dtype=torch.float32), shift)
    return sigmas[:-1], sigmas


def noise_levels(steps, shift=DEFAULT_SHIFT):
    """The same schedule as ComfyUI sigmas: (N+1,) noise levels decreasing from 1 to 0."""
    return partial_noise_levels(steps, shift, 1.0)


def partial_noise_levels(steps, shift=DEFAULT_SHIFT, denoise=1.0):
    """Noise levels for a run that starts part-way (SDEdit / img2img): ``steps`` Euler steps over the
    shifted schedule from unshifted time s = ``denoise`` down to 0, i.e. shifted(linspace(denoise, 0, N+1)).

    denoise = 1 is the official full schedule; denoise <= 0 gives an empty schedule (nothing to do).
    ComfyUI's KSampler approximates the same start by running the last ``steps`` of
    int(steps / denoise) steps, so the two agree exactly when steps / denoise is an integer.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if denoise <= 0:
        return torch.zeros(0)
    start = min(float(denoise), 1.0)
    return shifted(torch.linspace(start, 0, steps + 1, dtype=torch.float32), shift)


def timestep_from_sigma(sigma):
    """Official DiT timestep t (0 = noise) for a ComfyUI noise level sigma."""
    return 1 - sigma


def comfy_velocity(official_velocity):
    """ComfyUI's flow target (noise - data) from the official DiT output (data - noise)."""
    return -official_velocity
