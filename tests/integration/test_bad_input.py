"""Bad or oversized input queued through POST /prompt on the real server (issue 24): it is refused (HTTP 400
or an execution error in /history) with a message naming the input or file, costs no memory where memory
was the defect (the server process's peak RSS, /proc/<pid>/status), and the server serves afterwards."""

import json
import os
import shutil
import struct
import subprocess
import uuid

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from harness.client import PromptRejected, status_str
from harness.peak_rss import PeakGrowth
from stepvideo_setup import saved_latent, shrink
from harness.tiny_checkpoints import TINY_LATENT_CHANNELS
from harness.workflow_specs import T2V

WORKFLOWS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "workflows")
DECODING = ("StepVideoVAEDecode", "StepVideoSaveVideo", "SaveImage")
MIB = 1024 ** 2


# --- helpers ----------------------------------------------------------------------------------------------

def workflow(name):
    """A shipped API workflow at the test sizes, without its decode (the latent is saved)."""
    with open(os.path.join(WORKFLOWS, "api", name + ".json"), encoding="utf-8") as f:
        prompt = shrink(json.load(f))
    return {k: v for k, v in prompt.items() if v["class_type"] not in DECODING}


def node(prompt, class_type):
    return next(k for k, v in prompt.items() if v["class_type"] == class_type)


def run(client, prompt):
    """(history entry) or the PromptRejected of a 400."""
    try:
        return client.wait_for_history(client.queue_prompt(prompt), timeout=240)
    except PromptRejected as rejected:
        return rejected


def refusal(result):
    """(node type or node id, message) of a 400 or an execution error."""
    if isinstance(result, PromptRejected):
        assert result.status == 400, result.response
        errors = result.node_errors or {"": {"class_type": "", "errors": [result.error]}}
        node_id, info = next(iter(errors.items()))
        return info.get("class_type") or node_id, json.dumps(info["errors"])
    assert status_str(result) == "error", result["status"]
    errors = [m[1] for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert errors, result["status"]
    return errors[0]["node_type"], errors[0]["exception_message"]


def assert_serving(client):
    """The server still runs a prompt of the pack's own nodes."""
    prompt = {"1": {"class_type": "StepVideoEmptyLatent", "inputs": {"width": 32, "height": 16, "frames": 1,
                                                                     "batch_size": 1}},
              "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "alive"}}}
    assert status_str(client.wait_for_history(client.queue_prompt(prompt), timeout=60)) == "success"


@pytest.fixture
def model_file(comfy_host):
    """f(folder under models/, name) -> a path there, removed after the test (other tests list the folders)."""
    made = []

    def path(folder, name):
        os.makedirs(os.path.join(comfy_host.models_dir, folder), exist_ok=True)
        made.append(os.path.join(comfy_host.models_dir, folder, name))
        return made[-1]

    yield path
    for item in made:
        if os.path.isdir(item):
            shutil.rmtree(item)
        elif os.path.exists(item):
            os.remove(item)


# --- 1. memory: refuse before allocating ---------------------------------------------------------------

@pytest.mark.parametrize("build", ["empty_latent", "image_to_video"])
def test_a_latent_that_cannot_fit_is_refused_before_allocating(build, comfy_host, comfy_client, stepvideo_models,
                                                               stepvideo_inputs):
    if build == "empty_latent":  # the widgets' maximum: 180 GiB of latent, 17 x that to sample
        prompt = {"1": {"class_type": "StepVideoEmptyLatent", "inputs": {"width": 4096, "height": 4096,
                                                                         "frames": 1020, "batch_size": 64}},
                  "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "huge"}}}
        node_type, shape = "StepVideoEmptyLatent", "[64, 64, 180, 256, 256]"
    else:  # batch 16 at the maximum size: 45 GiB, 17 x that to sample
        prompt = workflow("image_to_video")
        prompt[node(prompt, "StepVideoImageToVideo")]["inputs"].update(width=4096, height=4096, frames=1020,
                                                                        batch_size=16)
        node_type, shape = "StepVideoImageToVideo", "[16, "
    with PeakGrowth(comfy_host.proc.pid) as rss:
        found, message = refusal(run(comfy_client, prompt))
    assert found == node_type and shape in message and " fit" in message and "GiB" in message, message
    assert rss.growth < 256 * MIB, f"refusing took {rss.growth / MIB:.0f} MiB"
    assert_serving(comfy_client)


def test_an_extreme_image_into_image_to_video_costs_only_the_output(comfy_host, comfy_client, stepvideo_models):
    name = f"strip_{uuid.uuid4().hex[:6]}.png"
    Image.fromarray(np.full((2, 8000, 3), 200, np.uint8)).save(os.path.join(comfy_host.input_dir, name))
    prompt = workflow("image_to_video")
    prompt[node(prompt, "LoadImage")]["inputs"]["image"] = name
    prompt[node(prompt, "StepVideoImageToVideo")]["inputs"].update(width=256, height=256, frames=17)
    prompt[node(prompt, "StepVideoSampler")]["inputs"]["steps"] = 1
    comfy_client.run_prompt(workflow("image_to_video"), timeout=240)  # models loaded and prompts cached first
    with PeakGrowth(comfy_host.proc.pid) as rss:
        entry = comfy_client.run_prompt(prompt, timeout=240)
    assert tuple(saved_latent(comfy_client, entry).shape[2:]) == (3, 16, 16)
    print(f"2x8000 PNG -> 256x256 Image To Video: server peak RSS growth {rss.growth / MIB:.0f} MiB")
    assert rss.growth < 600 * MIB, f"{rss.growth / MIB:.0f} MiB (resize-then-crop took about 3 GiB)"


# --- 3. video files ---------------------------------------------------------------------------------------

def load_video_prompt(video, skip, limit):
    return {"1": {"class_type": "StepVideoLoadVideo", "inputs": {"video": video, "skip_frames": skip,
                                                                 "frame_limit": limit}},
            "2": {"class_type": "StepVideoSaveVideo", "inputs": {"images": ["1", 0], "fps": 25.0, "crf": 30,
                                                                 "filename_prefix": "part"}}}


def test_load_video_decodes_only_the_frames_asked_for(comfy_host, comfy_client):
    name = "long_clip.mp4"
    path = os.path.join(comfy_host.input_dir, name)
    if not os.path.exists(path):  # 1500 frames of 320x320: about 0.9 GiB when every frame was decoded first
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                        "testsrc=size=320x320:rate=25", "-frames:v", "1500", "-c:v", "libx264", "-preset",
                        "ultrafast", "-pix_fmt", "yuv420p", path], check=True)
    with PeakGrowth(comfy_host.proc.pid) as rss:
        entry = comfy_client.run_prompt(load_video_prompt(name, 1400, 17), timeout=120)
    (video,) = comfy_client.output_files(entry)
    data = comfy_client.fetch_output(video)
    frames = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", "-", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                            input=data, capture_output=True, check=True).stdout
    assert len(frames) == 17 * 320 * 320
    print(f"1500-frame clip, 17 frames after 1400: server peak RSS growth {rss.growth / MIB:.0f} MiB")
    assert rss.growth < 200 * MIB, f"{rss.growth / MIB:.0f} MiB"


def test_load_video_offers_the_videos_in_input_as_the_host_lists_them(comfy_host, comfy_client):
    """The same list as the core Load Video node's: by MIME type, so .avi is offered and a .gif (an image) is not."""
    names = {"listed_clip.webm": True, "listed_clip.mkv": True, "listed_clip.avi": True, "listed_anim.gif": False,
             "listed_still.png": False, "listed_notes.txt": False}
    for name in names:
        open(os.path.join(comfy_host.input_dir, name), "wb").close()
    offered = comfy_client.object_info("StepVideoLoadVideo")["input"]["required"]["video"][0]
    assert {name for name in names if name in offered} == {name for name, video in names.items() if video}, offered


def test_a_file_that_is_not_a_video_gets_one_clear_line(comfy_host, comfy_client):
    name = "notes_not_a_video.mp4"
    with open(os.path.join(comfy_host.input_dir, name), "w", encoding="utf-8") as f:
        f.write("shopping list: milk, eggs\n" * 50)
    found, message = refusal(run(comfy_client, load_video_prompt(name, 0, 0)))
    assert found == "StepVideoLoadVideo" and name in message and "is not a video" in message, message
    assert "\n" not in message.strip() and "ffmpeg version" not in message and len(message) < 400, message
    assert_serving(comfy_client)


# --- 4. non-finite numbers --------------------------------------------------------------------------------

@pytest.mark.parametrize("class_type, name", [("StepVideoSampler", "cfg"), ("StepVideoSampler", "shift"),
                                              ("StepVideoSampler", "denoise"), ("StepVideoDiTLoader", "shift")])
def test_a_nan_number_is_refused_naming_the_input(comfy_client, stepvideo_models, class_type, name):
    prompt = workflow("text_to_video")
    prompt[node(prompt, class_type)]["inputs"][name] = float("nan")  # JSON NaN passes the host's min/max
    found, message = refusal(run(comfy_client, prompt))
    assert class_type in found or found == node(prompt, class_type), (found, message)
    assert name in message and ("finite" in message or "nan" in message.lower()), message
    assert_serving(comfy_client)


def test_a_latent_holding_nan_is_refused_naming_it(comfy_host, comfy_client, stepvideo_models):
    name = "nan_video.latent"
    latent = torch.zeros(1, TINY_LATENT_CHANNELS, 3, 4, 6)
    latent[0, 0, 0, 0, 0] = float("nan")
    save_file({"latent_tensor": latent, "latent_format_version_0": torch.tensor([])},
              os.path.join(comfy_host.input_dir, name))
    prompt = workflow("text_to_video")
    prompt["90"] = {"class_type": "LoadLatent", "inputs": {"latent": name}}
    prompt[node(prompt, "StepVideoSampler")]["inputs"]["latent"] = ["90", 0]
    found, message = refusal(run(comfy_client, prompt))
    assert found == "StepVideoSampler" and "latent" in message and "NaN" in message, message


# --- 5. weight files --------------------------------------------------------------------------------------

def test_a_shard_index_pointing_outside_its_folder_is_refused(comfy_client, model_file):
    folder = os.path.join(model_file("stepvideo", "stepvideo-escaping-index"), "transformer")
    os.makedirs(folder)
    index = os.path.join(folder, "diffusion_pytorch_model.safetensors.index.json")
    with open(index, "w", encoding="utf-8") as f:
        json.dump({"weight_map": {"pos_embed.proj.weight": "../../../../../../../../../etc/passwd"}}, f)
    prompt = workflow("text_to_video")
    prompt[node(prompt, "StepVideoDiTLoader")]["inputs"]["model_name"] = "stepvideo-escaping-index"
    found, message = refusal(run(comfy_client, prompt))
    assert found == "StepVideoDiTLoader" and index in message and "outside" in message, message
    assert "root:" not in message
    assert_serving(comfy_client)


def test_a_malformed_safetensors_header_names_the_file(comfy_client, stepvideo_models, model_file):
    path = model_file("vae", "malformed_header.safetensors")
    header = json.dumps({"decoder.conv_in.conv.weight": {"dtype": "F32", "shape": [1]}}).encode()  # no offsets
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    prompt = workflow("text_to_video")
    prompt[node(prompt, "StepVideoVAELoader")]["inputs"]["vae_name"] = "malformed_header.safetensors"
    prompt["91"] = {"class_type": "StepVideoVAEDecode", "inputs": {
        "vae": [node(prompt, "StepVideoVAELoader"), 0], "samples": [node(prompt, "StepVideoSampler"), 0],
        "tiling": "auto", "tile_px": 512, "overlap_px": 64}}
    prompt["92"] = {"class_type": "StepVideoSaveVideo", "inputs": {"images": ["91", 0], "fps": 25.0, "crf": 30,
                                                                   "filename_prefix": "never"}}
    found, message = refusal(run(comfy_client, prompt))
    assert found == "StepVideoVAELoader" and path in message and "malformed safetensors header" in message, message


def test_a_hunyuan_clip_in_the_step_llm_slot_is_named_as_what_it_is(comfy_client, stepvideo_models, model_file):
    path = model_file("text_encoders", "clip_in_the_llm_slot.safetensors")
    clip = os.path.join(stepvideo_models[T2V], "hunyuan_clip", "clip_text_encoder", "pytorch_model.bin")
    save_file({k: v.contiguous() for k, v in torch.load(clip, weights_only=True).items()}, path)
    prompt = workflow("text_to_video")
    prompt[node(prompt, "StepVideoTextEncoderLoader")]["inputs"]["step_llm"] = os.path.basename(path)
    found, message = refusal(run(comfy_client, prompt))
    assert path in message and "not a Step-LLM" in message and "looks like a HunyuanCLIP" in message, message


# --- 6. the embedding cache -------------------------------------------------------------------------------

def test_cache_entries_that_do_not_fit_are_recomputed_and_odd_prompts_encode(comfy_host, comfy_client,
                                                                             stepvideo_models):
    cache = os.path.join(comfy_host.user_dir, "stepvideo", "embeddings")
    prompt = workflow("text_to_video")
    encode, loader = node(prompt, "StepVideoTextEncode"), node(prompt, "StepVideoTextEncoderLoader")
    prompt[encode]["inputs"]["prompt"] = f"a cat {uuid.uuid4().hex}"
    prompt[node(prompt, "StepVideoSampler")]["inputs"]["steps"] = 1
    def stamps():
        names = os.listdir(cache) if os.path.isdir(cache) else []
        return {n: os.stat(os.path.join(cache, n)).st_mtime_ns for n in names}

    before = stamps()
    first = saved_latent(comfy_client, comfy_client.run_prompt(prompt))
    fresh = [os.path.join(cache, n) for n, stamp in stamps().items() if before.get(n) != stamp]
    assert fresh, os.listdir(cache)  # this prompt's entries (and the negative's, if new)
    for path in fresh:  # the right key, tensors of the wrong width
        with safe_open(path, framework="pt") as f:
            metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        tensors["llm_states"] = tensors["llm_states"][:, :7].contiguous()
        save_file(tensors, path, metadata=metadata)
    prompt[loader]["inputs"]["cache_limit_mb"] = 1000  # a new loader output: the host re-runs the encode
    again = saved_latent(comfy_client, comfy_client.run_prompt(prompt))
    assert torch.equal(first, again)
    for path in fresh:
        with safe_open(path, framework="pt") as f:
            assert f.get_slice("llm_states").get_shape()[1] > 7, path  # rewritten by the recomputation
    prompt[encode]["inputs"]["prompt"] = "a lone surrogate \ud800 in the prompt"
    assert status_str(comfy_client.run_prompt(prompt)) == "success"


# --- 7. seeds, 8. sizes -----------------------------------------------------------------------------------

def test_long_video_at_the_largest_seed_finishes_every_window(comfy_client, stepvideo_models):
    prompt = workflow("long_video")
    prompt[node(prompt, "StepVideoLongVideo")]["inputs"].update(seed=2 ** 64 - 1, steps=1, width=32, height=32)
    latent = saved_latent(comfy_client, comfy_client.run_prompt(prompt))
    assert latent.shape[2] == 12 and torch.isfinite(latent).all()  # 68 frames: 4 chunks of 3 latent frames


@pytest.mark.parametrize("class_type", ["StepVideoVAEEncode", "StepVideoSDEdit"])
def test_frames_whose_sides_are_not_multiples_of_16_are_cropped(comfy_host, comfy_client, stepvideo_models,
                                                                class_type):
    name = "odd_size_100x70.png"
    Image.fromarray(np.full((70, 100, 3), 90, np.uint8)).save(os.path.join(comfy_host.input_dir, name))
    inputs = {"vae": ["1", 0], "images": ["2", 0]}
    inputs.update({"tiling": "auto", "tile_px": 512, "overlap_px": 64, "sample_posterior": False, "seed": 0}
                  if class_type == "StepVideoVAEEncode" else {"strength": 0.5, "shift": 13.0})
    prompt = {"1": {"class_type": "StepVideoVAELoader", "inputs": {"vae_name": T2V, "dtype": "auto"}},
              "2": {"class_type": "LoadImage", "inputs": {"image": name}},
              "3": {"class_type": class_type, "inputs": inputs},
              "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "odd"}}}
    latent = saved_latent(comfy_client, comfy_client.run_prompt(prompt))
    assert tuple(latent.shape[2:]) == (1, 70 // 16, 100 // 16)
