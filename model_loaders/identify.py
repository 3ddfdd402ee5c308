"""Recognise which Step-Video part a set of weight keys belongs to, for clear wrong-slot errors."""

from .errors import examples

# kind -> (a key only that part has, how we name it to users)
SIGNATURES = {
    "dit": ("transformer_blocks.0.attn1.wqkv.weight", "a Step-Video DiT (transformer/) checkpoint"),
    "vae": ("decoder.conv_in.conv.weight", "a Step-Video Video-VAE (vae/vae_v2.safetensors) checkpoint"),
    "step_llm": ("tok_embeddings.word_embeddings.weight", "a Step-LLM text encoder (step_llm/) checkpoint"),
    "hunyuan_clip": ("bert.embeddings.word_embeddings.weight",
                     "a HunyuanCLIP text encoder (hunyuan_clip/clip_text_encoder/) checkpoint"),
}

# prefixes under which single-file conversions commonly nest a model
KNOWN_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "vae.", "first_stage_model.")


def find_prefix(keys, signature):
    """The prefix p such that ``p + signature`` is a key ('' if the signature is at the top level, None if absent)."""
    for key in keys:
        if key.endswith(signature):
            return key[: len(key) - len(signature)]
    return None


def identify(keys):
    """The kind of model the keys belong to ('dit', 'vae', 'step_llm', 'hunyuan_clip') or None."""
    keys = list(keys)
    for kind, (signature, _) in SIGNATURES.items():
        if find_prefix(keys, signature) is not None:
            return kind
    if find_prefix(keys, "embeddings.word_embeddings.weight") is not None:
        return "hunyuan_clip"
    return None


def describe(keys):
    """Human words for what a set of keys looks like ('a Step-Video VAE ...' or a sample of the keys)."""
    keys = list(keys)
    kind = identify(keys)
    if kind is not None:
        return SIGNATURES[kind][1]
    if not keys:
        return "an empty file (no tensors at all)"
    roots = sorted({k.split(".")[0] + "." for k in keys})
    return f"an unrecognised checkpoint ({len(keys)} tensors under {examples(roots)})"
