"""What a user installing the pack gets: the registry's dependency list equals requirements.txt, the
product layers never import the research code, and the registry archive leaves research and tests out."""

import ast
import os
import re
import tomllib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRODUCT = ("nodes", "model_loaders", "networks", "samplers", "media", "multigpu")
RESEARCH = os.path.join(REPO_ROOT, "research")


def requirement_lines():
    with open(os.path.join(REPO_ROOT, "requirements.txt"), encoding="utf-8") as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


def test_registry_dependencies_equal_requirements_txt():
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    assert dependencies == requirement_lines()


def test_product_layers_do_not_import_the_research_code():
    research_modules = {name[:-3] for name in os.listdir(RESEARCH) if name.endswith(".py")}
    assert {"behaviour_metrics", "synthetic_data", "train_small_model"} <= research_modules
    offenders = []
    for layer in PRODUCT + ("__init__.py",):
        path = os.path.join(REPO_ROOT, layer)
        files = [path] if path.endswith(".py") else [
            os.path.join(root, name) for root, _, names in os.walk(path) for name in names if name.endswith(".py")]
        for file in files:
            with open(file, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [(file, n) for n in names if n.split(".")[0] in research_modules | {"research", "tools"}]
    assert offenders == []


def test_registry_archive_leaves_out_research_and_tests():
    with open(os.path.join(REPO_ROOT, ".comfyignore"), encoding="utf-8") as f:
        patterns = set(re.findall(r"^([^#\s]+)", f.read(), re.M))
    assert {"research/", "tests/", "benchmarks/"} <= patterns
