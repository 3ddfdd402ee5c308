"""Block swapping for benchmarks/gpu_check.py, which runs the DiT outside ComfyUI's model management.

Not part of the node pack: inside ComfyUI the host's partial loading streams weights itself.

``BlockSwap(model.transformer_blocks, device, resident=N)`` keeps the first N blocks on the
compute device and the rest in CPU memory (pinned when the device is CUDA): each swapped block is
copied to the device just before it runs and dropped right after, so at most N + 1 blocks occupy
device memory. With ``prefetch`` the next block's copy starts on a side stream while the current one
computes.
"""

import torch


class BlockSwap:
    def __init__(self, blocks, device, resident=0, prefetch=True):
        self.blocks = list(blocks)
        self.device = torch.device(device)
        self.resident = max(0, min(int(resident), len(self.blocks)))
        cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if cuda and prefetch else None
        self._handles = []
        self._staged = {}
        for index, block in enumerate(self.blocks):
            if index < self.resident:
                block.to(self.device)
                continue
            block.to("cpu")
            if cuda:
                for p in block.parameters():
                    p.data = p.data.pin_memory()
            self._handles.append(block.register_forward_pre_hook(self._arrive(index)))
            self._handles.append(block.register_forward_hook(self._leave(index)))

    def swapped(self):
        """Indices of the blocks that live off the device between uses."""
        return list(range(self.resident, len(self.blocks)))

    def _copy_in(self, index):
        block = self.blocks[index]
        tensors = {}
        for name, p in block.named_parameters():
            tensors[name] = p.data.to(self.device, non_blocking=True)
        return tensors

    def _arrive(self, index):
        def hook(block, args):
            tensors = self._staged.pop(index, None)
            if tensors is None:
                tensors = self._copy_in(index)
            elif self.stream is not None:
                torch.cuda.current_stream(self.device).wait_stream(self.stream)
            block._swap_home = {name: p.data for name, p in block.named_parameters()}
            for name, p in block.named_parameters():
                p.data = tensors[name]
            following = index + 1
            if self.stream is not None and following < len(self.blocks) and following >= self.resident:
                with torch.cuda.stream(self.stream):
                    self._staged[following] = self._copy_in(following)
        return hook

    def _leave(self, index):
        def hook(block, args, output):
            for name, p in block.named_parameters():
                p.data = block._swap_home[name]
            del block._swap_home
        return hook

    def remove(self):
        """Detach the hooks and move every block to the device (undo the swapping)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._staged.clear()
        for block in self.blocks:
            block.to(self.device)
