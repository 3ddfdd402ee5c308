"""Measured numbers in the Markdown documents come from the log that produced them.

    .venv/bin/python scripts/render_numbers.py           rewrite every marked number from its log
    .venv/bin/python scripts/render_numbers.py --check   exit 1 naming each stale copy

(tests/unit/test_logged_numbers.py fails on a stale copy through ``stale_copies()``.)

A number is marked in the Markdown as ``<!--log:NAME:PATH[:FORMAT]-->VALUE<!--/log-->``: NAME is a JSON log
in research/logs/ (``behaviour`` = research/logs/behaviour.json, written by research/behaviour_metrics.py;
``summary`` = the training's summary.json) or ``dit_stages`` (each DiT stage's final loss, from dit.csv),
PATH a dotted path into it (``prompt_following_en.direction``), FORMAT an optional Python format spec
(``.2f``). The comments are invisible on the rendered page; VALUE is what the reader sees.
"""

import csv
import json
import os
import re

from . import REPO

LOGS = os.path.join(REPO, "research", "logs")
DOCUMENTS = ("README.md", "docs/reference.md", "docs/benchmarks.md", "research/TRAINING.md")
MARK = re.compile(r"<!--log:(?P<log>[\w-]+):(?P<path>[\w.]+)(?::(?P<format>[^>]*?))?-->(?P<value>.*?)<!--/log-->")


FINAL_STEPS = 100  # a DiT stage's final loss: the mean over its last 100 logged steps


def read_json_log(name):
    with open(os.path.join(LOGS, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def dit_stages():
    """{stage: {"steps", "final_loss"}, "all": {"steps"}} of the DiT curriculum: research/logs/dit.csv holds one
    row per step (the count runs on through the stages), cut into stages by summary.json's schedule."""
    with open(os.path.join(LOGS, "dit.csv"), encoding="utf-8", newline="") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    stages, start = {}, 0
    for name, planned in read_json_log("summary")["schedule"].items():
        if name.startswith("dit_"):
            steps = planned[0]  # (steps run, steps the learning-rate schedule was planned for)
            final = losses[start:start + steps][-FINAL_STEPS:]
            stages[name] = {"steps": steps, "final_loss": sum(final) / len(final)}
            start += steps
    if start != len(losses):
        raise ValueError(f"research/logs/dit.csv has {len(losses)} steps, summary.json's schedule {start}")
    stages["all"] = {"steps": start}
    return stages


DERIVED_LOGS = {"dit_stages": dit_stages}


def logged_value(log, path, format_spec, cache):
    """The text of one logged measurement: the value at ``path`` in research/logs/<log>.json, or in a log
    derived from them (DERIVED_LOGS)."""
    if log not in cache:
        cache[log] = DERIVED_LOGS[log]() if log in DERIVED_LOGS else read_json_log(log)
    value = cache[log]
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(f"research/logs/{log}.json has no {path!r} (missing {key!r})")
        value = value[key]
    return format(value, format_spec or "")


def render(text, cache):
    """(text with every marked number rewritten from its log, [(mark, old, new) for each that changed])."""
    changes = []

    def replace(match):
        new = logged_value(match["log"], match["path"], match["format"], cache)
        if new != match["value"]:
            changes.append((f"{match['log']}:{match['path']}", match["value"], new))
        return match.group(0).replace(f"-->{match['value']}<!--/log-->", f"-->{new}<!--/log-->")

    return MARK.sub(replace, text), changes


def stale_copies():
    """[(document, mark, written, logged)] for every marked number that differs from its log."""
    cache, stale = {}, []
    for document in DOCUMENTS:
        with open(os.path.join(REPO, document), encoding="utf-8") as f:
            _, changes = render(f.read(), cache)
        stale += [(document, *change) for change in changes]
    return stale
