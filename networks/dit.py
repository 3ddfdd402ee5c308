"""The Step-Video DiT (official ``StepVideoModel``), T2V and TI2V, in plain PyTorch.

Conventions (official): latents are (B, F, C, H, W); timestep t in [0, 1) with t = 0 pure noise and
t = 1 clean data (multiplied by 1000 inside); the output is the velocity (data - noise) in the
latent layout. Module and parameter names equal the official state-dict keys, including the
head-major fused ``attn1.wqkv`` (per head [q; k; v]) and ``attn2.wkv`` (per head [k; v]) rows.

Structure per block (AdaLN-single): modulated LayerNorm -> self-attention (per-head RMS QK-norm,
3-D RoPE) gated; un-gated, un-normalised cross-attention over [CLIP ; LLM] context; modulated
LayerNorm -> GELU(tanh) MLP gated. All Linear/Conv/LayerNorm layers come from ``operations``.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .norms import RMSNorm, sinusoidal_embedding
from .ops import DEFAULT_OPERATIONS, cast_to
from .rope3d import apply_rope, rope_grid, rope_tables

TIMESTEP_SCALE = 1000.0
DEFAULT_MOTION_SCORE = 5.0  # the official TI2V default (image-to-video strength of motion)
SEQUENCE_PARALLEL = "stepvideo_sequence_parallel"  # transformer_options key: see SelfAttention.forward
SINUSOID_CHANNELS = 256


@dataclass(frozen=True)
class DiTConfig:
    """Sizes of a Step-Video DiT; the released model is the default (29.3 B parameters)."""

    num_heads: int = 48
    head_dim: int = 128
    in_channels: int = 64
    out_channels: int = 64
    num_layers: int = 48
    caption_channels: tuple = (6144, 1024)  # (Step-LLM width, CLIP width); one entry = no CLIP branch
    ff_inner_dim: int = 4 * 6144
    patch_size: int = 1
    image_condition: bool = False  # TI2V: image latents concatenated on channels + motion-score embedder

    @property
    def hidden_size(self):
        return self.num_heads * self.head_dim

    @property
    def variant(self):
        return "ti2v" if self.image_condition else "t2v"


class TimestepEmbedder(nn.Module):
    """Linear(256 -> D) -> SiLU -> Linear(D -> D) over a sinusoidal embedding."""

    def __init__(self, dim, operations, device=None, dtype=None):
        super().__init__()
        self.linear_1 = operations.Linear(SINUSOID_CHANNELS, dim, device=device, dtype=dtype)
        self.linear_2 = operations.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, values, dtype):
        """values (N,) -> (N, D) in ``dtype``."""
        return self.linear_2(F.silu(self.linear_1(sinusoidal_embedding(values, SINUSOID_CHANNELS).to(dtype))))


class AdaLNSingle(nn.Module):
    """Timestep (and TI2V motion-score) embedding e, and the shared block modulation Linear(SiLU(e))."""

    def __init__(self, dim, motion_score, operations, device=None, dtype=None):
        super().__init__()
        self.emb = nn.Module()
        self.emb.timestep_embedder = TimestepEmbedder(dim, operations, device, dtype)
        if motion_score:
            self.emb.motion_score_embedder = TimestepEmbedder(dim, operations, device, dtype)
        self.linear = operations.Linear(dim, 6 * dim, device=device, dtype=dtype)

    def forward(self, timestep, motion_score, dtype):
        """timestep (B,) -> (block modulation (B, 6D), embedding e (B, D))."""
        e = self.emb.timestep_embedder(timestep * TIMESTEP_SCALE, dtype)
        if hasattr(self.emb, "motion_score_embedder"):
            e = e + self.emb.motion_score_embedder(motion_score, dtype)
        return self.linear(F.silu(e)), e


class TextProjection(nn.Module):
    """Linear -> GELU(tanh) -> Linear (official PixArtAlphaTextProjection)."""

    def __init__(self, in_features, dim, operations, device=None, dtype=None):
        super().__init__()
        self.linear_1 = operations.Linear(in_features, dim, device=device, dtype=dtype)
        self.linear_2 = operations.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels, dim, patch_size, operations, device=None, dtype=None):
        super().__init__()
        self.proj = operations.Conv2d(in_channels, dim, patch_size, stride=patch_size, device=device, dtype=dtype)

    def forward(self, frames):
        """frames (N, C, H, W) -> tokens (N, H/p * W/p, D)."""
        return self.proj(frames).flatten(2).transpose(1, 2)


class SelfAttention(nn.Module):
    def __init__(self, dim, head_dim, operations, device=None, dtype=None):
        super().__init__()
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.wqkv = operations.Linear(dim, 3 * dim, bias=False, device=device, dtype=dtype)
        self.wo = operations.Linear(dim, dim, bias=False, device=device, dtype=dtype)
        self.q_norm = RMSNorm(head_dim, device=device, dtype=dtype)
        self.k_norm = RMSNorm(head_dim, device=device, dtype=dtype)

    def _qkv(self, h, rope_cos, rope_sin):
        """h (B, l, D) -> normalised, rotated q, k and v, each (B, l, heads, head_dim)."""
        qkv = self.wqkv(h).unflatten(-1, (self.heads, 3 * self.head_dim))  # head-major [q; k; v]
        q, k, v = qkv.split(self.head_dim, dim=-1)
        return apply_rope(self.q_norm(q), rope_cos, rope_sin), apply_rope(self.k_norm(k), rope_cos, rope_sin), v

    def forward(self, x, prepare, rope_cos, rope_sin, backend, chunk_tokens=None, options=None):
        """Self-attention of ``prepare(x)`` (the modulated norm, applied per token): x (B, L, D) -> (B, L, D).

        Chunked: q, k, v are filled slice by slice (the full modulated input and the fused qkv never
        exist at once), then each query slice attends to all keys and its output overwrites the
        query storage it came from. ``options``: the host's per-call options, for the attention backend;
        under ``options[SEQUENCE_PARALLEL]`` a sequence-parallel exchange ``parallel(q, k, v, attend)``
        (x holds this rank's tokens; see multigpu/sequence_parallel.py) wraps the attention.
        """
        parallel = options.get(SEQUENCE_PARALLEL) if options else None
        slices = token_slices(x.shape[1], chunk_tokens)
        if len(slices) == 1 and parallel is None:
            q, k, v = self._qkv(prepare(x), rope_cos, rope_sin)
            return self.wo(attention(q, k, v, backend=backend, options=options).flatten(-2))
        q, k, v = (x.new_empty(x.shape[:2] + (self.heads, self.head_dim)) for _ in range(3))
        for s in slices:
            q[:, s], k[:, s], v[:, s] = self._qkv(prepare(x[:, s]), rope_cos[s], rope_sin[s])
        if parallel is not None:  # this rank's tokens; the sequence is split over ranks (multigpu/)
            out = parallel(q, k, v, lambda q, k, v: map_token_slices(
                lambda qs: attention(qs, k, v, backend=backend, options=options), q, chunk_tokens))
            return map_token_slices(lambda o: self.wo(o.flatten(-2)), out, chunk_tokens)
        out = q.view(x.shape)
        for s in slices:
            out[:, s] = self.wo(attention(q[:, s], k, v, backend=backend, options=options).flatten(-2))
        return out


class CrossAttention(nn.Module):
    def __init__(self, dim, head_dim, operations, device=None, dtype=None):
        super().__init__()
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.wq = operations.Linear(dim, dim, bias=False, device=device, dtype=dtype)
        self.wkv = operations.Linear(dim, 2 * dim, bias=False, device=device, dtype=dtype)
        self.wo = operations.Linear(dim, dim, bias=False, device=device, dtype=dtype)
        self.q_norm = RMSNorm(head_dim, device=device, dtype=dtype)
        self.k_norm = RMSNorm(head_dim, device=device, dtype=dtype)

    def forward(self, x, context, mask, chunk_tokens=None, backend="sdpa", options=None):
        """x (B, L, D), context (B, Lc, D), mask bool (B, 1, 1, Lc) -> (B, L, D)."""
        kv = self.wkv(context).unflatten(-1, (self.heads, 2 * self.head_dim))  # head-major [k; v]
        k, v = kv.split(self.head_dim, dim=-1)
        k = self.k_norm(k)

        def attend(xc):
            q = self.q_norm(self.wq(xc).unflatten(-1, (self.heads, self.head_dim)))
            return self.wo(attention(q, k, v, mask=mask, backend=backend, options=options).flatten(-2))

        return map_token_slices(attend, x, chunk_tokens)


class FeedForward(nn.Module):
    """``net.0.proj`` Linear(D -> inner) -> GELU(tanh) -> ``net.2`` Linear(inner -> D), no biases."""

    def __init__(self, dim, inner_dim, operations, device=None, dtype=None):
        super().__init__()
        gelu_proj = nn.Module()
        gelu_proj.proj = operations.Linear(dim, inner_dim, bias=False, device=device, dtype=dtype)
        self.net = nn.ModuleList([gelu_proj, nn.Identity(),
                                  operations.Linear(inner_dim, dim, bias=False, device=device, dtype=dtype)])

    def forward(self, x, prepare, chunk_tokens=None):
        """Feed-forward of ``prepare(x)`` (per token): x (B, L, D) -> (B, L, D)."""
        return map_token_slices(
            lambda xc: self.net[2](F.gelu(self.net[0].proj(prepare(xc)), approximate="tanh")), x, chunk_tokens)


class TransformerBlock(nn.Module):
    def __init__(self, config: DiTConfig, operations, device=None, dtype=None):
        super().__init__()
        dim = config.hidden_size
        self.scale_shift_table = nn.Parameter(torch.zeros(6, dim, device=device, dtype=dtype))
        self.norm1 = operations.LayerNorm(dim, eps=1e-5, device=device, dtype=dtype)
        self.attn1 = SelfAttention(dim, config.head_dim, operations, device, dtype)
        self.norm2 = operations.LayerNorm(dim, eps=1e-5, device=device, dtype=dtype)
        self.attn2 = CrossAttention(dim, config.head_dim, operations, device, dtype)
        self.ff = FeedForward(dim, config.ff_inner_dim, operations, device, dtype)

    def forward(self, x, modulation, context, context_mask, rope_cos, rope_sin, backend="sdpa", chunk_tokens=None,
                options=None):
        """x (B, L, D); modulation (B, 6D) shared by all blocks; returns (B, L, D) (x updated in place
        when no gradient is recorded). ``options``: the host's per-call options (attention backend)."""
        table = cast_to(self.scale_shift_table, x)[None] + modulation.unflatten(1, (6, -1))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = table.chunk(6, dim=1)
        x = residual_add(x, self.attn1(x, lambda t: self.norm1(t) * (1 + scale_msa) + shift_msa,
                                       rope_cos, rope_sin, backend, chunk_tokens, options), gate_msa)
        x = residual_add(x, self.attn2(x, context, context_mask, chunk_tokens, backend, options))
        return residual_add(x, self.ff(x, lambda t: self.norm2(t) * (1 + scale_mlp) + shift_mlp, chunk_tokens),
                            gate_mlp)


def residual_add(x, update, gate=None):
    """x + gate * update with the official rounding order; in place unless autograd needs the inputs."""
    if torch.is_grad_enabled() and (x.requires_grad or update.requires_grad):
        return x + (update if gate is None else gate * update)
    if gate is not None:
        update = update.mul_(gate)
    return x.add_(update)


class StepVideoDiT(nn.Module):
    """Step-Video DiT. ``forward`` takes the official argument names; see the module docstring.

    Runtime options (attributes, not part of the weights):
        attention_backend: a backend of networks.attention ("sdpa", "flash_attn", "sage", or "comfy" when
            the host registered its attention function).
        chunk_tokens: if set, the blocks run over slices of this many tokens (modulated norms,
            projections, attention queries and the feed-forward), so no block temporary spans all
            tokens except q, k and v: about 40% of the unchunked activation peak, same results.
    """

    def __init__(self, config: DiTConfig, operations=DEFAULT_OPERATIONS, device=None, dtype=None):
        super().__init__()
        self.config = config
        dim = config.hidden_size
        patch_in = config.in_channels * (2 if config.image_condition else 1)
        self.pos_embed = PatchEmbed(patch_in, dim, config.patch_size, operations, device, dtype)
        self.adaln_single = AdaLNSingle(dim, config.image_condition, operations, device, dtype)
        self.caption_projection = TextProjection(config.caption_channels[0], dim, operations, device, dtype)
        if len(config.caption_channels) > 1:
            self.clip_projection = operations.Linear(config.caption_channels[1], dim, device=device, dtype=dtype)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(config, operations, device, dtype) for _ in range(config.num_layers)])
        self.scale_shift_table = nn.Parameter(torch.zeros(2, dim, device=device, dtype=dtype))
        self.proj_out = operations.Linear(dim, config.patch_size ** 2 * config.out_channels, device=device, dtype=dtype)
        self.attention_backend = "sdpa"
        self.chunk_tokens = None
        self.clean_known = False  # trained to see a window's known latents clean (set by the loaders)

    def embed_context(self, llm_states, clip_states, mask, dtype):
        """[CLIP ; LLM] cross-attention context, truncated to the longest valid length in the batch.

        llm_states (B, L1, D1); clip_states (B, L2, D2) or None; mask (B, L2 + L1) 0/1, CLIP positions 1.
        The official mask has the valid tokens as a prefix; a mask with gaps (e.g. two prompts' tokens
        concatenated, each followed by its padding) first has each row's valid tokens moved to the
        front, in order. Returns context (B, Lc, D) and a bool mask (B, 1, 1, Lc). As in the official
        pipeline the mask is summed in the activation dtype, so in bf16 valid lengths above 256 round
        to even numbers.
        """
        llm = self.caption_projection(F.layer_norm(llm_states.to(dtype), llm_states.shape[-1:], eps=1e-6))
        parts = [llm]
        if clip_states is not None and hasattr(self, "clip_projection"):
            parts.insert(0, self.clip_projection(clip_states.to(dtype)))
        context = torch.cat(parts, dim=1)
        if mask is not None and bool((mask[:, 1:] > mask[:, :-1]).any()):  # not a prefix: valid tokens first
            order = torch.argsort((mask == 0).to(torch.int8), dim=1, stable=True).to(context.device)
            context = context.gather(1, order[..., None].expand(-1, -1, context.shape[-1]))
            mask = mask.gather(1, order.to(mask.device))
        if mask is None:
            lengths = torch.full((context.shape[0],), context.shape[1], device=context.device)
        else:
            lengths = mask.to(dtype).sum(dim=1).int().to(context.device)
        longest = int(lengths.max())
        context = context[:, :longest]
        valid = torch.arange(longest, device=context.device)[None] < lengths[:, None]
        return context, valid[:, None, None, :]

    def forward(self, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_2=None,
                encoder_attention_mask=None, condition_hidden_states=None, motion_score=DEFAULT_MOTION_SCORE,
                chunk_tokens=None, transformer_options=None):
        """Velocity prediction.

        hidden_states (B, F, C, H, W) noisy latents (their dtype is the compute dtype);
        timestep (B,) in [0, 1), rounded to the compute dtype like the official pipeline does;
        encoder_hidden_states (B, L1, D1) Step-LLM states; encoder_hidden_states_2 (B, L2, D2) CLIP
        states; encoder_attention_mask (B, L2 + L1) 0/1; TI2V only: condition_hidden_states
        (B, F, C, H, W) image-condition latents (zeros when None) and motion_score (float).
        chunk_tokens overrides ``self.chunk_tokens`` for this call. transformer_options: the host's
        per-call options dict (see :meth:`run_blocks`), passed down to the attention backend.
        Returns (B, F, C_out, H, W) in the compute dtype.
        """
        frames, height, width = hidden_states.shape[1], hidden_states.shape[3], hidden_states.shape[4]
        x = self.embed_tokens(hidden_states, condition_hidden_states)
        modulation, embedded, context, context_mask = self.embed_conditions(
            timestep, motion_score, encoder_hidden_states, encoder_hidden_states_2, encoder_attention_mask, x)
        p = self.config.patch_size
        rope = rope_tables(rope_grid(frames, height // p, width // p, device=x.device), x.dtype)
        x = self.run_blocks(x, modulation, context, context_mask, rope, chunk_tokens or self.chunk_tokens,
                            {} if transformer_options is None else transformer_options)
        return unpatchify(self.output_tokens(x, embedded), frames, height // p, width // p, p,
                          self.config.out_channels)

    def embed_tokens(self, hidden_states, condition_hidden_states=None, frames=None):
        """Patch tokens (B, F'*h*w, D) of latent frames ``frames`` (a slice; all when None), frame-major.

        hidden_states (B, F, C, H, W) (its dtype is the compute dtype); TI2V: condition_hidden_states
        (B, F, C, H, W) concatenated on channels (zeros when None).
        """
        cfg = self.config
        dtype = hidden_states.dtype
        p = cfg.patch_size
        if hidden_states.shape[3] % p or hidden_states.shape[4] % p:
            raise ValueError(f"latent height/width {hidden_states.shape[3]}x{hidden_states.shape[4]} must be "
                             f"multiples of the patch size {p}")
        if frames is not None:
            hidden_states = hidden_states[:, frames]
            condition_hidden_states = None if condition_hidden_states is None else condition_hidden_states[:, frames]
        x = hidden_states
        if cfg.image_condition:
            condition = torch.zeros_like(x) if condition_hidden_states is None else condition_hidden_states.to(dtype)
            x = torch.cat([x, condition], dim=2)
        return self.pos_embed(x.flatten(0, 1)).to(dtype).reshape(x.shape[0], -1, cfg.hidden_size)

    def embed_conditions(self, timestep, motion_score, llm_states, clip_states, mask, x):
        """(block modulation (B, 6D), timestep embedding (B, D), context (B, Lc, D), context mask (B, 1, 1, Lc))
        for tokens x (B, l, D) (their dtype and device); timestep (B,) or a scalar, rounded to the compute dtype."""
        batch, dtype = x.shape[0], x.dtype
        timestep = timestep.to(device=x.device, dtype=dtype).reshape(-1).expand(batch)
        motion = torch.full((batch,), float(motion_score), device=x.device, dtype=dtype)
        modulation, embedded = self.adaln_single(timestep, motion, dtype)
        return (modulation, embedded) + self.embed_context(llm_states, clip_states, mask, dtype)

    def output_tokens(self, x, embedded):
        """Final modulated norm and projection, per token: x (B, l, D) -> (B, l, p*p*C_out)."""
        shift, scale = (cast_to(self.scale_shift_table, x)[None] + embedded[:, None]).chunk(2, dim=1)
        return self.proj_out(F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale) + shift)

    def run_blocks(self, x, modulation, context, context_mask, rope, chunk_tokens, options):
        """The transformer blocks over tokens x (B, L, D), each offered to the host's block patches.

        ``options`` is the host's transformer_options dict (ComfyUI's protocol, plain dicts only): a
        callable at ``options["patches_replace"]["dit"][("double_block", i)]`` runs instead of block i as
        ``patch({"img": x, "txt": context, "vec": modulation, "pe": (rope_cos, rope_sin),
        "transformer_options": options}, {"original_block": run})`` and returns {"img": new x}; ``run``
        takes the same dict and runs the block (on a copy of "img": blocks update x in place). The block
        index and count are written into ``options`` as the host's own DiTs do.
        """
        replace = options.get("patches_replace", {}).get("dit", {})
        options["total_blocks"] = len(self.transformer_blocks)
        options["block_type"] = "double"
        for index, block in enumerate(self.transformer_blocks):
            options["block_index"] = index
            patch = replace.get(("double_block", index))
            if patch is None:
                x = block(x, modulation, context, context_mask, *rope, self.attention_backend, chunk_tokens, options)
                continue

            def run(args, block=block):
                return {"img": block(args["img"].clone(), args["vec"], args["txt"], context_mask, *args["pe"],
                                     self.attention_backend, chunk_tokens, args["transformer_options"])}

            x = patch({"img": x, "txt": context, "vec": modulation, "pe": rope, "transformer_options": options},
                      {"original_block": run})["img"]
        return x


def unpatchify(tokens, frames, h, w, p, channels):
    """(B, F*h*w, p*p*C) -> (B, F, C, h*p, w*p); each token's channels are ordered (row p, col p, C)."""
    batch = tokens.shape[0]
    x = tokens.reshape(batch, frames, h, w, p, p, channels)
    return x.permute(0, 1, 6, 2, 4, 3, 5).reshape(batch, frames, channels, h * p, w * p)


def token_slices(length, size):
    """Slices splitting ``length`` tokens into pieces of ``size`` (one slice when size is None or larger)."""
    if not size or length <= size:
        return [slice(0, length)]
    return [slice(i, min(i + size, length)) for i in range(0, length, size)]


def map_token_slices(fn, x, size):
    """fn applied to token slices of x (B, L, ...), results written into one (B, L, ...) tensor."""
    slices = token_slices(x.shape[1], size)
    if len(slices) == 1:
        return fn(x)
    out = None
    for s in slices:
        piece = fn(x[:, s])
        if out is None:
            out = piece.new_empty(x.shape[:2] + piece.shape[2:])
        out[:, s] = piece
    return out
