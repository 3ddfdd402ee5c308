"""scripts/demo.py keeps every run's MP4: two runs into one folder leave two new files numbered after the
highest one there (as the host's savers number theirs), each path printed.

The first run starts its own server (the default path of scripts/demo.sh); the second queues on the running
`comfy_host.py serve` server (--server), which offers the same embedded model."""

import os
import subprocess
import sys

from harness import REPO
from stepvideo_pack.media.mp4 import read_mp4_frames



def demo(*args):
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "demo.py"), *args], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]  # the MP4's path


def test_two_demo_runs_leave_two_files_numbered_after_the_highest(embedded_server, tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo_00007_.mp4").write_bytes(b"an earlier run's file")
    (out / "other_00010_.mp4").write_bytes(b"another prefix's file")
    first = demo("--out", str(out), "--seed", "1")
    second = demo("--out", str(out), "--seed", "2", "--prompt", "绿色圆形向左移动", "--server", embedded_server)
    assert [os.path.basename(p) for p in (first, second)] == ["demo_00008_.mp4", "demo_00009_.mp4"]
    assert sorted(os.listdir(out)) == ["demo_00007_.mp4", "demo_00008_.mp4", "demo_00009_.mp4", "other_00010_.mp4"]
    assert (out / "demo_00007_.mp4").read_bytes() == b"an earlier run's file"
    clips = [read_mp4_frames(p)[0] for p in (first, second)]
    assert all(c.shape == (34, 128, 128, 3) for c in clips)
    assert not (clips[0] == clips[1]).all()  # the first file was not replaced by the second run's
