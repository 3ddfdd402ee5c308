"""What every saved file (MP4, latent checkpoint) carries: the prompt and the workflow as JSON, like the
host's own savers, and nothing when ComfyUI runs with --disable-metadata (real default host, in process)."""

import json

import pytest

from harness.host_runtime import import_host

import_host()

import comfy.cli_args  # noqa: E402
from stepvideo_pack.nodes.host import save_metadata  # noqa: E402

pytestmark = pytest.mark.host


def test_prompt_and_workflow_are_saved_unless_the_host_disables_metadata(monkeypatch):
    prompt = {"1": {"class_type": "StepVideoSampler", "inputs": {"seed": 7}}}
    workflow = {"nodes": [{"id": 1}]}
    tags = save_metadata(prompt, {"workflow": workflow})
    assert {key: json.loads(value) for key, value in tags.items()} == {"prompt": prompt, "workflow": workflow}
    monkeypatch.setattr(comfy.cli_args.args, "disable_metadata", True)
    assert save_metadata(prompt, {"workflow": workflow}) == {}
