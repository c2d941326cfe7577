"""The bundled evaluation sets never overlap the bundled training data (or the check would be contaminated)."""

from __future__ import annotations

import json
import re

import pytest

from tuneforge.data.catalog import bundled_path
from tuneforge.data.quality import normalise_text
from tuneforge.eval.heldout import shared_templates, shares_template
from tuneforge.eval.questions import contains_expected, load_questions, score_answer

CJK = re.compile(r"[\u4e00-\u9fff]")


def _questions(name: str) -> list[str]:
    raw = json.loads(bundled_path(name).read_text(encoding="utf-8"))
    return [item if isinstance(item, str) else item.get("question") or item.get("instruction") for item in raw]


def test_general_check_has_at_least_50_items_in_three_categories():
    raw = json.loads(bundled_path("general_check").read_text(encoding="utf-8"))
    assert len(raw) >= 50
    categories = {item["category"] for item in raw}
    assert categories == {"arithmetic", "world knowledge", "instruction following"}
    assert all(item["expected"] and all(isinstance(e, str) and e for e in item["expected"]) for item in raw)


def test_evaluation_sets_share_no_question_with_training_sets():
    training = {normalise_text(q) for name in ("general_prompts", "identity") for q in _questions(name)}
    for name in ("general_check", "demo_questions", "general_reference"):
        overlap = [q for q in _questions(name) if normalise_text(q) in training]
        assert overlap == [], (name, overlap)


# ---------------------------------------------------------------------------------------------------- by template

HELD_OUT = ("general_check", "demo_questions", "general_reference")
SEEN = ("general_prompts", "identity")  # what a run trains on: replay prompts (the base's answers) and identity


@pytest.mark.parametrize(
    "a,b",
    [
        ("What is the capital of France?", "What is the capital of Germany?"),
        ("What is the capital of the United Kingdom?", "What is the capital of Canada?"),
        ("What is 50 minus 25?", "What is 15 plus 27?"),
        ("What is 2 + 3?", "What is 9 times 6?"),
        ("Translate 'hello' into Spanish.", "Translate 'good morning' into Spanish."),
        ("What language is mainly spoken in Mexico?", "What language is spoken in Brazil?"),
        ("日本的首都是哪里？", "中国的首都是哪里？"),
        ("WHAT is the capital of   France", "what is the capital of france?"),
    ],
)
def test_questions_that_share_a_template(a, b):
    assert shares_template(a, b) and shares_template(b, a)


@pytest.mark.parametrize(
    "a,b",
    [
        ("What is the capital of France?", "What is the speed of light?"),  # only "what is the ... of"
        ("What is the chemical symbol for gold?", "What is the largest ocean on Earth?"),
        ("Tell me a bit about yourself.", "Tell me your name."),
        ("Which assistant am I talking to?", "Hello, who am I speaking with?"),
        ("What is gravity?", "What is 2 + 3?"),
    ],
)
def test_questions_that_do_not_share_a_template(a, b):
    assert not shares_template(a, b)


def test_held_out_sets_share_no_template_with_each_other_or_the_training_data():
    """Disjoint by template, not only by text: "capital of Japan" is not held out from "capital of Germany"."""
    for index, name in enumerate(HELD_OUT):
        for other in (*HELD_OUT[index + 1 :], *SEEN):
            assert shared_templates(_questions(name), _questions(other)) == [], (name, other)


def test_no_general_item_is_answered_by_echoing_its_question():
    """An expected fragment in the question cannot count, so every item must expect something the question lacks;
    "only" items ("Reply with only the word yes.") are checked as instructions instead."""
    for name in ("general_check", "demo_questions"):
        for question in load_questions(name, {"name": "Conch", "author": "tuneforge"}):
            if question.expected and not question.only:
                assert not all(contains_expected(question.question, [f]) for f in question.expected), question
                assert not score_answer(question, question.question), question  # the echo is wrong
    only = [q for q in load_questions("general_check", {}) if q.only]
    assert {q.question for q in only} >= {"Reply with only the word yes.", "Repeat this word exactly: banana"}
    assert all(score_answer(q, q.expected[0] + ".") and not score_answer(q, q.question) for q in only)


def test_the_general_reference_set_is_human_written_answers_in_both_languages():
    rows = json.loads(bundled_path("general_reference").read_text(encoding="utf-8"))
    assert len(rows) >= 40 and all(set(row) == {"instruction", "output"} for row in rows)
    assert all(len(row["output"]) >= 40 or CJK.search(row["output"]) for row in rows)
    chinese = [row for row in rows if CJK.search(row["instruction"])]
    assert 5 <= len(chinese) < len(rows) and len({normalise_text(r["instruction"]) for r in rows}) == len(rows)
