"""What a user installing the pack gets: the registry's dependency list equals requirements.txt, the
product layers never import the research code or the test harness, and the registry archive leaves research
and tests out. And how the rest reaches the pack: tests, benchmarks and research import it as the package
``stepvideo_pack`` (installed editable, pyproject.toml), with no sys.path edits and no script imported."""

import ast
import os
import re
import tomllib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRODUCT = ("nodes", "model_loaders", "networks", "samplers", "media", "multigpu")
RESEARCH = os.path.join(REPO_ROOT, "research")
DEVELOPMENT = ("tests", "benchmarks", "research")
# the one sys.path edit left: a ComfyUI checkout is a folder of modules, not an installed package
HOST_ON_PATH = {os.path.join("tests", "harness", "host_runtime.py")}


def python_files(*folders):
    for folder in folders:
        path = os.path.join(REPO_ROOT, folder)
        if path.endswith(".py"):
            yield path
            continue
        for root, _, names in os.walk(path):
            yield from (os.path.join(root, name) for name in sorted(names) if name.endswith(".py"))


def imported_names(file):
    """Every module name an import statement in ``file`` names (``from a.b import c``: ``a.b``)."""
    with open(file, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def requirement_lines():
    with open(os.path.join(REPO_ROOT, "requirements.txt"), encoding="utf-8") as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


def test_registry_dependencies_equal_requirements_txt():
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    assert dependencies == requirement_lines()


def test_product_layers_do_not_import_the_research_code_or_the_harness():
    research_modules = {name[:-3] for name in os.listdir(RESEARCH) if name.endswith(".py")}
    assert {"behaviour_metrics", "synthetic_data", "train_small_model"} <= research_modules
    development = research_modules | {"research", "harness", "benchmarks", "tests"}
    offenders = [(file, name) for file in python_files(*PRODUCT, "__init__.py") for name in imported_names(file)
                 if name.split(".")[0] in development]
    assert offenders == []


def test_development_code_imports_packages_not_paths_or_scripts():
    scripts = {name[:-3] for name in os.listdir(os.path.join(REPO_ROOT, "scripts")) if name.endswith(".py")}
    assert {"comfy_host", "demo", "pack_path"} <= scripts
    path_edits, script_imports = [], []
    for file in python_files(*DEVELOPMENT):
        relative = os.path.relpath(file, REPO_ROOT)
        with open(file, encoding="utf-8") as f:
            source = f.read()
        if re.search(r"sys\.path(\.insert|\.append|\[)", source) and relative not in HOST_ON_PATH:
            path_edits.append(relative)
        script_imports += [(relative, name) for name in imported_names(file) if name.split(".")[0] in scripts]
    assert path_edits == []
    assert script_imports == []


def test_registry_archive_leaves_out_research_tests_and_the_commands_that_need_them():
    with open(os.path.join(REPO_ROOT, ".comfyignore"), encoding="utf-8") as f:
        patterns = set(re.findall(r"^([^#\s]+)", f.read(), re.M))
    assert {"research/", "tests/", "benchmarks/"} <= patterns
    shipped = [os.path.join("scripts", name) for name in sorted(os.listdir(os.path.join(REPO_ROOT, "scripts")))
               if os.path.join("scripts", name) not in patterns]
    assert {"scripts/convert_single_files.py", "scripts/quantize_stepvideo.py", "scripts/pack_path.py"} <= set(shipped)
    needs_development = [(script, name) for script in shipped if script.endswith(".py")
                         for name in imported_names(os.path.join(REPO_ROOT, script))
                         if name.split(".")[0] in {"harness", "research", "benchmarks"}]
    assert needs_development == []
