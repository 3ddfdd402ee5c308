"""The real ComfyUI host works with the pack installed: startup, import, /prompt, /history, /view, errors,
/interrupt, model folders. Core nodes only, so this holds whatever the pack's nodes are."""

import io
import json
import os
import time
import uuid

import pytest
from PIL import Image

from comfy_host import REPO, ComfyHost, HostError, PromptRejected, status_messages, status_str


def test_server_is_up_on_cpu(comfy_host, comfy_client):
    stats = comfy_client.system_stats()
    assert stats["system"]["comfyui_version"], stats
    assert [d["type"] for d in stats["devices"]] == ["cpu"], stats["devices"]
    assert comfy_host.startup_seconds < 120
    print(f"ComfyUI {stats['system']['comfyui_version']} ready in {comfy_host.startup_seconds:.1f} s")


def pack_declares_nodes():
    with open(os.path.join(REPO, "__init__.py"), encoding="utf-8") as f:
        text = f.read()
    return "NODE_CLASS_MAPPINGS" in text or "comfy_entrypoint" in text


def test_pack_imports_without_failure(comfy_host):
    report = comfy_host.pack_import_report()
    assert report["error"] is None, f"the pack raised while ComfyUI imported it:\n{report['error']}"
    assert report["listed"], f"ComfyUI did not try to load the pack; see {comfy_host.log_path}"
    if report["no_nodes"] and not pack_declares_nodes():
        pytest.skip("the pack imports but defines no NODE_CLASS_MAPPINGS/comfy_entrypoint yet "
                    "(ComfyUI lists that as IMPORT FAILED)")
    assert not report["failed"], f"ComfyUI lists the pack as IMPORT FAILED; see {comfy_host.log_path}"


# Lines as ComfyUI 0.3.75 logs them (taken from real logs of a raising pack and of an empty pack).
RAISING_PACK_LOG = """Traceback (most recent call last):
  File "/h/ComfyUI/nodes.py", line 2146, in load_custom_node
    module_spec.loader.exec_module(module)
  File "{base}/custom_nodes/ComfyUI-StepVideo/__init__.py", line 1, in <module>
    raise RuntimeError("boom from the pack")
RuntimeError: boom from the pack

Cannot import {base}/custom_nodes/ComfyUI-StepVideo module for custom nodes: boom from the pack

Import times for custom nodes:
   0.0 seconds: {base}/custom_nodes/ComfyUI-StepVideo-other
   0.0 seconds (IMPORT FAILED): {base}/custom_nodes/ComfyUI-StepVideo
"""
EMPTY_PACK_LOG = """Skip {base}/custom_nodes/ComfyUI-StepVideo module for custom nodes due to the lack of \
NODE_CLASS_MAPPINGS or NODES_LIST (need one).
Import times for custom nodes:
   0.0 seconds (IMPORT FAILED): {base}/custom_nodes/ComfyUI-StepVideo
"""


@pytest.mark.parametrize("log, expected", [
    (RAISING_PACK_LOG, {"listed": True, "failed": True, "no_nodes": False}),
    (EMPTY_PACK_LOG, {"listed": True, "failed": True, "no_nodes": True}),
    ("Import times for custom nodes:\n   0.1 seconds: {base}/custom_nodes/ComfyUI-StepVideo\n",
     {"listed": True, "failed": False, "no_nodes": False}),
    ("Starting server\n", {"listed": False, "failed": False, "no_nodes": False}),
])
def test_import_report_reads_the_server_log(tmp_path, log, expected):
    """The log check behind test_pack_imports_without_failure (no server needed)."""
    host = ComfyHost(base_dir=str(tmp_path / "base"), log_path=str(tmp_path / "server.log"))
    with open(host.log_path, "w", encoding="utf-8") as f:
        f.write(log.format(base=host.base_dir))
    report = host.pack_import_report()
    assert {k: report[k] for k in expected} == expected
    if "boom" in log:
        assert report["error"].startswith("Traceback") and "RuntimeError: boom from the pack" in report["error"]
        with pytest.raises(HostError, match="boom from the pack"):
            host.assert_pack_imported()
    else:
        assert report["error"] is None


def test_pack_node_definitions_are_served(comfy_host):
    if comfy_host.pack_import_report()["no_nodes"]:
        pytest.skip("the pack defines no nodes yet")
    nodes = comfy_host.pack_nodes()
    assert nodes, "the pack loaded, but /object_info attributes no node to it"
    for name, info in nodes.items():
        assert info["name"] == name
        assert info["display_name"] and info["category"], info
        assert isinstance(info["input"].get("required", {}), dict), info
        assert len(info["output"]) == len(info["output_name"]), info
        assert info == comfy_host.client.object_info(name)


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


@pytest.mark.parametrize("case, prompt, node, error_type", [
    ("missing input", {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}},
     "1", "required_input_missing"),
    ("below min", empty_image_prompt(0, 8, 1, 0, "x"), "1", "value_smaller_than_min"),
    ("wrong link", {**empty_image_prompt(8, 8, 1, 0, "x"),
                    "2": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "x"}}},
     "2", None),
])
def test_invalid_prompt_is_rejected_with_node_errors(comfy_client, case, prompt, node, error_type):
    with pytest.raises(PromptRejected) as info:
        comfy_client.queue_prompt(prompt)
    rejected = info.value
    assert rejected.status == 400, rejected.response
    assert rejected.error["type"] == "prompt_outputs_failed_validation", rejected.response
    assert node in rejected.node_errors, rejected.response
    if error_type:
        assert [e["type"] for e in rejected.node_errors[node]["errors"]] == [error_type]


@pytest.mark.parametrize("prompt, error_type", [
    ({"1": {"class_type": "NoSuchNodeAnywhere", "inputs": {}}}, "invalid_prompt"),
    ({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}},
     "prompt_no_outputs"),
])
def test_unusable_prompt_is_rejected(comfy_client, prompt, error_type):
    with pytest.raises(PromptRejected) as info:
        comfy_client.queue_prompt(prompt)
    assert info.value.status == 400 and info.value.error["type"] == error_type, info.value.response
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
