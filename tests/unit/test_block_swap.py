"""Block swap (benchmarks/block_swap.py, the GPU benchmark's stand-in for the host's partial loading):
swapped blocks run on a device copy of their weights and keep their home copy between uses.

This machine has no GPU, so the "device copy" is a clone on the CPU; the hooks' choreography (copy
in before the block, run on the copy, restore the home tensors after) is what is checked.
"""

import torch

from benchmarks.block_swap import BlockSwap
from test_dit import dit_inputs
from harness.tiny_checkpoints import TINY_DIT, tiny_dit


class CloningSwap(BlockSwap):
    def _copy_in(self, index):
        return {name: p.data.clone() for name, p in self.blocks[index].named_parameters()}


def test_block_swap_runs_on_copies_gives_the_same_output_and_restores_weights():
    model = tiny_dit(seed=8, dtype=torch.float32)
    inputs = dit_inputs(TINY_DIT)
    with torch.no_grad():
        reference = model(**inputs)
    swap = CloningSwap(model.transformer_blocks, "cpu", resident=1)
    assert swap.swapped() == [1]
    home = model.transformer_blocks[1].ff.net[2].weight.data_ptr()
    resident = model.transformer_blocks[0].ff.net[2].weight.data_ptr()
    seen = []
    for block in model.transformer_blocks:
        block.ff.register_forward_pre_hook(lambda module, args: seen.append(module.net[2].weight.data_ptr()))
    with torch.no_grad():
        out = model(**inputs)
    assert torch.equal(out, reference)
    assert seen[0] == resident and seen[1] != home  # block 1 ran on the copy
    assert model.transformer_blocks[1].ff.net[2].weight.data_ptr() == home  # and got its home copy back
    swap.remove()
    with torch.no_grad():
        assert torch.equal(model(**inputs), reference)
