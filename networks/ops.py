"""Layer classes ("operations") the networks are built from.

Every network in this package takes ``operations=``: any object with the attributes ``Linear``,
``Conv2d``, ``Conv3d``, ``LayerNorm``, ``GroupNorm`` and ``Embedding`` whose constructors accept
the torch.nn arguments plus ``device=`` and ``dtype=``. That is the contract of ``torch.nn``
itself (the default) and of ComfyUI's ``comfy.ops`` classes, so the host can hand in layers that
cast or stream their weights for low-VRAM runs.

``CastOps`` is our own variant for weights stored in a different dtype than the activations
(fp8 or bf16 storage with bf16/fp32 compute): each call casts the weight to the input's dtype and
device, so only one layer at a time exists in the compute dtype. Its Linear also runs quantized
weights from pre-quantized files (``supports_packed_weights``): they are dequantized per call
(networks/quant_formats.py), so only one layer at a time exists dequantized.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .quant_formats import layer_weight

DEFAULT_OPERATIONS = nn


def cast_to(param, like):
    """``param`` in the dtype and on the device of tensor ``like`` (None stays None)."""
    if param is None:
        return None
    return param.to(device=like.device, dtype=like.dtype, non_blocking=True)


class CastOps:
    """torch.nn layers whose weights are cast to the activation dtype at call time."""

    class Linear(nn.Linear):
        supports_packed_weights = True

        def forward(self, x):
            return F.linear(x, layer_weight(self, x), cast_to(self.bias, x))

    class Conv2d(nn.Conv2d):
        def forward(self, x):
            return self._conv_forward(x, cast_to(self.weight, x), cast_to(self.bias, x))

    class Conv3d(nn.Conv3d):
        def forward(self, x):
            return self._conv_forward(x, cast_to(self.weight, x), cast_to(self.bias, x))

    class LayerNorm(nn.LayerNorm):
        def forward(self, x):
            return F.layer_norm(x, self.normalized_shape, cast_to(self.weight, x), cast_to(self.bias, x), self.eps)

    class GroupNorm(nn.GroupNorm):
        def forward(self, x):
            return F.group_norm(x, self.num_groups, cast_to(self.weight, x), cast_to(self.bias, x), self.eps)

    class Embedding(nn.Embedding):
        def forward(self, ids, out_dtype=None):
            """Rows looked up where the table is (only they travel to ``ids``' device), then cast."""
            rows = F.embedding(ids.to(self.weight.device), self.weight).to(ids.device)
            return rows if out_dtype is None else rows.to(out_dtype)

