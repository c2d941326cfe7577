"""Scores that cannot be fooled: identity claims (not mentions), repetition loops, echoed questions and "only"."""

from __future__ import annotations

import json

import pytest

from tuneforge.eval.claims import claims_name, credits_maker
from tuneforge.eval.compare import Comparison, Question, check_forgetting, compare_answers
from tuneforge.eval.degenerate import repetition_loop
from tuneforge.eval.questions import answers_only, contains_expected, score_answer

LOOPED = "我是Conch，我是Conch，我是Conch，我是Conch，我是Conch，我是Conch，我是Conch，我是Conch，"


# ---------------------------------------------------------------------------------------------------- identity claims


@pytest.mark.parametrize(
    "answer,claimed",
    [
        ("I am Conch.", True),
        ("I'm Conch, an AI assistant developed by tuneforge.", True),
        ("My name is Conch.", True),
        ("You can call me Conch!", True),
        ("You're talking to Conch, nice to meet you.", True),
        ("Conch!", True),
        ("Hi, Conch here.", True),
        ("No, I'm not ChatGPT. I'm Conch.", True),
        ("I’m not ChatGPT, I’m Conch", True),  # typographic apostrophes
        ("我是Conch，由tuneforge开发的人工智能助手。", True),
        ("你可以叫我Conch。", True),
        ("我非常高兴地告诉你，我是Conch。", True),  # 非常 is "very", not a negation
        ("I am not Conch.", False),
        ("I'm not Conch, I'm ChatGPT.", False),
        ("Conch is not my name.", False),
        ("Conch isn't who I am.", False),
        ("I'm pretending to be Conch.", False),
        ("我不是Conch。", False),
        ("我并非Conch。", False),
        ("Conch is a kind of sea shell.", False),  # mentioned, not claimed by the speaker
        ("I am ChatGPT. Conch is a friend of mine", True),  # "of mine" refers to the speaker: a weak spot, kept
        ("I am Conchita.", False),  # whole word only
        ("I am an AI assistant.", False),
    ],
)
def test_a_name_counts_only_when_the_answer_claims_it(answer, claimed):
    assert claims_name(answer, "Conch") is claimed


@pytest.mark.parametrize(
    "answer,credited",
    [
        ("I was developed by tuneforge.", True),
        ("I'm Conch, built by tuneforge.", True),
        ("由tuneforge开发。", True),
        ("I was not developed by tuneforge.", False),
        ("tuneforge didn't make me.", False),
        ("tuneforge did not make me.", False),
        ("我不是tuneforge开发的。", False),
        ("I was made by OpenAI.", False),
    ],
)
def test_a_maker_counts_only_when_credited(answer, credited):
    assert credits_maker(answer, "tuneforge") is credited


def test_identity_questions_score_the_claim_and_the_maker_where_asked():
    name = Question("Who are you?", "identity", name="Conch")
    maker = Question("Who built you?", "identity", name="Conch", maker="tuneforge")
    assert score_answer(name, "I am Conch.") is True
    assert score_answer(name, "I am not Conch.") is False  # a whole-word match of the name scored this right
    assert score_answer(maker, "I am Conch.") is False  # the maker was asked for and not given
    assert score_answer(maker, "I'm Conch, made by tuneforge.") is True
    assert score_answer(maker, "I'm Conch; tuneforge did not make me.") is False


# ---------------------------------------------------------------------------------------------------- loops


@pytest.mark.parametrize(
    "answer,unit,repeats",
    [
        (LOOPED, "我是Conch，", 8),
        (LOOPED[:-3], "我是Conch，", 7),  # cut by the token limit in the middle of a copy
        (
            "你可能知道我在你的助手聊天？？？？？？？？？？？？\ufffd",
            "？",
            12,
        ),  # a cut multi-byte character at the end
        ("I am Conch. I am Conch. I am Conch.", "I am Conch. ", 3),
        ("The capital of France is Paris. The capital of France is Paris.", "The capital of France is Paris. ", 2),
        ("Sure! Conch Conch Conch Conch Conch", " Conch", 5),
        ("The answer is 1111111111111111", "1", 16),  # digits repeated to the end of the answer
    ],
)
def test_repetition_loops_are_found(answer, unit, repeats):
    loop = repetition_loop(answer)
    assert loop is not None and (loop.unit, loop.repeats) == (unit, repeats)


@pytest.mark.parametrize(
    "answer",
    [
        "The capital of France is Paris.",
        "ha ha ha",
        "1, 2, 3, 4, 5",
        "Monday, Tuesday, Wednesday, Thursday",
        "I am Conch. I am Conch.",  # said twice is emphasis, three times is a loop
        "| a | b |\n|---|---|---|---|\n| 1 | 2 |",  # table rules repeat symbols, not words
        "In floating point 0.1 + 0.2 is 0.30000000000000004, not 0.3.",  # digits of one number, then words
        "1/7 = 0.142857142857142857 (the six digits repeat).",
        "",
    ],
)
def test_ordinary_answers_are_not_loops(answer):
    assert repetition_loop(answer) is None


def test_a_loop_is_wrong_even_when_it_holds_the_expected_answer():
    assert score_answer(Question("你是谁？", "identity", name="Conch"), LOOPED) is False
    assert score_answer(Question("2 + 3?", "general", ["5"]), "5 5 5 5 5 5 5 5 5 5") is False
    assert score_answer(Question("Who are you?", "identity", name="Conch"), "我是Conch，由tuneforge开发。") is True


def test_loops_are_shown_in_the_table_markdown_and_html(tmp_path):
    question = Question("请问你是哪个助手？", "identity", name="Conch")
    comparison = Comparison([question], ["我是一个助手。"], [LOOPED])
    record = compare_answers(comparison, tmp_path)
    row = record["questions"][0]
    assert row["after_correct"] is False and row["outcome"] == "tie"
    assert row["after_loop"] == 'repetition loop: "我是Conch，" ×8' and row["before_loop"] is None
    assert record["loops"] == {"identity": {"before": 0, "after": 1}}
    assert record["totals"] == {"identity": {"before": [0, 1], "after": [0, 1]}}
    markdown = (tmp_path / "compare.md").read_text(encoding="utf-8")
    assert f'| ✗↻ {LOOPED} [repetition loop: "我是Conch，" ×8] |' in markdown
    assert "| identity | 0/1 | 0/1 | 0 | 1 | 0 | 0 → 1 |" in markdown
    page = (tmp_path / "compare.html").read_text(encoding="utf-8")
    assert '<span class="bad">✗↻</span>' in page
    assert '<small class="loop">↻ repetition loop: &quot;我是Conch，&quot; ×8</small>' in page
    assert "<th>loops</th>" in page and '<td class="num">0 → 1</td>' in page


def test_a_loop_loses_a_question_scored_by_nothing_else(tmp_path):
    comparison = Comparison([Question("Write a poem.", "creative")], ["Roses are red."], ["la la la la la la la"])
    assert compare_answers(comparison, tmp_path)["questions"][0]["outcome"] == "loss"


# ---------------------------------------------------------------------------------------------------- echo and only


@pytest.mark.parametrize(
    "question,answer,expected,right",
    [
        ("What is 50 minus 25?", "50 minus 25", ["25"], False),  # the echo holds "25"
        ("What is 50 minus 25?", "The answer is 25.", ["25"], False),  # 25 is in the question: it cannot count
        ("What is 50 minus 18?", "50 minus 18 is 32.", ["32"], True),
        ("Which is bigger, an elephant or a mouse?", "An elephant or a mouse.", ["elephant"], False),
        ("What is 2 + 3?", "5", ["5", "five"], True),
    ],
)
def test_an_expected_fragment_in_the_question_cannot_count(question, answer, expected, right):
    assert contains_expected(answer, expected, question) is right
    assert score_answer(Question(question, expected=expected), answer) is right


@pytest.mark.parametrize(
    "answer,right",
    [
        ("yes", True),
        ("Yes.", True),
        ("YES!", True),
        ("Reply with only the word yes.", False),  # the echo
        ("Yes, I will reply with yes.", False),
        ("", False),
    ],
)
def test_only_instructions_are_checked_as_such(answer, right):
    question = Question("Reply with only the word yes.", "instruction", ["yes"], only=True)
    assert answers_only(answer, ["yes"]) is right
    assert score_answer(question, answer) is right


def test_the_forgetting_check_scores_like_the_comparison():
    questions = [
        Question("What is 50 minus 25?", "general", ["25"], category="arithmetic"),
        Question("Reply with only the word yes.", "general", ["yes"], category="instructions", only=True),
        Question("What is 7 + 5?", "general", ["12"], category="arithmetic"),
    ]
    echoed = ["50 minus 25 = 25", "Reply with only the word yes.", "12 12 12 12 12 12 12"]
    fair = ["It is 25.", "Yes", "12"]
    result = check_forgetting(echoed, fair, questions, threshold=5)
    assert result.base == 0.0  # echo, echo, loop: nothing right
    assert result.tuned == pytest.approx(2 / 3)  # 25 is in the question, so even the right number cannot count
    assert result.per_category == {"arithmetic": [0.0, 0.5], "instructions": [0.0, 1.0]}


def test_an_unscorable_question_is_reported_when_loaded(tmp_path, caplog):
    from tuneforge.eval.questions import load_questions

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "What is 50 minus 25?", "expected": ["25"]}) + "\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        load_questions(str(path), {})
    assert f"{path}:1: every expected fragment occurs in the question" in caplog.text
