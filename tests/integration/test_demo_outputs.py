"""scripts/demo.py keeps every run's MP4: two runs into one folder leave two files, each path printed.

The first run starts its own server (the default path of scripts/demo.sh); the second queues on the running
`comfy_host.py serve` server (--server), which offers the same embedded model."""

import os
import subprocess
import sys

from stepvideo_pack.media.mp4 import read_mp4_frames

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def demo(*args):
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "demo.py"), *args], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]  # the MP4's path


def test_two_demo_runs_leave_two_files(embedded_server, tmp_path):
    out = str(tmp_path / "demo")
    first = demo("--out", out, "--seed", "1")
    second = demo("--out", out, "--seed", "2", "--prompt", "绿色圆形向左移动", "--server", embedded_server)
    assert first != second
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in (first, second))
    clips = [read_mp4_frames(p)[0] for p in (first, second)]
    assert all(c.shape == (34, 128, 128, 3) for c in clips)
    assert not (clips[0] == clips[1]).all()  # the first file was not replaced by the second run's


def test_demo_numbers_after_the_highest_file(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from demo import save_new
    folder = str(tmp_path)
    open(os.path.join(folder, "demo_00007_.mp4"), "wb").close()
    open(os.path.join(folder, "other_00010_.mp4"), "wb").close()
    path = save_new(folder, b"x")
    assert os.path.basename(path) == "demo_00008_.mp4"
    assert os.path.basename(save_new(folder, b"y")) == "demo_00009_.mp4"
    with open(path, "rb") as f:
        assert f.read() == b"x"
