"""Measured numbers copied into the documents (marked <!--log:...-->) equal the logs that produced them
(scripts/logged_numbers.py rewrites them; research/logs/behaviour.json is written by the behaviour tools)."""

from harness import logged_numbers


def test_every_marked_number_equals_its_log():
    assert logged_numbers.stale_copies() == [], "run: python scripts/logged_numbers.py"


def test_a_stale_copy_is_found_and_rewritten():
    text = "colour <!--log:behaviour:prompt_following_en.colour-->7<!--/log--> of 36"
    rendered, changes = logged_numbers.render(text, {})
    logged = logged_numbers.logged_value("behaviour", "prompt_following_en.colour", None, {})
    assert changes == [("behaviour:prompt_following_en.colour", "7", logged)]
    assert rendered == f"colour <!--log:behaviour:prompt_following_en.colour-->{logged}<!--/log--> of 36"


def test_documents_mark_their_behaviour_numbers():
    marks = 0
    for document in logged_numbers.DOCUMENTS:
        with open(f"{logged_numbers.REPO}/{document}", encoding="utf-8") as f:
            marks += len(logged_numbers.MARK.findall(f.read()))
    assert marks >= 15
