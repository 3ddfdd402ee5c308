"""Every shipped workflow, queued on the real ComfyUI server through POST /prompt with the tiny
official-layout checkpoints, outputs fetched through /view and decoded."""

import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from harness.workflow_specs import render_workflow_files
from harness.client import PromptRejected, status_str
from stepvideo_pack.media.mp4 import read_mp4_frames, read_mp4_metadata
from stepvideo_pack.samplers.flow_schedule import partial_noise_levels
from stepvideo_setup import BROKEN, CLEAN_CONTEXT, HEIGHT, MISSING_SHARD, WIDTH, saved_latent, shrink
from harness.workflow_specs import T2V, TURBO

WORKFLOWS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "workflows")
# workflow -> frames of the saved video with the sizes of stepvideo_setup.SMALL (clips are 34 frames)
EXPECTED_FRAMES = {"text_to_video": 17, "text_to_video_embedded": 17, "text_to_video_turbo": 17, "ksampler_text_to_video": 17,
                   "image_to_video": 17, "extend_video": 34 + 17, "long_video": 68,
                   "interpolate_keyframes": 35, "bridge_clips": 34 + 17 + 34, "sdedit_video": 34,
                   "decode_saved_latent": 17}


def load_workflow(name, api):
    path = os.path.join(WORKFLOWS, "api" if api else "", name + ".json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def shipped_names():
    return sorted(n[:-5] for n in os.listdir(os.path.join(WORKFLOWS, "api")) if n.endswith(".json"))


def outputs_of_type(entry, suffix):
    return [f for files in entry["outputs"].values() for f in files.get("images", [])
            if f["filename"].endswith(suffix)]


def test_every_workflow_exists_in_both_formats_and_matches_the_specs(comfy_client):
    names = shipped_names()
    assert set(EXPECTED_FRAMES) | {"text_to_image"} == set(names)
    assert sorted(n[:-5] for n in os.listdir(WORKFLOWS) if n.endswith(".json")) == names
    regenerated = render_workflow_files(comfy_client.object_info())
    for relative, text in regenerated.items():
        with open(os.path.join(WORKFLOWS, relative), encoding="utf-8") as f:
            assert f.read() == text, f"workflows/{relative} is stale: run scripts/build_workflows.py"


@pytest.mark.parametrize("name", sorted(EXPECTED_FRAMES))
def test_video_workflow_runs_and_saves_a_playable_mp4(name, comfy_client, stepvideo_models, stepvideo_inputs):
    prompt, workflow = shrink(load_workflow(name, api=True)), load_workflow(name, api=False)
    entry = comfy_client.run_prompt(prompt, workflow=workflow, timeout=600)
    assert status_str(entry) == "success"
    videos = outputs_of_type(entry, ".mp4")
    assert len(videos) == 1, entry["outputs"]
    data = comfy_client.fetch_output(videos[0])
    with open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"stepvideo_{name}.mp4"), "wb") as f:
        f.write(data)
        path = f.name
    frames, fps = read_mp4_frames(path)
    assert frames.shape == (EXPECTED_FRAMES[name], HEIGHT, WIDTH, 3)
    assert fps == 25.0 and frames.std() > 0  # not a blank video
    tags = read_mp4_metadata(path)
    assert json.loads(tags["workflow"]) == workflow  # drag the MP4 back in -> this graph
    assert {n["class_type"] for n in json.loads(tags["prompt"]).values()} == \
        {n["class_type"] for n in prompt.values()}


def test_text_to_image_saves_one_png(comfy_client, stepvideo_models):
    entry = comfy_client.run_prompt(shrink(load_workflow("text_to_image", api=True)), timeout=300)
    pngs = outputs_of_type(entry, ".png")
    assert len(pngs) == 1
    image = Image.open(io.BytesIO(comfy_client.fetch_output(pngs[0])))
    assert image.size == (WIDTH, HEIGHT)


def _sampler_prompt(sampler):
    """text_to_video with the sampler replaced by ``sampler`` ('ours' or 'ksampler'), saving the latent."""
    prompt = shrink(load_workflow("text_to_video", api=True))
    node = next(k for k, v in prompt.items() if v["class_type"] == "StepVideoSampler")
    if sampler == "ksampler":
        old = prompt[node]["inputs"]
        prompt["90"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": old["model"], "shift": 13.0}}
        prompt[node] = {"class_type": "KSampler", "inputs": {
            "model": ["90", 0], "seed": old["seed"], "steps": 10, "cfg": old["cfg"], "sampler_name": "euler",
            "scheduler": "simple", "positive": old["positive"], "negative": old["negative"],
            "latent_image": old["latent"], "denoise": 1.0}}
    else:
        prompt[node]["inputs"]["steps"] = 10
    keep = {k: v for k, v in prompt.items() if v["class_type"] not in ("StepVideoVAEDecode", "StepVideoSaveVideo")}
    return keep, next(k for k, v in keep.items() if v["class_type"] == "SaveLatent")


def test_stock_ksampler_on_our_model_matches_the_official_sampler(comfy_client, stepvideo_models):
    latents = {}
    for sampler in ("ours", "ksampler"):
        prompt, save_node = _sampler_prompt(sampler)
        latents[sampler] = saved_latent(comfy_client, comfy_client.run_prompt(prompt, timeout=300), save_node)
    ours, stock = latents["ours"], latents["ksampler"]
    assert ours.shape == stock.shape == (1, 16, 3, HEIGHT // 16, WIDTH // 16)
    # euler/simple with shift 13 and 10 steps is the official schedule exactly: same result up to rounding
    assert float((ours - stock).abs().max()) <= 1e-3 * max(1.0, float(ours.abs().max()))


def test_guidance_interval_is_cfg_then_the_prompt_alone(comfy_client, stepvideo_models):
    """StepVideo Sampler with cfg_stop_sigma between the 5th and 6th of 10 noise levels against the host's
    stock nodes doing the same in two runs: SamplerCustomAdvanced with CFGGuider at the sampler's CFG on the
    first 5 steps (SplitSigmas), then CFGGuider at CFG 1 on the rest with DisableNoise."""
    sigmas = partial_noise_levels(10, 13.0, 1.0)
    prompt, save_node = _sampler_prompt("ours")
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "StepVideoSampler")
    old = prompt[sampler]["inputs"]
    old["cfg_stop_sigma"] = float(sigmas[4] + sigmas[5]) / 2
    ours = saved_latent(comfy_client, comfy_client.run_prompt(prompt, timeout=300), save_node)

    stock = {k: v for k, v in prompt.items() if k != sampler}
    stock.update({
        "80": {"class_type": "StepVideoScheduler", "inputs": {"steps": 10, "shift": 13.0, "denoise": 1.0}},
        "81": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["80", 0], "step": 5}},
        "82": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "83": {"class_type": "CFGGuider", "inputs": {"model": old["model"], "positive": old["positive"],
                                                     "negative": old["negative"], "cfg": old["cfg"]}},
        "84": {"class_type": "CFGGuider", "inputs": {"model": old["model"], "positive": old["positive"],
                                                     "negative": old["negative"], "cfg": 1.0}},
        "85": {"class_type": "RandomNoise", "inputs": {"noise_seed": old["seed"]}},
        "86": {"class_type": "DisableNoise", "inputs": {}},
        "87": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["85", 0], "guider": ["83", 0],
                                                                 "sampler": ["82", 0], "sigmas": ["81", 0],
                                                                 "latent_image": old["latent"]}},
        sampler: {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["86", 0], "guider": ["84", 0],
                                                                    "sampler": ["82", 0], "sigmas": ["81", 1],
                                                                    "latent_image": ["87", 0]}},
    })
    two_runs = saved_latent(comfy_client, comfy_client.run_prompt(stock, timeout=300), save_node)
    assert float(old["cfg"]) != 1.0 and ours.shape == two_runs.shape
    assert float((ours - two_runs).abs().max()) <= 1e-3 * max(1.0, float(ours.abs().max()))
    prompt[sampler]["inputs"]["cfg_stop_sigma"] = 0.0  # and the interval matters: CFG on every step differs
    every_step = saved_latent(comfy_client, comfy_client.run_prompt(prompt, timeout=300), save_node)
    assert float((ours - every_step).abs().max()) > 1e-2 * float(ours.abs().max())


def _extension_latents(comfy_client, dit_folder):
    """extend_video with the DiT from models/stepvideo/``dit_folder``: (encoded clip, joined) latents."""
    prompt = shrink(load_workflow("extend_video", api=True))
    encode = next(k for k, v in prompt.items() if v["class_type"] == "StepVideoVAEEncode")
    join = next(k for k, v in prompt.items() if v["class_type"] == "StepVideoJoinWindow")
    loader = next(k for k, v in prompt.items() if v["class_type"] == "StepVideoDiTLoader")
    prompt[loader]["inputs"]["model_name"] = dit_folder
    prompt["91"] = {"class_type": "SaveLatent", "inputs": {"samples": [encode, 0], "filename_prefix": "test/clip"}}
    prompt["92"] = {"class_type": "SaveLatent", "inputs": {"samples": [join, 0], "filename_prefix": "test/joined"}}
    entry = comfy_client.run_prompt(prompt, timeout=300)
    return saved_latent(comfy_client, entry, "91"), saved_latent(comfy_client, entry, "92")


def test_extension_keeps_the_encoded_clip_bit_identical(comfy_client, stepvideo_models, stepvideo_inputs):
    clip, joined = _extension_latents(comfy_client, T2V)
    assert clip.shape[2] == 6 and joined.shape[2] == 9
    assert np.array_equal(joined[:, :, :6].numpy(), clip.numpy())


def test_a_checkpoint_trained_with_clean_context_is_sampled_that_way(comfy_client, stepvideo_models,
                                                                     stepvideo_inputs):
    """The same DiT weights, once marked in the safetensors metadata as trained with clean known latents:
    the host's sampler then gives it the known chunk clean, so the new chunk comes out different (an
    unmarked copy of the weights gives the same latents bit for bit), and the clip is kept bit-identical."""
    clip, renoised = _extension_latents(comfy_client, T2V)
    _, same_weights = _extension_latents(comfy_client, TURBO)
    _, clean = _extension_latents(comfy_client, CLEAN_CONTEXT)
    assert np.array_equal(same_weights.numpy(), renoised.numpy())
    assert np.array_equal(clean[:, :, :6].numpy(), clip.numpy())
    change = float((clean[:, :, 6:] - renoised[:, :, 6:]).abs().max())
    assert change > 1e-3 * float(renoised[:, :, 6:].abs().max()), change


def test_missing_shard_is_a_clear_error_in_history(comfy_client, stepvideo_models):
    prompt = shrink(load_workflow("text_to_video", api=True))
    loader = next(k for k, v in prompt.items() if v["class_type"] == "StepVideoDiTLoader")
    prompt[loader]["inputs"]["model_name"] = BROKEN
    entry = comfy_client.wait_for_history(comfy_client.queue_prompt(prompt), timeout=120)
    assert status_str(entry) == "error"
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_type"] == "StepVideoDiTLoader"
    message = errors[0]["exception_message"]
    assert MISSING_SHARD in message and "missing" in message and BROKEN in message


def test_malformed_prompt_gets_the_hosts_400_with_node_errors(comfy_client, stepvideo_models):
    prompt = shrink(load_workflow("text_to_video", api=True))
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "StepVideoSampler")
    del prompt[sampler]["inputs"]["positive"]
    prompt[sampler]["inputs"]["steps"] = 0
    with pytest.raises(PromptRejected) as caught:
        comfy_client.queue_prompt(prompt)
    assert caught.value.status == 400
    errors = json.dumps(caught.value.node_errors[sampler]["errors"])
    assert "positive" in errors and "steps" in errors, errors  # both wrong inputs are named


def test_interrupt_stops_a_long_sampling_run_within_a_step(comfy_client, stepvideo_models):
    prompt = shrink(load_workflow("text_to_video", api=True))
    empty = next(k for k, v in prompt.items() if v["class_type"] == "StepVideoEmptyLatent")
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "StepVideoSampler")
    prompt[empty]["inputs"].update(width=256, height=256, frames=34)
    prompt[sampler]["inputs"]["steps"] = 400
    # time a few steps of the same size first, so "within a step" has a measured meaning
    short = json.loads(json.dumps(prompt))
    short[sampler]["inputs"]["steps"] = 4
    keep = {k: v for k, v in short.items() if v["class_type"] not in ("StepVideoVAEDecode", "StepVideoSaveVideo")}
    start = time.monotonic()
    comfy_client.run_prompt(keep, timeout=300)
    step_seconds = (time.monotonic() - start) / 4  # an upper bound: includes loading and encoding
    prompt_id = comfy_client.queue_prompt(prompt)
    comfy_client.wait_until_running(prompt_id, timeout=120)
    time.sleep(max(1.0, 3 * step_seconds))
    sent = time.monotonic()
    comfy_client.interrupt()
    entry = comfy_client.wait_for_history(prompt_id, timeout=120)
    stopped_after = time.monotonic() - sent
    assert status_str(entry) == "error"
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"])
    assert stopped_after < step_seconds + 2.0, (stopped_after, step_seconds)


def test_pack_serves_its_web_extension_node_docs_and_templates(comfy_client):
    extensions = comfy_client.get_json("/extensions")
    assert any(e.endswith("/ComfyUI-StepVideo/js/stepvideo.js") for e in extensions), extensions
    status, doc = comfy_client.request("GET", "/extensions/ComfyUI-StepVideo/docs/StepVideoKeyframes.md", raw=True)
    assert status == 200 and b"trailing one-latent chunk" in doc
    templates = comfy_client.get_json("/workflow_templates")
    assert set(templates["ComfyUI-StepVideo"]) >= {"text_to_video", "image_to_video", "long_video"}


def test_fp8_weights_memory_options_and_attention_fallback_through_ksampler(comfy_client, stepvideo_models):
    """fp8 storage, token chunking, sequential CFG and flash_attn asked for where it cannot run (no CUDA here:
    the loader falls back to SDPA) through the stock KSampler."""
    reference, save_node = _sampler_prompt("ksampler")
    lean, _ = _sampler_prompt("ksampler")
    loader = next(k for k, v in lean.items() if v["class_type"] == "StepVideoDiTLoader")
    lean[loader]["inputs"].update(weight_dtype="fp8_e4m3fn", attention="flash_attn")
    lean["93"] = {"class_type": "StepVideoMemoryOptions",
                  "inputs": {"model": [loader, 0], "chunk_tokens": 32, "cfg_passes": "sequential"}}
    lean["90"]["inputs"]["model"] = ["93", 0]
    base = saved_latent(comfy_client, comfy_client.run_prompt(reference, timeout=300), save_node)
    small = saved_latent(comfy_client, comfy_client.run_prompt(lean, timeout=300), save_node)
    # fp8 weights (3 mantissa bits) move the result a little; chunking and sequential CFG do not
    assert float((base - small).norm() / base.norm()) < 0.1
