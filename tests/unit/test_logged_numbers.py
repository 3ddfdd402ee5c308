"""Measured numbers copied into the documents (marked <!--log:...-->) equal the logs that produced them
(scripts/render_numbers.py rewrites them; research/logs/ is written by the training and behaviour tools)."""

import collections

from harness import logged_numbers


def test_every_marked_number_equals_its_log():
    assert logged_numbers.stale_copies() == [], "run: .venv/bin/python scripts/render_numbers.py"


def test_a_stale_copy_is_found_and_rewritten():
    text = "colour <!--log:behaviour:prompt_following_en.colour-->7<!--/log--> of 36"
    rendered, changes = logged_numbers.render(text, {})
    logged = logged_numbers.logged_value("behaviour", "prompt_following_en.colour", None, {})
    assert changes == [("behaviour:prompt_following_en.colour", "7", logged)]
    assert rendered == f"colour <!--log:behaviour:prompt_following_en.colour-->{logged}<!--/log--> of 36"


def test_dit_stages_cut_the_step_log_by_the_schedule():
    stages = logged_numbers.dit_stages()
    schedule = logged_numbers.read_json_log("summary")["schedule"]
    curriculum = [name for name in schedule if name.startswith("dit_")]
    assert list(stages) == curriculum + ["all"]
    assert stages["all"]["steps"] == sum(schedule[name][0] for name in curriculum)
    assert all(0 < stages[name]["final_loss"] < 1 for name in curriculum)


def test_documents_mark_their_measured_numbers():
    marks = collections.Counter()
    for document in logged_numbers.DOCUMENTS:
        with open(f"{logged_numbers.REPO}/{document}", encoding="utf-8") as f:
            marks.update(match["log"] for match in logged_numbers.MARK.finditer(f.read()))
    assert marks["behaviour"] >= 15
    assert marks["summary"] >= 11  # each training stage's time, the VAE's round-trip PSNR
    assert marks["dit_stages"] >= 8  # each DiT stage's final loss, the number of steps
