"""Pre-quantized files through the real host: listed in the standard model folders, a clip generated from
a GGUF DiT (models/unet/) and a GGUF Step-LLM (models/text_encoders/), a scaled-fp8 DiT close to the
bf16 one, and a LoRA on a quantized DiT computing what the LoRA merged into its weights computes —
through POST /prompt, and through the host's partial-loading (lowvram) paths in the host's own Python."""

import subprocess

import torch

from harness.server import default_comfyui_path, default_python
from quantized_setup import FP8_DIT, GGUF_DIT, GGUF_LLM, LORA, LORA_BASE, MERGED
from stepvideo_setup import HEIGHT, WIDTH, saved_latent, text_to_latent_graph
from harness.workflow_specs import T2V



def text_to_latent(dit, step_llm=T2V, lora=None, seed=5, weight_dtype="default (bf16)", decode=False):
    """An API prompt: encode, (LoRA), sample 3 steps at 64x96x17, save the LATENT (and the MP4 if decode)."""
    prompt = text_to_latent_graph(dit, step_llm, T2V, seed=seed, weight_dtype=weight_dtype,
                                  prefix="StepVideo/quantized")
    if lora is not None:
        prompt["7"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": lora,
                                                                       "strength_model": 1.0}}
        prompt["5"]["inputs"]["model"] = ["7", 0]
    if decode:
        prompt["8"] = {"class_type": "StepVideoVAELoader", "inputs": {"vae_name": T2V, "dtype": "auto"}}
        prompt["9"] = {"class_type": "StepVideoVAEDecode", "inputs": {
            "vae": ["8", 0], "samples": ["5", 0], "tiling": "off", "tile_px": 512, "overlap_px": 64}}
        prompt["10"] = {"class_type": "StepVideoSaveVideo", "inputs": {
            "images": ["9", 0], "fps": 25.0, "crf": 19, "filename_prefix": "StepVideo/quantized"}}
    return prompt


def run(client, prompt):
    """(latent (1, C, T, h, w) float32, history entry)."""
    entry = client.run_prompt(prompt, timeout=600)
    return saved_latent(client, entry, "6").float(), entry


def test_quantized_files_are_listed_in_the_standard_folders(comfy_client, quantized_models):
    info = comfy_client.object_info()
    dit_choices = info["StepVideoDiTLoader"]["input"]["required"]["model_name"][0]
    assert {GGUF_DIT, FP8_DIT, LORA_BASE} <= set(dit_choices)  # models/unet/ and models/diffusion_models/
    assert GGUF_LLM in info["StepVideoTextEncoderLoader"]["input"]["required"]["step_llm"][0]


def test_gguf_dit_and_gguf_step_llm_generate_a_clip(comfy_client, quantized_models, tmp_path):
    from stepvideo_pack.media.mp4 import read_mp4_frames

    latent, entry = run(comfy_client, text_to_latent(GGUF_DIT, step_llm=GGUF_LLM, decode=True))
    assert torch.isfinite(latent).all() and latent.std() > 0
    video = next(f for f in comfy_client.output_files(entry, "10") if f["filename"].endswith(".mp4"))
    path = tmp_path / "quantized.mp4"
    path.write_bytes(comfy_client.fetch_output(video))
    frames, _ = read_mp4_frames(str(path))
    assert frames.shape == (17, HEIGHT, WIDTH, 3) and frames.std() > 0


def test_scaled_fp8_dit_stays_close_to_the_bf16_dit(comfy_client, quantized_models):
    reference, _ = run(comfy_client, text_to_latent(T2V))
    other_seed, _ = run(comfy_client, text_to_latent(T2V, seed=6))
    fp8, _ = run(comfy_client, text_to_latent(FP8_DIT))
    assert (fp8 - reference).norm() < 0.25 * (other_seed - reference).norm()


def test_lora_on_a_quantized_dit_computes_the_merged_weights(comfy_client, quantized_models):
    with_lora, _ = run(comfy_client, text_to_latent(LORA_BASE, lora=LORA))
    merged, _ = run(comfy_client, text_to_latent(MERGED, weight_dtype="fp32"))
    without, _ = run(comfy_client, text_to_latent(LORA_BASE))
    effect = (with_lora - without).norm()
    assert effect > 0.01 * without.norm()  # the LoRA matters (4.5% of the whole latent after 3 steps)
    assert (with_lora - merged).norm() < 1e-3 * effect


HOST_PATHS_PROBE = r"""
import sys, torch
from harness.host_runtime import import_host
comfyui, base, lora_path, merged = sys.argv[1:5]
import_host(comfyui)
import comfy.sd, comfy.utils
from stepvideo_pack.model_loaders.comfy_model import load_stepvideo_model

def forward(patcher):
    dit = patcher.model.diffusion_model
    cfg = dit.config
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg.in_channels, 3, 4, 6, generator=gen)
    context = torch.randn(1, 8, cfg.caption_channels[0], generator=gen)
    clip = torch.randn(1, 5, cfg.caption_channels[1], generator=gen)
    with torch.no_grad():
        return dit(x, torch.tensor([700.0]), context=context, pooled_output=clip, llm_mask=torch.ones(1, 8))

reference = forward(load_stepvideo_model(merged, weight_dtype="fp32"))
patched, _ = comfy.sd.load_lora_for_models(load_stepvideo_model(base), None, comfy.utils.load_torch_file(lora_path),
                                          1.0, 0.0)
cpu = torch.device("cpu")
results = {}
patched.load(cpu, lowvram_model_memory=1, full_load=False)          # every layer streamed: LowVramPatch
results["streamed"] = forward(patched)
patched.unpatch_model(cpu)
patched.load(cpu, full_load=True)                                    # fully loaded: patches kept for call time
results["full"] = forward(patched)
patched.partially_unload(cpu, memory_to_free=1 << 40)                # full -> streamed: no patch applied twice
results["unloaded"] = forward(patched)
patched.unpatch_model(cpu)
plain = forward(patched)                                             # unpatched: the LoRA is gone
scale = float((results["full"] - plain).norm())
for name, out in results.items():
    print(name, float((out - reference).norm()) / scale)
print("lora_effect", scale / float(plain.norm()))
"""


def test_lora_survives_the_hosts_full_and_partial_loading_paths(quantized_models):
    """The host's ModelPatcher (its own Python, no server): streamed, fully loaded and partially unloaded
    layers all compute the merged weights, and unpatching removes the LoRA."""
    result = subprocess.run(
        [default_python(), "-c", HOST_PATHS_PROBE, default_comfyui_path(),
         quantized_models[LORA_BASE], quantized_models[LORA], quantized_models[MERGED]],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    values = dict(line.split() for line in result.stdout.splitlines() if line.split()[0] in
                  ("streamed", "full", "unloaded", "lora_effect"))
    assert float(values["lora_effect"]) > 0.05
    for mode in ("streamed", "full", "unloaded"):
        assert float(values[mode]) < 1e-3, (mode, values)
