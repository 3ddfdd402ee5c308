"""Weights that don't fit one GPU: the transformer blocks sharded over the ranks with FSDP2 (``fully_shard``).

Each block's parameters are split over all ranks (each holds 1/world of every block) and gathered
just before the block runs, freed right after; the rest of the DiT (patch embedding, AdaLN, caption
projections, output layer: about 1 % of the parameters) stays whole on every rank. The block code is
unchanged (FSDP works through module hooks), so sharding composes with sequence and CFG parallelism,
and the results are the same. Why FSDP2 rather than tensor parallelism: README, "Multi-GPU".
"""

import torch
from torch.distributed.fsdp import fully_shard


def shard_blocks(dit, device):
    """Shard ``dit.transformer_blocks`` over the default process group, onto ``device``; move the rest there.

    Call on every rank with the same (full) DiT, e.g. loaded on the CPU. Returns ``dit``.
    """
    from torch.distributed.device_mesh import init_device_mesh
    import torch.distributed as dist

    device = torch.device(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in dit.transformer_blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=True)
    for name, module in dit.named_children():
        if name != "transformer_blocks":
            module.to(device)
    for _, parameter in dit.named_parameters(recurse=False):
        parameter.data = parameter.data.to(device)
    return dit


def resident_parameter_bytes(dit):
    """Bytes of parameters this rank holds (the local shard of sharded ones)."""
    total = 0
    for parameter in dit.parameters():
        local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
        total += local.numel() * local.element_size()
    return total
