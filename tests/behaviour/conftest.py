"""Behavioural tests of the shipped small model (weights/stepvideo-tiny); see research/behaviour_metrics.py.

The model is loaded once per session through the users' loaders (``load_dit``, ``load_vae``,
``StepVideoTextEncoder``); the measurements live in research/behaviour_metrics.py so the same code
produces the numbers reported in research/TRAINING.md.
"""

import os

import pytest
import torch

from research import behaviour_metrics

BEHAVIOUR_DIR = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.path).startswith(BEHAVIOUR_DIR + os.sep):
            item.add_marker(pytest.mark.behaviour)


@pytest.fixture(scope="session")
def tiny():
    if not os.path.isfile(os.path.join(behaviour_metrics.WEIGHTS, "transformer", "config.json")):
        pytest.fail(f"the shipped small model is missing: {behaviour_metrics.WEIGHTS} "
                    "(rebuild it: python research/train_small_model.py)")
    torch.manual_seed(0)
    return behaviour_metrics.TinyModel()
