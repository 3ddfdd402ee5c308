#!/usr/bin/env python3
"""Write workflows/*.json (UI format) and workflows/api/*.json (API format) from scripts/workflow_specs.py.

    .venv/bin/python scripts/build_workflows.py

Starts a throwaway ComfyUI server with the pack (scripts/comfy_host.py) to read the node definitions
from /object_info. The integration tests regenerate the files from the test server and fail if the
committed ones differ, so run this after changing a node's inputs or a spec.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from comfy_host import ComfyHost  # noqa: E402
from workflow_specs import all_graphs  # noqa: E402

WORKFLOWS = os.path.join(os.path.dirname(HERE), "workflows")


def render(object_info):
    """{relative path: JSON text} of every workflow in both formats."""
    files = {}
    for graph in all_graphs():
        files[f"{graph.name}.json"] = json.dumps(graph.ui(object_info), indent=1, ensure_ascii=False) + "\n"
        files[f"api/{graph.name}.json"] = json.dumps(graph.api(object_info), indent=1, ensure_ascii=False) + "\n"
    return files


def main():
    with ComfyHost() as host:
        object_info = host.client.object_info()
    for relative, text in render(object_info).items():
        path = os.path.join(WORKFLOWS, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
