"""ComfyUI glue for pre-quantized DiT files: layers that dequantize per call, LoRA applied on top.

Importing this module needs a ComfyUI host (``comfy``).

:class:`QuantizedOps` is the host's ``manual_cast`` operations (the DiT is built with them like any
native model) with a Linear that also runs quantized weights (networks/quant_formats.py): the packed
bytes are what the host moves between devices, and each call dequantizes them on the compute device
in the compute dtype. The host's call-time weight functions (``weight_function``: LowVramPatch for
layers it streams) are applied to the dequantized weight.

Why our own Linear and patcher instead of the host's quantized tensors: the host's quantization API
changed between the versions we support (0.3.75: QuantizedTensor layouts in comfy/quant_ops.py;
0.8.0: comfy_kitchen) and has no GGML block formats at all, and its fully loaded path merges a
patch into the stored weight and re-quantizes it, which would round a LoRA's small delta away at 4-6
bits. :class:`QuantizedModelPatcher` therefore keeps the patches of quantized weights for call time
(dequantize, then add, as the GGUF loaders do), using the host's own LowVramPatch and
comfy.lora.calculate_weight, so every LoRA format the host reads works unchanged.
"""

import torch.nn.functional as F

import comfy.model_patcher
import comfy.ops
import comfy.utils

from ..networks.quant_formats import is_packed, packed_weight


class QuantizedOps(comfy.ops.manual_cast):
    class Linear(comfy.ops.manual_cast.Linear):
        supports_packed_weights = True
        resident_patches = ()  # call-time patches of a fully loaded layer (set by QuantizedModelPatcher)

        def forward_comfy_cast_weights(self, input, *args, **kwargs):
            if not is_packed(self):
                return super().forward_comfy_cast_weights(input, *args, **kwargs)
            weight = packed_weight(self, input.dtype, input.device)
            for patch in list(self.resident_patches) + list(self.weight_function):
                weight = patch(weight)
            bias = None
            if self.bias is not None:
                bias = self.bias.to(device=input.device, dtype=input.dtype, non_blocking=True)
                for patch in self.bias_function:
                    bias = patch(bias)
            return F.linear(input, weight, bias)


def _owner(model, key):
    """(module, leaf name) of a state-dict key of ``model``."""
    path, _, leaf = key.rpartition(".")
    return comfy.utils.get_attr(model, path), leaf


class QuantizedModelPatcher(comfy.model_patcher.ModelPatcher):
    """ModelPatcher that never merges patches into quantized weights: they are applied at call time.

    Fully loaded layers get the patch in ``resident_patches`` (instead of a merged copy of the weight);
    streamed (lowvram) layers get the host's own LowVramPatch in ``weight_function`` as usual. A layer
    never holds both for one key (:meth:`_one_patch_per_weight` after every host step that adds them).
    """

    def patch_weight_to_device(self, key, device_to=None, inplace_update=False):
        module, leaf = _owner(self.model, key)
        if leaf != "weight" or not is_packed(module):
            return super().patch_weight_to_device(key, device_to, inplace_update)
        if key in self.patches:
            module.resident_patches = [comfy.model_patcher.LowVramPatch(key, self.patches)]

    def _quantized_layers(self):
        return [m for m in self.model.modules() if is_packed(m)]

    def _one_patch_per_weight(self):
        for module in self._quantized_layers():
            streamed = {getattr(f, "key", None) for f in module.weight_function}
            module.resident_patches = [p for p in module.resident_patches if p.key not in streamed]

    def load(self, *args, **kwargs):
        result = super().load(*args, **kwargs)
        self._one_patch_per_weight()
        return result

    def partially_unload(self, *args, **kwargs):
        freed = super().partially_unload(*args, **kwargs)
        self._one_patch_per_weight()
        return freed

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        super().unpatch_model(device_to, unpatch_weights)
        if unpatch_weights:
            for module in self._quantized_layers():
                module.resident_patches = ()
