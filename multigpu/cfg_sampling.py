"""The official Euler + CFG loop over a DiT forward that takes the [cond; uncond] batch in one call.

With ``parallel_forward`` and a CFG degree of 2 the two rows run on different ranks (CFG parallelism);
with any forward (a plain DiT) it is the official pipeline loop.
"""

import torch

from ..samplers.flow_euler import cfg_combine, sample_flow_euler
from ..samplers.flow_schedule import comfy_velocity, noise_levels, timestep_from_sigma


def sample_cfg(forward, noise, text, steps, shift, guidance, callback=None):
    """Latents (1, F, C, H, W) from ``noise`` (official layout) in ``steps`` Euler steps.

    forward(hidden_states=, timestep=, **text) -> official velocity (2, F, C, H, W); text: the DiT's text
    inputs with rows [cond, uncond] (encoder_hidden_states, encoder_hidden_states_2, encoder_attention_mask).
    callback(step, x, denoised) as in samplers.flow_euler. Runs in float32 (the fixture's 'sample' op).
    """
    def velocity(x, sigma):
        t = torch.full((2,), timestep_from_sigma(sigma), dtype=torch.float32)
        cond, uncond = forward(hidden_states=torch.cat([x, x]), timestep=t, **text).float().chunk(2)
        return comfy_velocity(cfg_combine(cond, uncond, guidance))

    return sample_flow_euler(velocity, noise, noise_levels(steps, shift), callback=callback)
