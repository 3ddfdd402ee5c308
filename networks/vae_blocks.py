"""Building blocks of the Step-Video v2 Video-VAE (causal 3-D convolutions, per-frame GroupNorm).

Layout. Activations are logical (B, C, T, H, W) tensors stored channels-last
(``torch.channels_last_3d``: memory order B, T, H, W, C). In that layout every frame, and every
run of consecutive frames, is one block of memory: per-frame work (the v2 GroupNorm, 2-D
resampling) runs on cheap views, time slabs are slices, and oneDNN / cuDNN convolutions take the
tensors without reordering them.

Causality. A 3-tap causal convolution sees each input preceded by two zero frames, never padded
at the back; output frame t depends on input frames t-2..t only. Streams compute their first two
outputs from the kernel taps that see real frames instead of multiplying the zeros.

Memory. Convolutions run over time slabs (:meth:`CausalConv3d.stream`): each slab's input is the
last two (normalised) frames of the previous slab followed by the normalised slab, so the
normalised conv input is never built whole and a conv whose output has its input's shape can
write over its input. Other per-frame work (GroupNorm, 2-D resampling, 1x1x1 shortcuts) also
runs in slabs (:func:`per_frame`). A residual block then holds its input, its output and a slab.

Module and parameter names equal the official ``stepvideo/vae/vae.py`` state-dict keys; the
parameter-free space-to-depth shortcuts are plain functions.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .ops import cast_to

CL3D = torch.channels_last_3d
GROUPS = 32
SLAB_ELEMENTS = 1 << 22  # streamed convs and per-frame work run in time slabs of ~4 M elements per tensor
WEIGHT_SLICE_ELEMENTS = 1 << 24  # larger conv weights run in output-channel slices (see CausalConv3d)


def channels_last(x):
    """``x`` (B, C, T, H, W) stored channels-last (no copy when it already is)."""
    return x.contiguous(memory_format=CL3D)


def empty_video(shape, like):
    """An uninitialised channels-last (B, C, T, H, W) tensor on ``like``'s device and dtype."""
    return torch.empty(shape, device=like.device, dtype=like.dtype, memory_format=CL3D)


def as_frames(x):
    """(B, C, T, H, W) -> (B*T, C, H, W): each frame as a channels-last image."""
    return x.transpose(1, 2).flatten(0, 1)


def from_frames(frames, batch):
    """(B*T, C, H, W) -> (B, C, T, H, W), the inverse of :func:`as_frames`."""
    return frames.unflatten(0, (batch, -1)).transpose(1, 2)


def per_frame(fn, src, dst, time_scale=1, add=False):
    """``dst[:, :, time_scale*t0 : time_scale*t1] = fn(src[:, :, t0:t1])`` over time slabs of ``src``.

    ``fn`` must treat frames independently (it may turn one frame into ``time_scale`` frames).
    ``dst`` may be ``src`` itself (in place) when shapes agree; ``add=True`` adds instead of
    assigning. Temporaries are one slab. Returns ``dst``.
    """
    frames = src.shape[2]
    frame_elements = max(src[:, :, :1].numel(), dst[:, :, :time_scale].numel())
    step = max(1, SLAB_ELEMENTS // max(1, frame_elements))
    for t0 in range(0, frames, step):
        t1 = min(frames, t0 + step)
        target = dst[:, :, time_scale * t0:time_scale * t1]
        result = fn(src[:, :, t0:t1])
        if add:
            target.add_(result)
        else:
            target.copy_(result)
    return dst


def frame_group_norm(norm, x, silu):
    """The v2 GroupNorm: statistics of each frame separately; optional SiLU. (B, C, t, H, W) -> same."""
    y = norm(as_frames(x))
    if silu:
        y = F.silu(y, inplace=True)
    return from_frames(y, x.shape[0])


def store_conv_weights_channels_last(module):
    """Re-store every 2-D / 3-D conv weight of ``module`` channels-last, in place; returns ``module``.

    With channels-last activations this is the layout oneDNN and cuDNN use directly; a weight in
    the default layout would be reordered on every call (on CPU a temporary copy of the weight,
    0.9 GB for the decoder's 2048 -> 4096 conv, and slower).
    """
    for layer in module.modules():
        weight = getattr(layer, "weight", None)
        if isinstance(layer, (nn.Conv2d, nn.Conv3d)) and weight is not None and not weight.is_meta:
            layout = CL3D if weight.dim() == 5 else torch.channels_last
            weight.data = weight.data.contiguous(memory_format=layout)
    return module


def conv3d(x, weight, bias, stride, padding):
    """F.conv3d, except for float32 on the CPU, where oneDNN is called directly: torch sends inputs with
    batch 1 and N*C*T*H <= 20480 (the first frames of a stream, the coarse levels) to its generic
    kernel, 1.4-2.7x slower on this decoder's shapes."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        return torch.mkldnn_convolution(x, weight, bias, padding, stride, (1, 1, 1), 1)
    return F.conv3d(x, weight, bias, stride, padding)


def pointwise_conv(x, weight, bias):
    """A 1x1x1 conv as one matrix product over the channels-last positions: (B, C, T, H, W) -> (B, C', T, H, W).

    (torch runs 1x1x1 conv3d on the CPU through its slow generic kernel.) weight (C', C, 1, 1, 1)."""
    weight = cast_to(weight, x).reshape(weight.shape[0], -1)
    out = F.linear(x.permute(0, 2, 3, 4, 1), weight, None if bias is None else cast_to(bias, x))
    return out.permute(0, 4, 1, 2, 3)


def group_norm_layer(channels, operations, device, dtype):
    return operations.GroupNorm(GROUPS, channels, eps=1e-5, affine=True, device=device, dtype=dtype)


class CausalConv3d(nn.Module):
    """Conv3d, causal in time: output frame t sees input frames up to t (zeros before the first).

    ``conv`` carries the weights (official key ``<name>.conv.weight``); it pads space by k//2 on each
    side and time not at all: the ``history = k - 1`` leading zero frames are left out by
    :meth:`stream` (stride 1, slab by slab; :meth:`first_frames`) or supplied by a padded copy
    (stride 2, the encoder's 3-D downsampling: T -> (T - 1) // 2 + 1).

    A weight above WEIGHT_SLICE_ELEMENTS (the decoder's 2048 -> 4096 conv: 226 M) is applied in
    slices of output channels: oneDNN copies the weight into its own layout on every call, and a
    slice keeps that copy small (64 MB instead of 0.9 GB in float32).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, operations=nn, device=None, dtype=None):
        super().__init__()
        self.history = kernel_size - 1
        self.conv = operations.Conv3d(in_channels, out_channels, kernel_size, stride=stride,
                                      padding=(0, kernel_size // 2, kernel_size // 2), device=device, dtype=dtype)

    def forward_padded(self, buffer, first_tap=0):
        """Valid-in-time conv of ``buffer`` (B, C, n, H, W) -> (B, C', T', H', W') with the kernel's time
        taps ``first_tap`` onwards (T' = n - (history - first_tap) at stride 1). ``first_tap > 0`` gives
        the first outputs of a stream exactly without multiplying the zero history frames."""
        weight, bias = self.conv.weight[:, :, first_tap:], self.conv.bias
        step = max(1, WEIGHT_SLICE_ELEMENTS // weight[0].numel())
        if step >= weight.shape[0]:
            return channels_last(conv3d(buffer, cast_to(weight, buffer), cast_to(bias, buffer), self.conv.stride,
                                        self.conv.padding))
        out = None
        for start in range(0, weight.shape[0], step):
            part_bias = None if bias is None else cast_to(bias[start:start + step], buffer)
            part = conv3d(buffer, cast_to(weight[start:start + step], buffer), part_bias,
                          self.conv.stride, self.conv.padding)
            if out is None:
                out = empty_video((part.shape[0], weight.shape[0]) + part.shape[2:], part)
            out[:, start:start + step] = part
        return out

    def first_frames(self, frames, out):
        """Writes the stream's outputs for the frames of ``frames`` (B, C, n, H, W), the first n input
        frames, into ``out`` (B, C', n, H, W): output t < history from taps history - t.. over frames
        0..t (the taps before see only zero history), later ones from the full kernel.
        A weight too large for one call (see forward_padded) is applied to zero-padded frames instead:
        such a conv is bound by reading its weight, which the split would do three times."""
        count = frames.shape[2]
        if self.conv.weight.numel() > WEIGHT_SLICE_ELEMENTS:
            out[:, :, :count] = self.forward_zero_history(frames)
            return out
        for t in range(min(self.history, count)):
            out[:, :, t:t + 1] = self.forward_padded(frames[:, :, :t + 1], first_tap=self.history - t)
        if count > self.history:
            out[:, :, self.history:count] = self.forward_padded(frames)
        return out

    def forward_zero_history(self, x):
        """The conv of x (B, C, T, H, W) after ``history`` zero frames, from a padded copy."""
        return self.forward_padded(channels_last(F.pad(x, (0, 0, 0, 0, self.history, 0))))

    def forward(self, x):
        """x (B, C, T, H, W) -> (B, C', T', H', W')."""
        if not self.history:
            return pointwise_conv(x, self.conv.weight, self.conv.bias)
        if self.conv.stride[0] == 1:
            return self.stream(x)
        return self.forward_zero_history(x)

    def stream(self, x, prepare=None, inplace=False, scale=1):
        """conv(zero history + prepare(x)) over time slabs, for stride 1: (B, C, T, H, W) -> (B, C', T, sH, sW).

        ``prepare`` is a per-frame function applied to x first (GroupNorm + SiLU, possibly after a
        x``scale`` spatial up-sampling); the prepared input only ever exists one slab (plus
        ``history`` carried frames) at a time, in one reused buffer. ``inplace`` (same shape in and
        out) writes the result over x where x spans several slabs: each slab is prepared before
        its output overwrites it, and the carried frames are prepared copies. Returns the result
        (a new tensor when x fits in one slab).
        """
        batch, _, frames, height, width = x.shape
        history, height, width = self.history, scale * height, scale * width
        frame = batch * max(self.conv.in_channels, self.conv.out_channels) * height * width
        step = max(1, SLAB_ELEMENTS // max(x[:, :, :1].numel(), frame))
        if step >= frames:
            prepared = channels_last(x if prepare is None else prepare(x))
            return self.first_frames(prepared, empty_video((batch, self.conv.out_channels, frames, height, width), x))
        buffer = empty_video((batch, self.conv.in_channels, history + step, height, width), x)
        buffer[:, :, :history].zero_()  # carried into the second slab when the first is shorter than history
        out = x if inplace else empty_video((batch, self.conv.out_channels, frames, height, width), x)
        for start in range(0, frames, step):
            count = min(frames, start + step) - start
            window = buffer[:, :, :history + count]
            slab = x[:, :, start:start + count]
            window[:, :, history:] = slab if prepare is None else prepare(slab)
            if start == 0:
                self.first_frames(window[:, :, history:], out[:, :, :count])
            else:
                out[:, :, start:start + count] = self.forward_padded(window)
            tail = window[:, :, count:count + history]
            buffer[:, :, :history] = tail.clone() if count < history else tail
        return out


def identity(x):
    return x


def group_norm_silu(norm, silu=True):
    """The per-frame function GroupNorm(+SiLU) with ``norm``, for :meth:`CausalConv3d.stream` / :func:`per_frame`."""
    return lambda frames: frame_group_norm(norm, frames, silu)


class ResnetBlock3D(nn.Module):
    """x + conv2(norm2(conv1(norm1(x)))) with SiLU after each norm and causal 3x3x3 convs.

    The shortcut is a 1x1x1 conv (``nin_shortcut``) when the width changes. No time embedding.
    (B, C_in, T, H, W) -> (B, C_out, T, H, W).

    ``upsample``: an :class:`Upsample2D` whose output is the block's real input x. It is then
    applied slab by slab where x is read (twice: for conv1 and for the shortcut), so the large x
    is never held whole: (B, C_in, T, H/2, W/2) -> (B, C_out, T, H, W).
    """

    def __init__(self, in_channels, out_channels, operations=nn, device=None, dtype=None):
        super().__init__()
        self.norm1 = group_norm_layer(in_channels, operations, device, dtype)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, operations=operations, device=device, dtype=dtype)
        self.norm2 = group_norm_layer(out_channels, operations, device, dtype)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, operations=operations, device=device, dtype=dtype)
        if in_channels != out_channels:
            self.nin_shortcut = CausalConv3d(in_channels, out_channels, 1, operations=operations,
                                             device=device, dtype=dtype)

    def forward(self, x, upsample=None):
        expand = upsample or identity
        h = self.conv1.stream(x, lambda s: frame_group_norm(self.norm1, expand(s), silu=True),
                              scale=1 if upsample is None else 2)
        h = self.conv2.stream(h, group_norm_silu(self.norm2), inplace=True)
        if upsample is None and not hasattr(self, "nin_shortcut"):
            return h.add_(x)
        if upsample is not None and hasattr(self, "nin_shortcut"):
            shortcut = upsample.folded(self.nin_shortcut.conv, x)  # one conv instead of two
        else:
            nin = getattr(self, "nin_shortcut", identity)
            shortcut = lambda s: nin(expand(s))  # noqa: E731
        return per_frame(shortcut, x, h, add=True)


class AttentionBlock3D(nn.Module):
    """x + proj_out(attention(q(n), k(n), v(n))), n = GroupNorm(x) (no SiLU); all projections 1x1x1.

    Single head of width C over the T*H*W positions flattened in (t, h, w) order, causal at the
    token level (a position sees every earlier position of the flattened order). Scale 1/sqrt(C).
    """

    def __init__(self, channels, operations=nn, device=None, dtype=None):
        super().__init__()
        self.norm = group_norm_layer(channels, operations, device, dtype)
        for name in ("q", "k", "v", "proj_out"):
            setattr(self, name, CausalConv3d(channels, channels, 1, operations=operations, device=device, dtype=dtype))

    def forward(self, x):
        batch, channels, frames, height, width = x.shape
        normed = per_frame(group_norm_silu(self.norm, silu=False), x, empty_video(x.shape, x))

        def tokens(projection):  # (B, C, T, H, W) channels-last -> (B, 1, T*H*W, C), a view
            return projection(normed).permute(0, 2, 3, 4, 1).reshape(batch, 1, frames * height * width, channels)

        attended = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v), is_causal=True)
        del normed
        attended = attended.view(batch, frames, height, width, channels).permute(0, 4, 1, 2, 3)
        return self.proj_out(attended).add_(x)


class Downsample2D(nn.Module):
    """Per frame: one zero row at the bottom and one zero column at the right, then a 3x3 stride-2 conv.

    (B, C, T, H, W) -> (B, C, T, H/2, W/2).
    """

    def __init__(self, channels, operations=nn, device=None, dtype=None):
        super().__init__()
        self.conv = operations.Conv2d(channels, channels, 3, stride=2, padding=0, device=device, dtype=dtype)

    def forward(self, x):
        batch, channels, frames, height, width = x.shape

        def downsample(s):
            return from_frames(self.conv(F.pad(as_frames(s), (0, 1, 0, 1))), batch)

        return per_frame(downsample, x, empty_video((batch, channels, frames, height // 2, width // 2), x))


class Downsample3D(nn.Module):
    """Causal 3x3x3 conv with stride 2 in time and space: (B, C, T, H, W) -> (B, C, (T-1)//2+1, H/2, W/2)."""

    def __init__(self, channels, operations=nn, device=None, dtype=None):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=2, operations=operations, device=device, dtype=dtype)

    def forward(self, x):
        return self.conv(x)


# --- x2 nearest up-sampling fused with the following 3x3(x3) conv ----------------------------------
#
# A 3-tap conv over a nearest-x2 up-sampled axis sees, at each output position, only two distinct
# input samples: output 2i + q of a centred (zero-padded) axis reads input i-1, i (q = 0) or i, i+1
# (q = 1); output 2t + p of a causal time axis reads input frames t-1, t for both phases. So the conv
# of the up-sampled tensor equals, per output phase, a 2-tap conv of the small tensor with merged
# taps: 8 instead of 27 taps per output in 3-D (4 instead of 9 in 2-D), and the up-sampled tensor
# is never built. A 2-tap conv with padding 1 gives n + 1 outputs per spatial axis; phase q keeps
# outputs [q, q + n). Results equal the official up-sample-then-conv up to float summation order.

FIRST_ALONE = ((0,), (1, 2))  # the 3 kernel taps merged into 2: k0 | k1 + k2
LAST_ALONE = ((0, 1), (2,))  # k0 + k1 | k2
CENTRED_PHASES = (FIRST_ALONE, LAST_ALONE)  # spatial output phase q = 0, 1
CAUSAL_PHASES = (LAST_ALONE, FIRST_ALONE)  # time output phase p = 0, 1 (both read frames t-1, t)
SPATIAL_PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row phase, col phase)


def tap_selector(groups):
    """(2, 3) 0/1 matrix: merged tap a is the sum of the kernel taps in groups[a]."""
    selector = torch.zeros(2, 3)
    for tap, group in enumerate(groups):
        selector[tap, list(group)] = 1.0
    return selector


def nearest_2x_kernel(weight, row_phase, col_phase):
    """Merged kernel of one spatial output phase, channels-last, from a 3x3 (2-D) or 3x3x3 (3-D) weight.

    2-D: (Co, C, 2, 2). 3-D: both time phases, output channel 2*o + p: (2*Co, C, 2, 2, 2). Taps are
    summed in float32 by one small matmul over the channels-last weight, one phase at a time.
    """
    rows, cols = tap_selector(CENTRED_PHASES[row_phase]), tap_selector(CENTRED_PHASES[col_phase])
    out_channels, in_channels = weight.shape[:2]
    if weight.dim() == 5:
        times = torch.stack([tap_selector(groups) for groups in CAUSAL_PHASES])
        merge = torch.einsum("pai,bj,ck->pabcijk", times, rows, cols).reshape(16, 27)
    else:
        merge = torch.einsum("bj,ck->bcjk", rows, cols).reshape(4, 9)
    taps = weight.float().movedim(1, -1).reshape(out_channels, -1, in_channels)  # (Co, 3^n, C)
    merged = torch.matmul(merge.to(weight.device), taps).to(weight.dtype)  # (Co, merged taps, C)
    if weight.dim() == 5:
        return merged.view(2 * out_channels, 2, 2, 2, in_channels).permute(0, 4, 1, 2, 3)
    return merged.view(out_channels, 2, 2, in_channels).permute(0, 3, 1, 2)


def conv2d_of_nearest_2x(frames, weight, bias):
    """conv2d(nearest_x2(frames), 3x3 weight, padding 1), nearest_x2 never built: (n, C, H, W) -> (n, Co, 2H, 2W)."""
    count, _, height, width = frames.shape
    out = torch.empty((count, weight.shape[0], 2 * height, 2 * width), device=frames.device,
                      dtype=frames.dtype, memory_format=torch.channels_last)
    for row_phase, col_phase in SPATIAL_PHASES:
        part = F.conv2d(frames, nearest_2x_kernel(weight, row_phase, col_phase), bias, padding=1)
        out[:, :, row_phase::2, col_phase::2] = part[:, :, row_phase:row_phase + height, col_phase:col_phase + width]
    return out


def causal_conv3d_of_nearest_2x(x, weight, bias):
    """Causal 3x3x3 conv (space padding 1) of nearest_x2(x) in (t, h, w), without building it.

    (B, C, T, H, W) -> (B, Co, 2T, 2H, 2W), over time slabs of x, each preceded by the frame before
    it (zeros before the first). Both time phases read the same frames, so each of the four
    spatial phases is one conv with 2*Co outputs; the four merged kernels are built once per call.
    """
    batch, channels, frames, height, width = x.shape
    both_biases = None if bias is None else bias.repeat_interleave(2)
    out = empty_video((batch, weight.shape[0], 2 * frames, 2 * height, 2 * width), x)
    step = max(1, SLAB_ELEMENTS // max(1, out[:, :, :2].numel()))
    kernels = {phase: nearest_2x_kernel(weight, *phase) for phase in SPATIAL_PHASES}
    previous = torch.zeros_like(x[:, :, :1])
    for start in range(0, frames, step):
        stop = min(frames, start + step)
        window = channels_last(torch.cat([previous, x[:, :, start:stop]], dim=2))
        previous = x[:, :, stop - 1:stop]
        target = out[:, :, 2 * start:2 * stop]
        for row_phase, col_phase in SPATIAL_PHASES:
            both = conv3d(window, kernels[row_phase, col_phase], both_biases, (1, 1, 1), (0, 1, 1))
            both = both[:, :, :, row_phase:row_phase + height, col_phase:col_phase + width]
            for time_phase in range(2):
                target[:, :, time_phase::2, row_phase::2, col_phase::2] = both[:, time_phase::2]
            del both
    return out


def add_nearest_2x_(fine, coarse):
    """``fine += nearest_x2(coarse)`` in place (fine (B, C, 2T, 2H, 2W) channels-last), by broadcasting."""
    batch, channels, frames, height, width = coarse.shape
    fine.permute(0, 2, 3, 4, 1).view(batch, frames, 2, height, 2, width, 2, channels).add_(
        coarse.permute(0, 2, 3, 4, 1).reshape(batch, frames, 1, height, 1, width, 1, channels))
    return fine


class Upsample2D(nn.Module):
    """Per frame: nearest x2 in space, then a 3x3 conv. (B, C, T, H, W) -> (B, C, T, 2H, 2W).

    Frames are independent, so the decoder applies it slab by slab inside the next Resnet
    (``ResnetBlock3D(upsample=...)``) instead of building its 4x larger output.
    """

    def __init__(self, channels, operations=nn, device=None, dtype=None):
        super().__init__()
        self.conv = operations.Conv2d(channels, channels, 3, padding=1, device=device, dtype=dtype)

    def forward(self, x):
        return self.apply_conv(x, cast_to(self.conv.weight, x), cast_to(self.conv.bias, x))

    @staticmethod
    def apply_conv(x, weight, bias):
        return from_frames(conv2d_of_nearest_2x(as_frames(x), weight, bias), x.shape[0])

    def folded(self, pointwise, like):
        """The per-frame function x -> pointwise(self(x)) for a 1x1x1 conv ``pointwise`` (C' x C), as one
        3x3 conv of the small x: both are linear, so the weights multiply (W' = P W, b' = P b + c), and
        the up-sampled tensor is never convolved twice. ``like``: dtype and device of the input."""
        matrix = cast_to(pointwise.weight, like).flatten(1).float()
        weight = torch.einsum("oc,cikl->oikl", matrix, cast_to(self.conv.weight, like).float())
        weight = weight.to(like.dtype).contiguous(memory_format=torch.channels_last)
        bias = None
        if self.conv.bias is not None or pointwise.bias is not None:
            bias = torch.zeros(matrix.shape[0], device=matrix.device)
            if self.conv.bias is not None:
                bias += matrix @ cast_to(self.conv.bias, like).float()
            if pointwise.bias is not None:
                bias += cast_to(pointwise.bias, like).float()
            bias = bias.to(like.dtype)
        return lambda x: self.apply_conv(x, weight, bias)


class Res3DBlockUpsample(nn.Module):
    """The 3-D up-sampling block, applied to u = nearest_x2(x) in (t, h, w):
    u + SiLU(u + norm2(conv2(SiLU(norm1(conv1(u)))))), causal 3x3x3 convs.

    Takes the small x (B, C, T, H, W) and returns (B, C, 2T, 2H, 2W); u itself is never built
    (conv1 runs per output phase, the residuals are broadcast).
    """

    def __init__(self, channels, operations=nn, device=None, dtype=None):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, 3, operations=operations, device=device, dtype=dtype)
        self.norm1 = group_norm_layer(channels, operations, device, dtype)
        self.conv2 = CausalConv3d(channels, channels, 3, operations=operations, device=device, dtype=dtype)
        self.norm2 = group_norm_layer(channels, operations, device, dtype)

    def forward(self, x):
        conv1 = self.conv1.conv
        h = causal_conv3d_of_nearest_2x(x, cast_to(conv1.weight, x), cast_to(conv1.bias, x))
        h = self.conv2.stream(h, group_norm_silu(self.norm1), inplace=True)
        per_frame(group_norm_silu(self.norm2, silu=False), h, h)
        return add_nearest_2x_(F.silu(add_nearest_2x_(h, x), inplace=True), x)


class Upsample3D(nn.Module):
    """Nearest x2 in (t, h, w) fused into :class:`Res3DBlockUpsample` (``conv3d``). T -> 2T, H -> 2H, W -> 2W."""

    def __init__(self, channels, operations=nn, device=None, dtype=None):
        super().__init__()
        self.conv3d = Res3DBlockUpsample(channels, operations, device, dtype)

    def forward(self, x):
        return self.conv3d(x)


# --- v2 patchify heads: space-to-depth with channel-averaging / channel-duplicating shortcuts ----------

def space_to_depth(x, factor):
    """(B, C, T, H, W) -> (B, C*f^3, (T+f-1)/f, H/f, W/f) after f-1 leading zero frames.

    Output channel c*f^3 + i_t*f^2 + i_h*f + i_w holds input channel c at offset (i_t, i_h, i_w).
    """
    if factor == 1:
        return x
    x = F.pad(x, (0, 0, 0, 0, factor - 1, 0))
    batch, channels, frames, height, width = x.shape
    f = factor
    x = x.reshape(batch, channels, frames // f, f, height // f, f, width // f, f)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(batch, frames // f, height // f, width // f, channels * f ** 3)
    return x.permute(0, 4, 1, 2, 3)


def depth_to_space(x, factor):
    """Inverse of :func:`space_to_depth`, dropping the f-1 leading frames: T -> f*T - (f-1), H -> f*H, W -> f*W."""
    if factor == 1:
        return x
    batch, deep_channels, frames, height, width = x.shape
    f = factor
    channels = deep_channels // f ** 3
    x = x.reshape(batch, channels, f, f, f, frames, height, width)
    x = x.permute(0, 5, 2, 6, 3, 7, 4, 1).reshape(batch, frames * f, height * f, width * f, channels)
    return x.permute(0, 4, 1, 2, 3)[:, :, f - 1:]


def average_channel_groups(x, out_channels):
    """(B, C, ...) -> (B, out_channels, ...): the mean of each run of C / out_channels consecutive channels."""
    return channels_last(x.unflatten(1, (out_channels, -1)).mean(2))


def duplicate_channels(x, out_channels):
    """(B, C, ...) -> (B, out_channels, ...): each channel repeated out_channels / C times consecutively."""
    return x.repeat_interleave(out_channels // x.shape[1], dim=1)


class PatchifyConv(nn.Module):
    """Causal 3x3x3 conv to C/f^3 channels, then space-to-depth: (B, C_in, T, H, W) -> (B, C, T/f, H/f, W/f)."""

    def __init__(self, in_channels, out_channels, factor, operations=nn, device=None, dtype=None):
        super().__init__()
        self.factor = factor
        self.conv = CausalConv3d(in_channels, out_channels // factor ** 3, 3, operations=operations,
                                 device=device, dtype=dtype)

    def forward(self, x):
        return channels_last(space_to_depth(self.conv(x), self.factor))


class UnpatchifyConv(nn.Module):
    """Causal 3x3x3 conv to C*f^3 channels, then depth-to-space: (B, C_in, T, H, W) -> (B, C, fT-f+1, fH, fW)."""

    def __init__(self, in_channels, out_channels, factor, operations=nn, device=None, dtype=None):
        super().__init__()
        self.factor = factor
        self.conv = CausalConv3d(in_channels, out_channels * factor ** 3, 3, operations=operations,
                                 device=device, dtype=dtype)

    def forward(self, x):
        return channels_last(depth_to_space(self.conv(x), self.factor))
