#!/usr/bin/env python3
"""Text-to-video over several GPUs without ComfyUI (batch jobs): the same parallel DiT as the node.

    torchrun --nproc-per-node 8 scripts/multigpu_sample.py --model /models/stepvideo-t2v \\
        --prompt "a red fox runs through snow" --cfg-degree 2 --sequence-degree 4 \\
        --width 992 --height 544 --frames 204 --steps 50 --out fox.mp4

--model is an official download folder (transformer/, step_llm/, hunyuan_clip/, vae/). Ranks =
cfg degree x sequence degree = the torchrun world size; rank r uses cuda:LOCAL_RANK (NCCL), or the
CPU with gloo when there is no GPU. Rank 0 encodes the prompts (then frees the text encoders) and
sends the embeddings to every rank; all ranks run the official Euler + CFG loop with the
sequence/CFG-parallel DiT (multigpu/sequence_parallel.py), --shard-weights splits the blocks' weights
over the ranks (FSDP2); rank 0 decodes with the VAE and writes the MP4 and the latents (.latents.safetensors).
"""

import argparse
import os
import time

import torch
import torch.distributed as dist

from pack_path import import_pack  # scripts/pack_path.py: the pack from this folder, whatever its name

import_pack()

from stepvideo_pack.media.mp4 import write_mp4  # noqa: E402
from stepvideo_pack.model_loaders.dit_loader import load_dit  # noqa: E402
from stepvideo_pack.model_loaders.text_encoding import StepVideoTextEncoder, compose_prompts  # noqa: E402
from stepvideo_pack.model_loaders.vae_loader import load_vae  # noqa: E402
from stepvideo_pack.multigpu.cfg_sampling import sample_cfg  # noqa: E402
from stepvideo_pack.multigpu.sequence_parallel import ParallelLayout, parallel_forward  # noqa: E402
from stepvideo_pack.multigpu.sharding import shard_blocks  # noqa: E402
from stepvideo_pack.samplers.video_geometry import SPATIAL, latent_frames  # noqa: E402


def setup_distributed():
    """(device, rank) after init_process_group from torchrun's environment (NCCL on GPUs, gloo on CPU)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank()


def encode_on_rank0(args, device, rank):
    """[cond; uncond] DiT text inputs on every rank (encoded by rank 0, broadcast)."""
    payload = [None]
    if rank == 0:
        encoder = StepVideoTextEncoder(os.path.join(args.model, "step_llm"), os.path.join(args.model, "hunyuan_clip"),
                                       device=device)
        payload[0] = encoder.encode(compose_prompts(args.prompt, args.negative_prompt, use_magic=args.magic)).dit_inputs()
        encoder.unload()
    dist.broadcast_object_list(payload, src=0)
    return payload[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="official folder: transformer/, step_llm/, hunyuan_clip/, vae/")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--no-magic", dest="magic", action="store_false", help="don't append the official magic")
    parser.add_argument("--width", type=int, default=992)
    parser.add_argument("--height", type=int, default=544)
    parser.add_argument("--frames", type=int, default=204)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cfg", type=float, default=9.0)
    parser.add_argument("--shift", type=float, default=13.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cfg-degree", type=int, default=1, choices=(1, 2))
    parser.add_argument("--sequence-degree", type=int, default=None, help="default: world size / cfg degree")
    parser.add_argument("--shard-weights", action="store_true", help="FSDP2: each rank holds 1/N of the blocks")
    parser.add_argument("--chunk-tokens", type=int, default=None, help="blocks over token slices (less memory)")
    parser.add_argument("--out", default="stepvideo.mp4")
    args = parser.parse_args()

    device, rank = setup_distributed()
    world = dist.get_world_size()
    sequence = args.sequence_degree or world // args.cfg_degree
    layout = ParallelLayout.create(args.cfg_degree, sequence)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    text = {k: v.to(device) for k, v in encode_on_rank0(args, device, rank).items()}
    dit = load_dit(os.path.join(args.model, "transformer"), weight_dtype=dtype,
                   device="cpu" if args.shard_weights else device)
    if args.shard_weights:
        shard_blocks(dit, device)
    dit.chunk_tokens = args.chunk_tokens

    shape = (1, latent_frames(args.frames), dit.config.in_channels, args.height // SPATIAL, args.width // SPATIAL)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed)).to(device)  # same on every rank

    def forward(hidden_states, timestep, **inputs):
        return parallel_forward(dit, layout, hidden_states.to(dtype), timestep.to(device), **inputs)

    def progress(step, x, denoised):
        if rank == 0:
            print(f"step {step + 1}/{args.steps}: {time.monotonic() - start:.1f} s", flush=True)

    start = time.monotonic()
    latents = sample_cfg(forward, noise, text, args.steps, args.shift, args.cfg, callback=progress)
    if rank == 0:
        from safetensors.torch import save_file
        save_file({"latents": latents.cpu()}, os.path.splitext(args.out)[0] + ".latents.safetensors")
        del dit
        vae = load_vae(os.path.join(args.model, "vae"), device=device)
        with torch.no_grad():
            video = vae.decode(latents.float())[0]
        write_mp4(args.out, ((video.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1))
        print(f"wrote {args.out} ({world} ranks: cfg {args.cfg_degree} x sequence {sequence}, "
              f"{time.monotonic() - start:.1f} s)")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
