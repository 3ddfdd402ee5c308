"""The real ComfyUI page, in headless Chromium: a dropped UI-format workflow loads, queues and runs."""

import io
import json
import os

from PIL import Image

from harness.client import status_str

WORKFLOWS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workflows")


def load_workflow(name):
    with open(os.path.join(WORKFLOWS, name), encoding="utf-8") as f:
        return json.load(f)


def test_page_loads_with_the_pack(comfy_browser, comfy_host):
    # the frontend knows the pack's nodes through /object_info, and the pack's script loaded without a problem
    pack_nodes = sorted(comfy_host.pack_nodes())
    known = comfy_browser.js("return Object.keys(LiteGraph.registered_node_types);")
    assert pack_nodes and set(pack_nodes) <= set(known), sorted(set(pack_nodes) - set(known))
    assert "EmptyImage" in known
    scripts = [e for e in comfy_host.client.get_json("/extensions") if e.endswith("/js/stepvideo.js")]
    assert len(scripts) == 1 and "/ComfyUI-StepVideo/" in scripts[0], scripts  # registered once
    comfy_browser.screenshot("page_loaded")

    # a graph with seeds: every 'control after generate' the page added can be fixed (the workflow tests rely on it)
    graph = load_workflow("core_seeded.json")
    comfy_browser.drop_json(graph, name="core_seeded.json")
    comfy_browser.wait_for_node_types([n["type"] for n in graph["nodes"]])
    comfy_browser.fix_seed_controls()
    controls = comfy_browser.js("""return window.app.graph.nodes.flatMap(n => (n.widgets || [])
        .filter(w => w.name === 'control_after_generate').map(w => w.value));""")
    assert controls and set(controls) == {"fixed"}, controls
    problems = comfy_browser.pack_console_problems()
    assert not problems, json.dumps(problems, indent=1)[:3000]


def test_dropped_workflow_loads_queues_and_runs(comfy_browser, comfy_client):
    page = comfy_browser
    workflow = load_workflow("core_empty_image.json")
    page.drop_json(workflow, name="core_empty_image.json")
    page.wait_for_node_types(["EmptyImage", "SaveImage"])

    graph = page.graph()
    widgets = {n["type"]: n["widgets_values"] for n in graph["nodes"]}
    assert widgets["EmptyImage"][:4] == [96, 64, 1, 0xFF0000], widgets
    assert widgets["SaveImage"] == ["stepvideo_browser_smoke"], widgets
    assert len(graph["links"]) == 1

    # an edit in the page reaches the graph and what the page sends (API format)
    empty_image_id = next(n["id"] for n in graph["nodes"] if n["type"] == "EmptyImage")
    page.set_widget(empty_image_id, "width", 80)
    assert page.nodes_of_type("EmptyImage")[0]["widgets_values"][0] == 80
    api = page.api_prompt()
    assert sorted(n["class_type"] for n in api["output"].values()) == ["EmptyImage", "SaveImage"]
    assert api["output"][str(empty_image_id)]["inputs"]["width"] == 80

    entry = page.run_from_page(comfy_client, timeout=60)
    page.screenshot("dropped_workflow_after_run")
    assert status_str(entry) == "success", entry["status"]

    # the UI attached the graph it shows as extra_pnginfo.workflow, and it ends up in the PNG
    extra_data = entry["prompt"][3]
    assert sorted(n["type"] for n in extra_data["extra_pnginfo"]["workflow"]["nodes"]) == ["EmptyImage", "SaveImage"]
    files = comfy_client.output_files(entry)
    assert len(files) == 1
    image = Image.open(io.BytesIO(comfy_client.fetch_output(files[0])))
    assert image.size == (80, 64)
    assert image.convert("RGB").getpixel((5, 5)) == (255, 0, 0)
    assert json.loads(image.text["workflow"])["nodes"]

    # the page shows the result in the SaveImage node
    page.wait_for("(window.app.graph.nodes.find(n => n.type === 'SaveImage') || {}).imgs?.length > 0",
                  timeout=20, what="SaveImage preview in the page")
    problems = page.pack_console_problems()
    assert not problems, json.dumps(problems, indent=1)[:3000]


def test_dropped_mp4_rebuilds_its_graph(comfy_browser, comfy_client):
    """An MP4 saved by the host carries the prompt; dropping it on the page rebuilds the graph."""
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 6, "color": 0x3366CC}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "browser_smoke_video",
                                                   "format": "mp4", "codec": "h264"}},
    }
    entry = comfy_client.run_prompt(prompt, timeout=120)
    files = comfy_client.output_files(entry)
    assert len(files) == 1 and files[0]["filename"].endswith(".mp4"), entry["outputs"]
    data = comfy_client.fetch_output(files[0])
    assert data[4:8] == b"ftyp"

    comfy_browser.drop_file(files[0]["filename"], data, "video/mp4")
    comfy_browser.wait_for_node_types(["CreateVideo", "EmptyImage", "SaveVideo"])
    widgets = {n["type"]: n["widgets_values"] for n in comfy_browser.graph()["nodes"]}
    assert widgets["EmptyImage"][:4] == [64, 48, 6, 0x3366CC], widgets
    comfy_browser.screenshot("dropped_mp4")
    problems = comfy_browser.pack_console_problems()
    assert not problems, json.dumps(problems, indent=1)[:3000]
