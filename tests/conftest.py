"""Shared pytest setup. The tests import the pack as ``stepvideo_pack`` and the test harness as ``harness``
(tests/harness), both installed editable into .venv/ by scripts/bootstrap.sh (see pyproject.toml). A .venv/
made in another checkout would test that checkout's code, so the run stops if the packages live elsewhere."""

import os

import pytest

import harness
import stepvideo_pack

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    for package, folder in ((stepvideo_pack, REPO_ROOT), (harness, os.path.join(REPO_ROOT, "tests", "harness"))):
        found = os.path.realpath(package.__path__[0])
        if found != os.path.realpath(folder):
            raise pytest.UsageError(f"{package.__name__} is imported from {found}, not from this checkout's {folder}: "
                                    "run scripts/bootstrap.sh here")
