"""The test harness: what the tests, scripts/, benchmarks/ and research/ share to run the pack.

    client          a blocking client for ComfyUI's HTTP API (standard library only)
    server          start and stop a real ComfyUI server with this pack linked in
    host_runtime    import a ComfyUI checkout in this process (the pack's nodes without a server)
    tiny_checkpoints, keylists   random-weight checkpoints in the official layouts
    workflow_graph, workflow_specs   the shipped example workflows, built from /object_info
    parity          the checks against the official code's fixtures (tests/fixtures/parity)
    logged_numbers  measured numbers in the Markdown documents, rendered from their logs
    peak_rss        a process's current and peak resident memory (/proc), for memory tests and benchmarks

Installed editable as ``harness`` by scripts/bootstrap.sh (pyproject.toml).
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
