"""Step-Video text conditioning as a ComfyUI CONDITIONING, and back to the DiT's text inputs (pure torch).

One CONDITIONING entry (what StepVideo Text Encode outputs):

    [llm_states (B, L, D_llm), {"pooled_output": clip_states (B, 77, D_clip), "llm_mask": (B, L) 0/1}]

Step-LLM states are the main tensor, with the rows of padding tokens set to zero (the DiT masks them
anyway, so this changes no result); HunyuanCLIP's states ride as ``pooled_output``, the slot the host
keeps for a second text encoder. Laid out this way, the host's conditioning nodes mean something
definite for our two encoders:

A Step-LLM token counts when the mask says so and its row is not zero (padding rows are zero), so:

* ConditioningZeroOut: no text: both encoders' states become zero (the host zeroes the main tensor
  and the pooled output), no Step-LLM token counts, and the DiT attends to the zeroed CLIP states
  alone, whatever the prompt's length was.
* ConditioningConcat(to, from): the Step-LLM tokens of ``from`` are appended to those of ``to`` and
  the DiT attends to both prompts' valid tokens; the CLIP states are those of ``to``. The host keeps
  only ``to``'s mask; the appended tokens count by their rows.
* ConditioningCombine: each entry is sampled and the predictions averaged (the host's own rule).
* ConditioningSetTimestepRange: the entry applies in its part of the schedule only (the host's own rule).
* ConditioningAverage: Step-LLM and CLIP states are averaged (the host's own rule; ``to``'s mask).
"""

import torch

CLIP_KEY = "pooled_output"
LLM_MASK_KEY = "llm_mask"
CLIP_TOKENS = 77


def to_conditioning(embeddings):
    """TextEmbeddings (batch 1) -> CONDITIONING with the layout in the module docstring."""
    clip_tokens = embeddings.clip_states.shape[1]
    llm_mask = embeddings.mask[:, clip_tokens:].to(torch.float32)
    llm_states = embeddings.llm_states * llm_mask[..., None].to(embeddings.llm_states.dtype)
    return [[llm_states, {CLIP_KEY: embeddings.clip_states, LLM_MASK_KEY: llm_mask}]]


def check_text_conditioning(llm_states, clip_states, llm_mask, llm_width, clip_width):
    """Raise ValueError naming what is wrong when a conditioning is not Step-Video text conditioning.

    llm_states (B, L, D) the CONDITIONING tensor; clip_states / llm_mask its pooled_output / llm_mask
    (None when absent); llm_width / clip_width what the loaded DiT expects (clip_width None: no CLIP).
    """
    found = f"found text states of shape {list(llm_states.shape)}"
    if clip_states is not None:
        found += f" and a pooled output of shape {list(clip_states.shape)}"
    expected = (f"Step-Video conditioning (from StepVideo Text Encode): Step-LLM states (1, L, {llm_width})"
                + (f" and HunyuanCLIP states (1, {CLIP_TOKENS}, {clip_width})" if clip_width else ""))
    if llm_states.ndim != 3 or llm_states.shape[-1] != llm_width:
        raise ValueError(f"This CONDITIONING comes from another model's text encoder: the Step-Video DiT needs "
                         f"{expected}; {found}.")
    if clip_width and (clip_states is None or clip_states.ndim != 3 or clip_states.shape[-1] != clip_width):
        raise ValueError(f"This CONDITIONING lacks the HunyuanCLIP states the Step-Video DiT needs: expected "
                         f"{expected}; {found}.")
    if llm_mask is None or llm_mask.shape[-1] > llm_states.shape[1]:
        raise ValueError(f"This CONDITIONING has no Step-LLM token mask matching its states ({found}); encode the "
                         f"prompt with StepVideo Text Encode.")


def dit_text_inputs(llm_states, clip_states, llm_mask):
    """The DiT's (encoder_hidden_states, encoder_hidden_states_2, encoder_attention_mask) of a conditioning.

    llm_states (B, L, D_llm); clip_states (B, Lc, D_clip) or None; llm_mask (B, L0) with L0 <= L (the
    tokens past L0 were appended by ConditioningConcat). A token counts where the mask (1 past L0) says
    so and its row is not zero. Returns the states unchanged and the mask (B, Lc + L) float, CLIP
    positions 1; without CLIP states the first token always counts, so there is something to attend to.
    """
    nonzero = llm_states.abs().amax(dim=-1) > 0
    mask = torch.ones(nonzero.shape, device=nonzero.device)
    mask[:, :llm_mask.shape[1]] = llm_mask.to(mask)
    mask = mask * nonzero
    if clip_states is None:
        mask[:, 0] = 1
    else:
        mask = torch.cat([torch.ones(mask.shape[0], clip_states.shape[1], device=mask.device), mask], dim=1)
    return llm_states, clip_states, mask
