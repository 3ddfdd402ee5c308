"""How users actually use the pack: drag a shipped workflow (or a generated MP4) onto the real ComfyUI page
in headless Chromium, check the graph, queue it from the page, see it succeed and preview the video."""

import json

import pytest

from harness.client import status_str
from stepvideo_setup import SMALL, shrink
from test_workflows import load_workflow, outputs_of_type, shipped_names

# widgets worth checking after a drop: node type -> widget names
KEY_WIDGETS = {"StepVideoDiTLoader": ["model_name", "weight_dtype"], "StepVideoSampler": ["steps", "cfg", "shift"],
               "StepVideoTextEncode": ["prompt", "magic"], "StepVideoEmptyLatent": ["width", "height", "frames"],
               "KSampler": ["sampler_name", "scheduler", "steps"], "StepVideoImageToVideo": ["motion_score"]}


def _widget_values(page, node_id):
    return page.js("""const node = window.app.graph.getNodeById(arguments[0]);
                      return Object.fromEntries((node.widgets || []).map(w => [w.name, w.value]));""", node_id)


def _fit_view(page):
    """Zoom the canvas so every node is on screen (DOM widgets such as video previews render only then)."""
    page.js("""
        const nodes = window.app.graph.nodes, canvas = window.app.canvas;
        const right = Math.max(...nodes.map(n => n.pos[0] + n.size[0])), bottom = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
        const scale = Math.min(canvas.canvas.width / (right + 80), canvas.canvas.height / (bottom + 120), 1);
        canvas.ds.scale = scale; canvas.ds.offset = [20 / scale, 60 / scale];
        canvas.setDirty(true, true);""")


def _shrink_in_page(page, graph):
    """The same size/steps reductions as the API tests, made through the page's widgets (like a user)."""
    for node in graph["nodes"]:
        values = _widget_values(page, node["id"])
        for name, value in SMALL.get(node["type"], {}).items():
            if name in values:
                page.set_widget(node["id"], name, value(values[name]) if callable(value) else value)


@pytest.mark.parametrize("name", shipped_names())
def test_dropped_workflow_shows_the_graph_and_runs_from_the_page(name, comfy_browser, comfy_client,
                                                                 stepvideo_models, stepvideo_inputs):
    page = comfy_browser
    ui, api = load_workflow(name, api=False), load_workflow(name, api=True)
    page.drop_json(ui, name=f"{name}.json")
    page.wait_for_node_types(sorted(n["type"] for n in ui["nodes"]))
    graph = page.graph()
    assert sorted(n["type"] for n in graph["nodes"]) == sorted(n["type"] for n in ui["nodes"])
    assert len(graph["links"]) == len(ui["links"])
    for node in graph["nodes"]:
        shown = _widget_values(page, node["id"])
        expected = api[str(node["id"])]["inputs"]
        for widget in KEY_WIDGETS.get(node["type"], []):
            if widget in shown and not isinstance(expected.get(widget), list):
                assert shown[widget] == expected[widget], (node["type"], widget)
    # what the page would queue is exactly the shipped API-format workflow
    queued = page.api_prompt()["output"]
    assert {k: (v["class_type"], v["inputs"]) for k, v in queued.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in api.items()}

    _shrink_in_page(page, graph)
    page.fix_seed_controls()
    i2v = [n["id"] for n in graph["nodes"] if n["type"] == "StepVideoImageToVideo"]
    for node_id in i2v:  # a value the API tests did not use, so the node runs (not from ComfyUI's cache)
        page.set_widget(node_id, "motion_score", 4.5)
    entry = page.run_from_page(comfy_client, timeout=600)
    page.screenshot(f"workflow_{name}")
    assert status_str(entry) == "success", entry["status"]
    for node_id in i2v:  # the node says which path it took (web/js/stepvideo.js shows it)
        page.wait_for(f"(window.app.graph.getNodeById({node_id}).widgets || []).some(w => w.name === "
                      "'stepvideo_report' && String(w.value).includes('TI2V weights: official image condition, "
                      "motion score 4.5'))", timeout=20, what="the Image To Video report on the node")
    if name == "text_to_image":
        return
    video = outputs_of_type(entry, ".mp4")[0]["filename"]
    _fit_view(page)
    page.wait_for(f"[...document.querySelectorAll('video')].some(v => (v.currentSrc || v.src).includes('{video}'))",
                  timeout=30, what=f"a <video> preview of {video}")
    page.screenshot(f"workflow_{name}_preview")
    problems = page.pack_console_problems()
    assert not problems, json.dumps(problems, indent=1)[:3000]


def test_dropped_generated_mp4_restores_its_graph(comfy_browser, comfy_client, stepvideo_models):
    ui = load_workflow("text_to_video", api=False)
    entry = comfy_client.run_prompt(shrink(load_workflow("text_to_video", api=True)), workflow=ui, timeout=300)
    video = outputs_of_type(entry, ".mp4")[0]
    comfy_browser.drop_file(video["filename"], comfy_client.fetch_output(video), "video/mp4")
    comfy_browser.wait_for_node_types(sorted(n["type"] for n in ui["nodes"]))
    graph = comfy_browser.graph()
    assert sorted(n["type"] for n in graph["nodes"]) == sorted(n["type"] for n in ui["nodes"])
    _fit_view(comfy_browser)
    prompt_node = next(n for n in graph["nodes"] if n["type"] == "StepVideoTextEncode")
    assert prompt_node["widgets_values"][0] == next(
        n for n in ui["nodes"] if n["type"] == "StepVideoTextEncode")["widgets_values"][0]
    comfy_browser.screenshot("dropped_generated_mp4")

