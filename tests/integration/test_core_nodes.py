"""Core ComfyUI nodes acting on the Step-Video MODEL, CONDITIONING and LATENT through a real server, each
checked by what it measurably does (README, "Works with core nodes"). Runs on the embedded small model
(models/stepvideo/stepvideo-tiny), so the clips are real generations, not noise."""

import io
import json
import time

import numpy as np
import pytest
import websocket
from PIL import Image

from harness.client import status_str
from stepvideo_setup import EMBEDDED, EMBEDDED_MERGED, LORA_FILES, saved_latent, text_to_latent_graph
from harness.tiny_checkpoints import TINY_CLIP_WIDTH
from harness.workflow_specs import T2V

PROMPT, OTHER_PROMPT = "a red circle moves to the right", "a blue triangle moves up"
SIZE, STEPS, CFG, SHIFT = 128, 8, 3.0, 5.0


def t2v_graph(model=EMBEDDED, weight_dtype="fp32", steps=STEPS, cfg=CFG, seed=3, text=PROMPT, decode=False):
    """Embedded-model text to video (17 frames at 128 px) saving the LATENT (node "6"; the other node ids:
    stepvideo_setup.text_to_latent_graph), and the decoded frames as images (node "12") if ``decode``."""
    graph = text_to_latent_graph(model, model, model, (SIZE, SIZE, 17), steps, cfg, SHIFT, seed, text,
                                 weight_dtype=weight_dtype, attention="comfy", prefix="core_nodes/latent")
    if decode:
        graph["10"] = {"class_type": "StepVideoVAELoader", "inputs": {"vae_name": model, "dtype": "fp32"}}
        graph["11"] = {"class_type": "StepVideoVAEDecode", "inputs": {"vae": ["10", 0], "samples": ["5", 0],
                                                                      "tiling": "off", "tile_px": 512,
                                                                      "overlap_px": 64}}
        graph["12"] = {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "core_nodes/frame"}}
    return graph


def latent_of(client, graph, timeout=300):
    return saved_latent(client, client.run_prompt(graph, timeout=timeout), "6")


def relative_difference(a, b):
    return float((a - b).norm() / b.norm())


def psnr(a, b):
    """PSNR of two latents, peak = the reference's range."""
    mse = float(((a - b) ** 2).mean())
    return 10 * np.log10(float(b.max() - b.min()) ** 2 / max(mse, 1e-20))


def with_node(graph, node_id, class_type, inputs, model_from="1"):
    """The graph with a MODEL patch node inserted between the loader and the sampler."""
    graph = json.loads(json.dumps(graph))
    graph[node_id] = {"class_type": class_type, "inputs": {"model": [model_from, 0], **inputs}}
    graph["5"]["inputs"]["model"] = [node_id, 0]
    return graph


# ----------------------------------------------------------------------------------------- model patches

@pytest.mark.parametrize("cache", ["EasyCache", "LazyCache"])
def test_step_caches_skip_steps_and_stay_close(cache, comfy_client, embedded_models):
    """EasyCache/LazyCache act through the MODEL's diffusion-model wrappers: with them the sampler reuses cached
    predictions on some of 20 steps (the result changes; an idle cache would give the same latent bit for bit)
    and stays close to the uncached result."""
    plain = t2v_graph(steps=20)
    cached = with_node(plain, "20", cache, {"reuse_threshold": 0.05, "start_percent": 0.15, "end_percent": 0.95,
                                             "verbose": False})
    reference, approximate = latent_of(comfy_client, plain), latent_of(comfy_client, cached)
    change = relative_difference(approximate, reference)
    print(f"{cache}: relative change {change:.4f}, PSNR {psnr(approximate, reference):.1f} dB")
    assert change > 1e-4, f"{cache} changed nothing: no step was skipped"
    assert change < 0.2 and psnr(approximate, reference) > 20


def test_skip_layer_guidance_reaches_the_blocks(comfy_client, embedded_models):
    """SkipLayerGuidanceDiT replaces the named blocks in its extra guidance pass: naming a block of the model
    changes the result; naming one it does not have leaves it as it was (the other passes are untouched)."""
    plain = t2v_graph()
    slg = {"single_layers": "", "scale": 3.0, "start_percent": 0.0, "end_percent": 1.0, "rescaling_scale": 0.0}
    reference = latent_of(comfy_client, plain)
    skipped = latent_of(comfy_client, with_node(plain, "20", "SkipLayerGuidanceDiT", {"double_layers": "2", **slg}))
    absent = latent_of(comfy_client, with_node(plain, "20", "SkipLayerGuidanceDiT", {"double_layers": "99", **slg}))
    assert relative_difference(skipped, reference) > 1e-3
    assert relative_difference(absent, reference) < 1e-5  # its extra pass runs alone, not batched: rounding only


@pytest.mark.parametrize("style", sorted(LORA_FILES))
def test_lora_equals_its_merged_weights(style, comfy_client, embedded_models):
    """LoraLoaderModelOnly with one LoRA for the embedded DiT, in ComfyUI's, diffusers/PEFT's and kohya's key
    formats: the patched model samples what a checkpoint with W + alpha / rank * up @ down merged samples."""
    merged = latent_of(comfy_client, t2v_graph(model=EMBEDDED_MERGED))
    patched = latent_of(comfy_client, with_node(t2v_graph(), "20", "LoraLoaderModelOnly",
                                                {"lora_name": LORA_FILES[style], "strength_model": 1.0}))
    plain = latent_of(comfy_client, t2v_graph())
    assert relative_difference(patched, merged) < 1e-4
    assert relative_difference(plain, merged) > 1e-2  # the LoRA matters


# ------------------------------------------------------------------------------------------------ previews

def preview_images(message):
    """The image in a binary websocket message (any preview event format: the image is found by its signature)."""
    for signature in (b"\xff\xd8\xff", b"\x89PNG"):
        start = message.find(signature)
        if start >= 0:
            return Image.open(io.BytesIO(message[start:])).convert("RGB")
    return None


def test_live_previews_arrive_and_resemble_the_decoded_frames(comfy_host, comfy_client, embedded_models):
    """With previews on (--preview-method auto), the sampler sends a preview per step over the websocket, from
    the latent -> RGB map fitted to the model's VAE. The last one, scaled to the latent grid (one colour per
    16 x 16 pixels), matches the first decoded frame at that scale: its mean error is under half that of the
    frame's mean colour everywhere (so it shows where the shape is, not only the average colour)."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{comfy_host.port}/ws?clientId={comfy_client.client_id}",
                                     timeout=5)
    try:
        graph = t2v_graph(decode=True, seed=11)
        prompt_id = comfy_client.queue_prompt(graph)
        previews, deadline = [], time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                message = ws.recv()
            except websocket.WebSocketTimeoutException:
                message = None
            if isinstance(message, bytes) and preview_images(message) is not None:
                previews.append(preview_images(message))
            elif isinstance(message, str):
                event = json.loads(message)
                data = event.get("data", {})
                if event.get("type") == "executing" and data.get("node") is None and \
                        data.get("prompt_id") == prompt_id:
                    break
            if message is None and prompt_id in comfy_client.history(prompt_id):
                break
    finally:
        ws.close()
    entry = comfy_client.wait_for_history(prompt_id, timeout=60)
    assert status_str(entry) == "success", entry["status"]
    assert len(previews) >= STEPS // 2, f"{len(previews)} previews for {STEPS} steps"
    frames = sorted(comfy_client.output_files(entry, "12"), key=lambda f: f["filename"])
    first = Image.open(io.BytesIO(comfy_client.fetch_output(frames[0]))).convert("RGB")
    cells = SIZE // 16
    decoded = np.asarray(first.resize((cells, cells), Image.BOX), dtype=np.float32) / 255
    preview = np.asarray(previews[-1].resize((cells, cells), Image.BOX), dtype=np.float32) / 255
    error = float(np.abs(preview - decoded).mean())
    flat = float(np.abs(decoded.mean(axis=(0, 1)) - decoded).mean())
    print(f"{len(previews)} previews; last preview vs first frame at {cells}x{cells}: mean error {error:.4f}, "
          f"mean-colour image {flat:.4f}")
    assert error < 0.5 * flat


# ------------------------------------------------------------------------------------------- conditioning

def conditioning_graph(positive, negative, cfg=CFG, seed=3):
    """t2v_graph with the sampler's CONDITIONINGs made by extra nodes: positive/negative are (graph additions,
    output link); node "3" encodes PROMPT, node "30" encodes OTHER_PROMPT."""
    graph = t2v_graph(cfg=cfg, seed=seed)
    graph["30"] = {"class_type": "StepVideoTextEncode", "inputs": {"text_encoder": ["2", 0], "prompt": OTHER_PROMPT,
                                                                   "negative_prompt": "", "magic": "none"}}
    for extra, link, slot in ((positive[0], positive[1], "positive"), (negative[0], negative[1], "negative")):
        graph.update(extra)
        graph["5"]["inputs"][slot] = link
    return graph


def node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


A, A_NEG, B = ["3", 0], ["3", 1], ["30", 0]


def test_conditioning_zero_out_zeroes_both_encoders(comfy_client, embedded_models):
    """ZeroOut on both prompts means no text on both sides (zero CLIP states, no Step-LLM token, whatever the
    prompts' lengths), so CFG has nothing to amplify and every guidance scale gives the same clip."""
    zero = {"40": node("ConditioningZeroOut", conditioning=A), "41": node("ConditioningZeroOut", conditioning=A_NEG)}
    at = {cfg: latent_of(comfy_client, conditioning_graph(({**zero}, ["40", 0]), ({}, ["41", 0]), cfg=cfg))
          for cfg in (1.0, 5.0)}
    assert relative_difference(at[5.0], at[1.0]) < 1e-5
    assert relative_difference(at[1.0], latent_of(comfy_client, t2v_graph(cfg=1.0))) > 1e-2


def test_conditioning_concat_appends_only_the_valid_tokens(comfy_client, embedded_models):
    """Concat(A, B) attends to both prompts' valid Step-LLM tokens (different from A); Concat(A, ZeroOut(B))
    appends only padding, so it samples exactly A."""
    plain = latent_of(comfy_client, t2v_graph())
    both = {"40": node("ConditioningConcat", conditioning_to=A, conditioning_from=B)}
    padding = {"41": node("ConditioningZeroOut", conditioning=B),
               "40": node("ConditioningConcat", conditioning_to=A, conditioning_from=["41", 0])}
    concatenated = latent_of(comfy_client, conditioning_graph((both, ["40", 0]), ({}, A_NEG)))
    padded = latent_of(comfy_client, conditioning_graph((padding, ["40", 0]), ({}, A_NEG)))
    assert relative_difference(padded, plain) < 1e-5
    assert relative_difference(concatenated, plain) > 1e-2


def test_conditioning_combine_and_timestep_ranges(comfy_client, embedded_models):
    """Combine(A, A) averages two equal predictions (= A); SetTimestepRange(A, 0, 1) is A; A on the first half of
    the schedule combined with B on the second half is neither A nor B."""
    plain = latent_of(comfy_client, t2v_graph())
    other = latent_of(comfy_client, conditioning_graph(({}, B), ({}, A_NEG)))
    same = {"40": node("ConditioningCombine", conditioning_1=A, conditioning_2=A)}
    full = {"40": node("ConditioningSetTimestepRange", conditioning=A, start=0.0, end=1.0)}
    halves = {"41": node("ConditioningSetTimestepRange", conditioning=A, start=0.0, end=0.5),
              "42": node("ConditioningSetTimestepRange", conditioning=B, start=0.5, end=1.0),
              "40": node("ConditioningCombine", conditioning_1=["41", 0], conditioning_2=["42", 0])}
    assert relative_difference(latent_of(comfy_client, conditioning_graph((same, ["40", 0]), ({}, A_NEG))),
                               plain) < 1e-5
    assert relative_difference(latent_of(comfy_client, conditioning_graph((full, ["40", 0]), ({}, A_NEG))),
                               plain) < 1e-5
    mixed = latent_of(comfy_client, conditioning_graph((halves, ["40", 0]), ({}, A_NEG)))
    assert relative_difference(mixed, plain) > 1e-2 and relative_difference(mixed, other) > 1e-2


def failure_message(client, graph):
    entry = client.wait_for_history(client.queue_prompt(graph), timeout=300)
    assert status_str(entry) == "error", entry["status"]
    errors = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    assert errors, entry["status"]
    return errors[0]["exception_message"]


def test_foreign_conditioning_is_refused_naming_the_expected_widths(comfy_client, stepvideo_models, embedded_models):
    """The embedded model's text encoder feeding the tiny test DiT, whose CLIP branch is narrower: a clear
    error naming what the DiT expects, and the server keeps serving."""
    graph = t2v_graph()
    graph["1"]["inputs"]["model_name"] = T2V
    message = failure_message(comfy_client, graph)
    assert "HunyuanCLIP states" in message and f"(1, 77, {TINY_CLIP_WIDTH})" in message, message
    assert latent_of(comfy_client, t2v_graph()).ndim == 5


@pytest.mark.parametrize("consumer", ["StepVideoSampler", "StepVideoVAEDecode"])
def test_an_image_latent_is_refused_naming_the_node_to_use(consumer, comfy_client, embedded_models):
    graph = t2v_graph(decode=consumer == "StepVideoVAEDecode")
    graph["4"] = node("EmptyLatentImage", width=SIZE, height=SIZE, batch_size=1)
    if consumer == "StepVideoVAEDecode":
        graph["11"]["inputs"]["samples"] = ["4", 0]
        del graph["6"], graph["5"]
    message = failure_message(comfy_client, graph)
    assert "StepVideo Empty Latent" in message and "4-D" in message, message
