"""Every shipped workflow that samples saves the LATENT it decodes (SaveLatent on the same link), so a
failed decode never loses a sampling run (README, "Workflows")."""

import json
import os

import pytest

API = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "workflows", "api")
SAMPLERS = {"StepVideoSampler", "StepVideoLongVideo", "KSampler", "KSamplerAdvanced", "SamplerCustom",
            "SamplerCustomAdvanced"}
DECODERS = {"StepVideoVAEDecode": "samples", "VAEDecode": "samples"}


def _links(node):
    return [value for value in node["inputs"].values() if isinstance(value, list) and len(value) == 2]


def sampled(prompt, link):
    """True when the output ``link`` ([node id, slot]) comes from a sampler, directly or through other nodes."""
    seen, todo = set(), [link[0]]
    while todo:
        node_id = todo.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        node = prompt[node_id]
        if node["class_type"] in SAMPLERS:
            return True
        todo += [str(upstream[0]) for upstream in _links(node)]
    return False


def unsaved_decodes(prompt):
    """Ids of decode nodes whose sampled LATENT no SaveLatent saves."""
    saved = {json.dumps(node["inputs"]["samples"]) for node in prompt.values() if node["class_type"] == "SaveLatent"}
    return [node_id for node_id, node in prompt.items() if node["class_type"] in DECODERS
            and sampled(prompt, node["inputs"][DECODERS[node["class_type"]]])
            and json.dumps(node["inputs"][DECODERS[node["class_type"]]]) not in saved]


def shipped():
    return sorted(name for name in os.listdir(API) if name.endswith(".json"))


def test_the_check_finds_an_unsaved_decode():
    prompt = {"1": {"class_type": "StepVideoSampler", "inputs": {"latent": ["0", 0]}},
              "0": {"class_type": "StepVideoEmptyLatent", "inputs": {}},
              "2": {"class_type": "StepVideoJoinWindow", "inputs": {"samples": ["1", 0]}},
              "3": {"class_type": "StepVideoVAEDecode", "inputs": {"samples": ["2", 0]}}}
    assert unsaved_decodes(prompt) == ["3"]
    prompt["4"] = {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0]}}  # the wrong link: before the join
    assert unsaved_decodes(prompt) == ["3"]
    prompt["4"]["inputs"]["samples"] = ["2", 0]
    assert unsaved_decodes(prompt) == []


@pytest.mark.parametrize("name", shipped())
def test_every_sampling_workflow_saves_its_latent_before_decoding(name):
    with open(os.path.join(API, name), encoding="utf-8") as f:
        prompt = json.load(f)
    assert unsaved_decodes(prompt) == [], f"workflows/api/{name}: decode without SaveLatent of the same LATENT"


def test_all_workflows_are_checked():
    assert len(shipped()) >= 11
