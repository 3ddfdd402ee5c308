"""The README's API example, taken from README.md as written, run against `scripts/comfy_host.py serve`
(the serving command the README gives) holding only the embedded model: it must save a playable MP4,
and print the server's node_errors when the prompt is rejected (HTTP 400).

The only change made to the block is the server address (the README's port 8188 may be taken here)."""

import json
import os
import re
import subprocess
import sys

from harness import REPO
from stepvideo_pack.media.mp4 import read_mp4_frames

README_SERVER = 'server = "http://127.0.0.1:8188"'


def readme_api_snippet():
    """The first ```python block of the README's "Using the API queue" section."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("\n## Using the API queue"):]
    section = section[:section.index("\n## ", 1)]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_snippet(code, url, folder):
    """Run the snippet with the server address replaced, in `folder` (holding a link to workflows/)."""
    assert code.count(README_SERVER) == 1, "the README's snippet no longer names its server as expected"
    os.symlink(os.path.join(REPO, "workflows"), os.path.join(folder, "workflows"))
    return subprocess.run([sys.executable, "-c", code.replace(README_SERVER, f'server = "{url}"')], cwd=folder,
                          capture_output=True, text=True, timeout=600)


def test_server_offers_only_the_embedded_model(embedded_server):
    from harness.client import ComfyClient
    names = ComfyClient(embedded_server).object_info("StepVideoDiTLoader")["input"]["required"]["model_name"][0]
    assert "stepvideo-tiny" in names and {n.split("/")[0] for n in names} == {"stepvideo-tiny"}, names


def test_readme_snippet_saves_an_mp4_from_the_embedded_model(embedded_server, tmp_path):
    code = readme_api_snippet()
    assert "workflows/api/text_to_video_embedded.json" in code
    result = run_snippet(code, embedded_server, str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    saved = [n for n in os.listdir(tmp_path) if n.endswith(".mp4")]
    assert len(saved) == 1 and f"saved {saved[0]}" in result.stdout, (os.listdir(tmp_path), result.stdout)
    path = os.path.join(tmp_path, saved[0])
    with open(path, "rb") as f:
        assert f.read(12)[4:8] == b"ftyp"  # an ISO media (MP4) file
    frames, fps = read_mp4_frames(path)
    assert frames.shape == (34, 128, 128, 3) and fps == 25.0
    assert frames.std() > 0.01 * 255 and len({f.tobytes() for f in frames}) > 1  # a picture, and it changes


def test_readme_snippet_prints_node_errors_when_rejected(embedded_server, tmp_path):
    """The same block on the official-weights workflow: the server has no stepvideo-t2v, answers 400, and the
    snippet exits non-zero printing the response whose node_errors name the loader nodes."""
    code = readme_api_snippet().replace("text_to_video_embedded.json", "text_to_video.json")
    result = run_snippet(code, embedded_server, str(tmp_path))
    assert result.returncode != 0
    assert result.stderr.startswith("HTTP 400: "), result.stderr[-2000:]
    response = json.loads(result.stderr[len("HTTP 400: "):])
    with open(os.path.join(REPO, "workflows", "api", "text_to_video.json"), encoding="utf-8") as f:
        workflow = json.load(f)
    loaders = {k for k, v in workflow.items() if v["class_type"].endswith("Loader")}
    assert loaders and loaders <= set(response["node_errors"]), response
    assert not any(n.endswith(".mp4") for n in os.listdir(tmp_path))
