"""Sequence- and CFG-parallel forward of the Step-Video DiT on ``torch.distributed`` (NCCL or gloo).

Layout: ``cfg_degree x sequence_degree`` ranks; rank r has CFG index r // sequence_degree and sequence
index r % sequence_degree. The batch rows are split over the CFG groups (contiguous ``tensor_split``: a
[cond; uncond] batch puts cond on group 0, uncond on group 1); inside a group the frame-major tokens
are split over its ranks (``tensor_split``, so any token count works). Every rank embeds only its own
tokens, gets its slice of the exact RoPE table of the full (frame, row, column) grid, and runs the
unchanged blocks of networks/dit.py on them: AdaLN, cross-attention and the feed-forward are per
token. Self-attention is wrapped through the ``SEQUENCE_PARALLEL`` hook:

* Ulysses (the official xDiT scheme), when the heads divide by the sequence degree: an all-to-all
  turns q, k, v from (B, l_r, H, d) [own tokens, all heads] into (B, L, H/sp, d) [all tokens, own heads],
  attention runs with the chosen backend, and a second all-to-all brings the output back.
* otherwise (e.g. 2 heads on 4 ranks) k and v are all-gathered and each rank attends its own queries
  to every key: exact, more memory and traffic.

The output tokens (after the final norm and projection, 64 channels instead of 6144) are all-gathered,
so every rank returns the full (B, F, C, H, W) prediction.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..networks.dit import DEFAULT_MOTION_SCORE, SEQUENCE_PARALLEL, unpatchify
from ..networks.rope3d import rope_grid, rope_tables


@dataclass
class ParallelLayout:
    """Where this rank sits: ``cfg_degree x sequence_degree`` ranks, its sequence group (None when 1 rank)."""

    cfg_degree: int
    sequence_degree: int
    rank: int
    sequence_group: object = None

    @property
    def world_size(self):
        return self.cfg_degree * self.sequence_degree

    @property
    def cfg_index(self):
        return self.rank // self.sequence_degree

    @property
    def sequence_index(self):
        return self.rank % self.sequence_degree

    @classmethod
    def create(cls, cfg_degree, sequence_degree):
        """The layout of this process in the initialised default group (call on every rank: makes the groups)."""
        world, rank = dist.get_world_size(), dist.get_rank()
        if cfg_degree < 1 or sequence_degree < 1 or cfg_degree * sequence_degree != world:
            raise ValueError(f"cfg degree {cfg_degree} x sequence degree {sequence_degree} must equal the world "
                             f"size {world}")
        mine = None
        for c in range(cfg_degree):  # every rank creates every group, in the same order
            ranks = list(range(c * sequence_degree, (c + 1) * sequence_degree))
            group = dist.new_group(ranks) if sequence_degree > 1 else None
            if rank in ranks:
                mine = group
        return cls(cfg_degree, sequence_degree, rank, mine)


def split_sizes(length, parts):
    """Sizes of ``tensor_split(range(length), parts)``: the first length % parts pieces one longer."""
    return [length // parts + (i < length % parts) for i in range(parts)]


def span(sizes, index):
    """slice of piece ``index`` of consecutive pieces of ``sizes``."""
    start = sum(sizes[:index])
    return slice(start, start + sizes[index])


class SequenceExchange:
    """The ``SEQUENCE_PARALLEL`` hook of SelfAttention for one sequence group whose ranks hold ``counts`` tokens."""

    def __init__(self, group, counts, index):
        self.group, self.counts, self.index = group, counts, index

    def __call__(self, q, k, v, attend):
        """q, k, v (B, l, H, d) of this rank's tokens; attend(q, k, v) -> (B, Lq, h, d); returns (B, l, H, d)."""
        if q.shape[2] % len(self.counts):
            return attend(q, self.gather_tokens(k), self.gather_tokens(v))
        return self._to_tokens(attend(*(self._to_heads(t) for t in (q, k, v))))

    def _to_heads(self, t):
        """(B, l_r, H, d) own tokens, all heads -> (B, L, H/sp, d) all tokens, own heads (all-to-all)."""
        sp = len(self.counts)
        batch, _, heads, dim = t.shape
        send = t.unflatten(2, (sp, heads // sp)).permute(2, 0, 1, 3, 4).contiguous()  # (sp, B, l_r, h, d)
        piece = batch * (heads // sp) * dim
        recv = t.new_empty(sum(self.counts) * piece)
        dist.all_to_all_single(recv, send.flatten(), [c * piece for c in self.counts], [send[0].numel()] * sp,
                               group=self.group)
        parts = recv.split([c * piece for c in self.counts])
        return torch.cat([p.view(batch, c, heads // sp, dim) for p, c in zip(parts, self.counts)], dim=1)

    def _to_tokens(self, o):
        """(B, L, H/sp, d) -> (B, l_r, H, d): the inverse all-to-all."""
        sp = len(self.counts)
        batch, _, heads, dim = o.shape
        send = torch.cat([p.flatten() for p in o.split(self.counts, dim=1)])
        piece = batch * heads * dim
        recv = o.new_empty(sp * self.counts[self.index] * piece)
        dist.all_to_all_single(recv, send, [self.counts[self.index] * piece] * sp, [c * piece for c in self.counts],
                               group=self.group)
        return recv.view(sp, batch, self.counts[self.index], heads, dim).permute(1, 2, 0, 3, 4).flatten(2, 3)

    def gather_tokens(self, t):
        """(B, l_r, ...) -> (B, L, ...): every rank's tokens, in order."""
        return gather_padded(t, self.group, 1, self.counts)


def gather_padded(t, group, dim, sizes):
    """All-gather ``t`` whose size along ``dim`` is sizes[rank] (uneven allowed); concatenated along ``dim``."""
    longest = max(sizes)
    padded = t.new_zeros(t.shape[:dim] + (longest,) + t.shape[dim + 1:])
    padded.narrow(dim, 0, t.shape[dim]).copy_(t)
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded, group=group)
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(pieces, sizes)], dim=dim)


def _rows(value, rows, batch):
    """The rows of a per-row input (a tensor with ``batch`` rows); anything else unchanged."""
    return value[rows] if torch.is_tensor(value) and value.dim() and value.shape[0] == batch else value


@torch.no_grad()
def parallel_forward(dit, layout, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_2=None,
                     encoder_attention_mask=None, condition_hidden_states=None, motion_score=DEFAULT_MOTION_SCORE,
                     chunk_tokens=None, transformer_options=None):
    """``dit.forward`` (same arguments and result, see networks/dit.py) computed by all ranks of ``layout``.

    Every rank passes the same full inputs and gets the full (B, F, C_out, H, W) output.
    """
    batch, frames, _, height, width = hidden_states.shape
    p = dit.config.patch_size
    h, w = height // p, width // p
    row_sizes = split_sizes(batch, layout.cfg_degree)
    token_sizes = split_sizes(frames * h * w, layout.sequence_degree)
    rows, tokens = span(row_sizes, layout.cfg_index), span(token_sizes, layout.sequence_index)
    channels = p * p * dit.config.out_channels
    if rows.stop > rows.start:
        first = tokens.start // (h * w)
        x = dit.embed_tokens(hidden_states[rows], _rows(condition_hidden_states, rows, batch),
                             frames=slice(first, -(-tokens.stop // (h * w))))
        x = x[:, tokens.start - first * h * w:tokens.stop - first * h * w]
        modulation, embedded, context, context_mask = dit.embed_conditions(
            *(_rows(v, rows, batch) for v in (timestep, motion_score, encoder_hidden_states, encoder_hidden_states_2,
                                               encoder_attention_mask)), x)
        rope = rope_tables(rope_grid(frames, h, w, device=x.device)[tokens], x.dtype)
        options = dict(transformer_options or {})
        if layout.sequence_degree > 1:
            options[SEQUENCE_PARALLEL] = SequenceExchange(layout.sequence_group, token_sizes, layout.sequence_index)
        x = dit.run_blocks(x, modulation, context, context_mask, rope, chunk_tokens or dit.chunk_tokens, options)
        out = dit.output_tokens(x, embedded)
    else:  # fewer rows than CFG groups: this group idles
        out = hidden_states.new_empty(0, tokens.stop - tokens.start, channels)
    return unpatchify(gather_output(out, layout, row_sizes, token_sizes), frames, h, w, p, dit.config.out_channels)


def gather_output(out, layout, row_sizes, token_sizes):
    """(rows of my CFG group, my tokens, C) on every rank -> the full (B, L, C) on every rank (world all-gather)."""
    padded = out.new_zeros(max(row_sizes), max(token_sizes), out.shape[-1])
    padded[:out.shape[0], :out.shape[1]] = out
    pieces = [torch.empty_like(padded) for _ in range(layout.world_size)]
    dist.all_gather(pieces, padded)
    groups = []
    for c, rows in enumerate(row_sizes):
        parts = [pieces[c * layout.sequence_degree + s][:rows, :n] for s, n in enumerate(token_sizes)]
        groups.append(torch.cat(parts, dim=1))
    return torch.cat(groups, dim=0)
