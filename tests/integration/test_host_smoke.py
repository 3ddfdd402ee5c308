"""The real ComfyUI host works with the pack installed: startup, import, /prompt, /history, /view, errors,
/interrupt, model folders. Core nodes only, so this holds whatever the pack's nodes are."""

import io
import json
import os
import time
import uuid

import pytest
from PIL import Image

from harness.client import HostError, PromptRejected, status_messages, status_str
from harness import REPO
from harness.server import ComfyHost


def test_server_is_up_on_cpu(comfy_host, comfy_client):
    stats = comfy_client.system_stats()
    assert stats["system"]["comfyui_version"], stats
    assert [d["type"] for d in stats["devices"]] == ["cpu"], stats["devices"]
    assert comfy_host.startup_seconds < 120
    print(f"ComfyUI {stats['system']['comfyui_version']} ready in {comfy_host.startup_seconds:.1f} s")


def workflow_node_types():
    """The StepVideo node types the shipped workflows use."""
    folder = os.path.join(REPO, "workflows", "api")
    types = set()
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            types |= {node["class_type"] for node in json.load(f).values()}
    return {t for t in types if t.startswith("StepVideo")}


def test_pack_loads_and_serves_its_node_definitions(comfy_host):
    nodes = comfy_host.assert_pack_loaded()
    assert workflow_node_types() <= set(nodes), sorted(workflow_node_types() - set(nodes))
    for name, info in nodes.items():
        assert info["name"] == name
        assert info["display_name"] and info["category"], info
        assert isinstance(info["input"].get("required", {}), dict), info
        assert len(info["output"]) == len(info["output_name"]), info
        assert info == comfy_host.client.object_info(name)


def test_a_pack_that_fails_to_import_is_caught_through_the_api(tmp_path):
    """The check above judges the pack by what /object_info serves, so a pack whose import raises is caught on
    any host version, whatever its log says."""
    broken = tmp_path / "broken_pack"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise RuntimeError('boom from the pack')\n")
    host = ComfyHost(base_dir=str(tmp_path / "base"), log_path=str(tmp_path / "server.log"), pack_dir=str(broken))
    with host:
        with pytest.raises(HostError, match="serves no nodes"):
            host.assert_pack_loaded()
        assert host.client.object_info("EmptyImage")  # the server itself is fine


def empty_image_prompt(width, height, batch, color, prefix):
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": width, "height": height, "batch_size": batch, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def test_core_workflow_runs_and_outputs_decode(comfy_client):
    prefix = "smoke_" + uuid.uuid4().hex[:8]
    prompt = empty_image_prompt(72, 40, 2, 0x00FF00, prefix)
    workflow = {"note": "stand-in for the UI graph", "id": prefix}
    prompt_id = comfy_client.queue_prompt(prompt, workflow=workflow)
    entry = comfy_client.wait_for_history(prompt_id, timeout=60)

    assert status_str(entry) == "success", entry["status"]
    assert "execution_success" in status_messages(entry)
    files = comfy_client.output_files(entry, node_id="2")
    assert [f["type"] for f in files] == ["output", "output"], entry["outputs"]
    assert all(f["filename"].startswith(prefix) for f in files)
    for f in files:
        image = Image.open(io.BytesIO(comfy_client.fetch_output(f)))
        assert image.format == "PNG" and image.size == (72, 40)
        assert image.convert("RGB").getpixel((10, 10)) == (0, 255, 0)
        # SaveImage embeds the API prompt and the extra_pnginfo workflow
        assert json.loads(image.text["prompt"]) == prompt
        assert json.loads(image.text["workflow"]) == workflow


@pytest.mark.parametrize("case, prompt, node, input_name", [
    ("missing input", {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}, "1", "images"),
    ("below min", empty_image_prompt(0, 8, 1, 0, "x"), "1", "width"),
    ("wrong link", {**empty_image_prompt(8, 8, 1, 0, "x"),
                    "2": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "x"}}},
     "2", None),
])
def test_invalid_prompt_is_rejected_with_node_errors(comfy_client, case, prompt, node, input_name):
    with pytest.raises(PromptRejected) as info:
        comfy_client.queue_prompt(prompt)
    rejected = info.value
    assert rejected.status == 400, rejected.response
    assert rejected.error and node in rejected.node_errors, rejected.response
    assert rejected.node_errors[node]["errors"], rejected.response
    if input_name:  # the errors say which input is wrong (wherever in its details a host version puts it)
        assert input_name in json.dumps(rejected.node_errors[node]["errors"]), rejected.response


@pytest.mark.parametrize("prompt", [
    {"1": {"class_type": "NoSuchNodeAnywhere", "inputs": {}}},
    {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}},
])
def test_unusable_prompt_is_rejected(comfy_client, prompt):
    with pytest.raises(PromptRejected) as info:
        comfy_client.queue_prompt(prompt)
    assert info.value.status == 400 and info.value.error, info.value.response
    assert info.value.node_errors == {}


def blur_chain(length, size=1024):
    """EmptyImage -> `length` x ImageBlur(radius 31) -> tiny PreviewImage: ~1-2 s per blur on 2 CPU cores."""
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                          "color": uuid.uuid4().int % 0xFFFFFF}}}
    previous = "1"
    for i in range(length):
        prompt[str(10 + i)] = {"class_type": "ImageBlur",
                               "inputs": {"image": [previous, 0], "blur_radius": 31, "sigma": 5.0}}
        previous = str(10 + i)
    prompt["900"] = {"class_type": "ImageScale", "inputs": {"image": [previous, 0], "upscale_method": "nearest-exact",
                                                           "width": 8, "height": 8, "crop": "disabled"}}
    prompt["901"] = {"class_type": "PreviewImage", "inputs": {"images": ["900", 0]}}
    return prompt


def test_interrupt_stops_a_running_core_job(comfy_client):
    """POST /interrupt stops a long job between nodes; the server then runs the next prompt normally.

    Core nodes without models only check the interrupt flag between nodes, so this is a chain of slow
    blurs; the in-node check of our own sampler needs its own test."""
    length = 15
    prompt = blur_chain(length)
    prompt_id = comfy_client.queue_prompt(prompt)
    comfy_client.wait_until_running(prompt_id, timeout=60)
    time.sleep(1.0)
    t0 = time.monotonic()
    comfy_client.interrupt()
    entry = comfy_client.wait_for_history(prompt_id, timeout=60)
    stopped_after = time.monotonic() - t0

    assert status_str(entry) == "error", entry["status"]
    messages = dict((kind, data) for kind, data in entry["status"]["messages"])
    assert "execution_interrupted" in messages, entry["status"]
    executed = set(messages["execution_interrupted"]["executed"])
    assert len(executed) < len(prompt) - 2, f"executed {sorted(executed)} of {sorted(prompt)}"
    assert "901" not in executed and entry["outputs"] == {}
    assert stopped_after < 20, f"the interrupt took {stopped_after:.1f} s to take effect"

    # the server is fine afterwards
    entry = comfy_client.run_prompt(empty_image_prompt(8, 8, 1, 0, "after_interrupt"), timeout=60)
    assert status_str(entry) == "success"


def test_models_prepared_before_start_are_listed(comfy_client, smoke_model_file):
    folder, name = smoke_model_file
    assert folder in comfy_client.models()
    assert name in comfy_client.models(folder)
    spec = comfy_client.object_info("CheckpointLoaderSimple")["input"]["required"]["ckpt_name"]
    choices = spec[0] if isinstance(spec[0], list) else spec[1]["options"]  # V1 combo / COMBO type
    assert name in choices
