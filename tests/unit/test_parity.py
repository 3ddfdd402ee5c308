"""Every case of every fixture in tests/fixtures/parity, through scripts/parity.py (official outputs)."""

import json
import os

import pytest

from harness import parity

pytestmark = [pytest.mark.parity, pytest.mark.host]

FIXTURE_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "parity")
FIXTURES = parity.find_fixtures([FIXTURE_ROOT])


def test_fixtures_are_shipped():
    kinds = set()
    for folder in FIXTURES:
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
            kinds.add(json.load(f)["kind"])
    assert kinds == {"dit", "pipeline", "scheduler", "vae", "step_llm", "step_tokenizer", "hunyuan_clip"}


@pytest.mark.parametrize("folder", FIXTURES, ids=[os.path.basename(f) for f in FIXTURES])
def test_fixture_matches_official(folder):
    results = list(parity.run_fixture(folder))
    assert results, f"{folder} has no cases"
    failures = [f"{label}: {message or f'error {err:.3e} > bound {bound:.3e}'}"
                for label, err, bound, message in results if message is not None or err > bound]
    assert not failures, "\n".join(failures)
