"""Sequence/CFG-parallel DiT (multigpu/sequence_parallel.py) on gloo with spawned CPU processes.

Every DiT case of the parity fixtures and the sampling fixture run at world size 2 and 4 under each
(cfg, sequence) layout, with whole and with FSDP2-sharded blocks; each result must match the official output within the fixture's tolerance and
our single-process result within the same (float32) bound.
"""

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from stepvideo_pack.model_loaders.dit_loader import load_dit
from stepvideo_pack.multigpu.cfg_sampling import sample_cfg
from stepvideo_pack.multigpu.pool import free_port
from stepvideo_pack.multigpu.sequence_parallel import ParallelLayout, parallel_forward
from stepvideo_pack.multigpu.sharding import resident_parameter_bytes, shard_blocks

pytestmark = [pytest.mark.parity, pytest.mark.multigpu]

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "parity")
DIT_FIXTURES = ("dit_t2v_tiny", "dit_ti2v_tiny")
SAMPLE_FIXTURE = "sample_t2v_tiny"
# world size -> (cfg degree, sequence degree, chunk_tokens, blocks sharded with FSDP2)
LAYOUTS = {2: [(1, 2, None, False), (2, 1, None, False), (1, 2, 7, False), (1, 2, None, True)],
           4: [(1, 4, None, False), (2, 2, None, False), (4, 1, None, False), (2, 2, None, True)]}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def cases():
    """(fixture, manifest, case) for every DiT forward case and the sampling case."""
    for name in DIT_FIXTURES + (SAMPLE_FIXTURE,):
        with open(os.path.join(FIXTURES, name, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        for case in manifest["cases"]:
            yield name, manifest, case


def run_case(name, manifest, case, forward_of, shard=False):
    """The case's outputs {name: tensor} with ``forward_of(dit)`` as the DiT call (parallel or not)."""
    folder = os.path.join(FIXTURES, name)
    data = load_file(os.path.join(folder, "data.safetensors"))
    dtype = DTYPES[case["dtype"]]
    inputs = {k: (data[v].to(dtype) if isinstance(v, str) and data[v].is_floating_point() else
                  data[v] if isinstance(v, str) else v) for k, v in case["inputs"].items()}
    dit = load_dit(os.path.join(folder, manifest["checkpoint"]), weight_dtype=dtype)
    if shard:
        full = resident_parameter_bytes(dit)
        shard_blocks(dit, "cpu")
        assert resident_parameter_bytes(dit) < 0.75 * full  # the blocks are split (tiny DiT: most bytes are in them)
    forward = forward_of(dit)
    if case["op"] == "sample":
        text = {k: inputs[k] for k in ("encoder_hidden_states", "encoder_hidden_states_2", "encoder_attention_mask")}
        return {"latents": sample_cfg(forward, inputs["noise"], text, inputs["steps"], inputs["shift"],
                                      inputs["guidance"])}
    return {"out": forward(**inputs)}


def rank_main(rank, world, port, out_dir):
    """One spawned rank: every layout of ``world`` over every case; rank 0 saves the results."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = {}
        for cfg, sequence, chunk, shard in LAYOUTS[world]:
            layout = ParallelLayout.create(cfg, sequence)
            for name, manifest, case in cases():
                outputs = run_case(name, manifest, case, lambda dit: lambda **kw: parallel_forward(
                    dit, layout, chunk_tokens=chunk, **kw), shard)
                for out_name, value in outputs.items():
                    results[f"{cfg}x{sequence}/{chunk}/{'sharded' if shard else 'whole'}|{name}|{case['name']}|{out_name}"] = value.float().contiguous()
        if rank == 0:
            save_file(results, os.path.join(out_dir, "results.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def single_process():
    """Our single-process outputs of every case (the reference the parallel runs must reproduce)."""
    with torch.no_grad():
        return {(name, case["name"], out): value.float()
                for name, manifest, case in cases()
                for out, value in run_case(name, manifest, case, lambda dit: dit).items()}


@pytest.mark.parametrize("world", sorted(LAYOUTS))
def test_parallel_layouts_match_single_process_and_official(world, single_process, tmp_path):
    mp.spawn(rank_main, args=(world, free_port(), str(tmp_path)), nprocs=world, join=True)
    results = load_file(str(tmp_path / "results.safetensors"))
    assert len(results) == len(LAYOUTS[world]) * len(single_process)
    failures = []
    for key, got in results.items():
        layout, name, case_name, out = key.split("|")
        case = next(c for n, _, c in cases() if n == name and c["name"] == case_name)
        expected = load_file(os.path.join(FIXTURES, name, "data.safetensors"))[case["outputs"][out]]
        assert got.shape == expected.shape, key
        official = (got.double() - expected.double()).abs().max().item()
        ours = (got.double() - single_process[(name, case_name, out)].double()).abs().max().item()
        if official > case["atol"] or ours > case["atol"]:
            failures.append(f"{key}: vs official {official:.2e}, vs single process {ours:.2e} (bound {case['atol']:.2e})")
    assert not failures, "\n".join(failures)
