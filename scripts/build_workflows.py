#!/usr/bin/env python3
"""Write workflows/*.json (UI format) and workflows/api/*.json (API format) from tests/harness/workflow_specs.py.

    .venv/bin/python scripts/build_workflows.py

Starts a throwaway ComfyUI server with the pack to read the node definitions from /object_info. The
integration tests regenerate the files from the test server and fail if the committed ones differ, so run
this after changing a node's inputs or a spec.
"""

import os

from harness import REPO
from harness.server import ComfyHost
from harness.workflow_specs import render_workflow_files

WORKFLOWS = os.path.join(REPO, "workflows")


def main():
    with ComfyHost() as host:
        object_info = host.client.object_info()
    for relative, text in render_workflow_files(object_info).items():
        path = os.path.join(WORKFLOWS, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
