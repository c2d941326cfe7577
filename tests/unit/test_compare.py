"""tuneforge.eval.compare (scoring and the before/after report), train.replay.trim_to_sentence and bundled data."""

from __future__ import annotations

import json
import re

import pytest

from tuneforge.data.catalog import bundled_path
from tuneforge.errors import UserError
from tuneforge.eval.compare import Comparison, Question, compare_answers, contains_expected, load_questions
from tuneforge.train.replay import trim_to_sentence

CJK = re.compile(r"[\u4e00-\u9fff]")


# ---------------------------------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    "answer,expected,result",
    [
        ("The capital is Paris.", ["Paris"], True),
        ("the capital is paris", ["Paris"], True),
        ("THE CAPITAL IS PARIS!", ["paris"], True),
        ("It is Parisian food.", ["Paris"], False),
        ("2 + 3 = 5", ["5"], True),
        ("The answer is 5.", ["5"], True),
        ("5", ["5"], True),
        ("In 2025 we met.", ["5"], False),
        ("There are 15 of them.", ["5"], False),
        ("5th place", ["5"], False),
        ("There are seven days.", ["7", "seven"], True),
        ("Sevenfold.", ["seven"], False),
        ("Water is H2O.", ["H2O", "H₂O"], True),
        ("Water is h2o", ["H2O"], True),
        ("Water is H₂O.", ["H2O", "H₂O"], True),
        ("孔子是中国古代著名的思想家和教育家。", ["孔子"], True),
        ("我是Conch，很高兴认识你。", ["Conch"], True),
        ("老子是道家的创始人。", ["孔子"], False),
        ("The capital is Lyon.", ["Paris", "Tokyo"], False),
        ("Anything at all", [], False),
    ],
)
def test_contains_expected(answer, expected, result):
    assert contains_expected(answer, expected) is result


# ---------------------------------------------------------------------------------------------------- questions


def test_bundled_demo_questions_with_variables():
    questions = load_questions("demo_questions", {"name": "Conch", "author": "tuneforge"})
    assert len(questions) == 10
    identity = [q for q in questions if q.kind == "identity"]
    general = [q for q in questions if q.kind == "general"]
    assert len(identity) == 5 and len(general) == 5
    # identity is a claim of the name (and of the maker where the question asks who made it), not a mention
    assert all(q.name == "Conch" and not q.expected for q in identity if q.maker is None)
    assert [q.maker for q in identity if q.maker] == ["tuneforge"]
    assert any(CJK.search(q.question) for q in identity)
    assert Question("Which city is the Eiffel Tower in?", "general", ["Paris"]) in general
    assert all(q.expected for q in general)
    assert not any("{{" in json.dumps(q.__dict__) for q in questions)


def test_questions_from_plain_strings(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps(["Who are you, {{name}}?", "2 + 2?"]), encoding="utf-8")
    assert load_questions(str(path), {"name": "Conch"}) == [
        Question("Who are you, Conch?", "general", []),
        Question("2 + 2?", "general", []),
    ]


def test_questions_relative_to_base_dir(tmp_path):
    (tmp_path / "q.json").write_text(json.dumps([{"question": "Q", "kind": "math", "expected": ["4"]}]))
    assert load_questions("q.json", {}, base_dir=tmp_path) == [Question("Q", "math", ["4"])]


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("bad.json", "{not json", r"bad.json:1: malformed JSON"),
        ("bad.json", "[]", r"bad.json: no questions in the file"),
        (
            "bad.json",
            '[\n  "ok",\n  {"expected": ["x"]}\n]',
            r"bad.json:3: each question needs a non-empty 'question'",
        ),
        ("bad.json", '[\n  {"question": 3}\n]', r"bad.json:2: each question needs a non-empty 'question'"),
        (
            "bad.jsonl",
            '{"question": "a"}\n{"question": "b", "expectd": ["x"]}\n',
            r"bad.jsonl:2: unknown key\(s\) 'expectd'",
        ),
        ("bad.jsonl", '{"question": "a"}\n{"question": "b"\n', r"bad.jsonl:2: malformed JSON"),
        ("bad.jsonl", '{"question": "a", "expected": 5}\n', r"bad.jsonl:1: 'expected' must be a list of strings"),
        ("bad.jsonl", '{"question": "a", "only": true}\n', r"bad.jsonl:1: 'only' needs 'expected' fragments"),
        ("bad.csv", "question,only\nQ1,maybe\n", r"bad.csv:2: 'only' must be true or false"),
        ("bad.yaml", "- q\n", r"unsupported file type '.yaml'"),
    ],
)
def test_malformed_questions_are_user_errors_with_their_location(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=match) as info:
        load_questions(str(path), {})
    assert str(path) in str(info.value)


EXPECTED_ROWS = [
    Question("Who are you?", "identity", name="Conch"),
    Question("What is 2 + 3?", "general", ["5", "five"], reference="2 + 3 = 5."),
    Question("Reply with only the word yes.", "instruction", ["yes"], only=True),
]


def test_questions_read_from_jsonl_csv_parquet_and_text_like_data(tmp_path):
    """The layout of every other data file: JSON Lines (`{question, reference}` rows), CSV, Parquet and plain text."""
    rows = [
        {"question": "Who are you?", "kind": "identity", "name": "{{name}}"},
        {"question": "What is 2 + 3?", "expected": ["5", "five"], "reference": "2 + 3 = 5."},
        {"question": "Reply with only the word yes.", "kind": "instruction", "expected": ["yes"], "only": True},
    ]
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert load_questions(str(jsonl), {"name": "Conch"}) == EXPECTED_ROWS

    csv_file = tmp_path / "q.csv"
    csv_file.write_text(
        "question,kind,expected,only,name,reference\n"
        "Who are you?,identity,,,{{name}},\n"
        'What is 2 + 3?,,5|five,,,"2 + 3 = 5."\n'
        "Reply with only the word yes.,instruction,yes,true,,\n",
        encoding="utf-8",
    )
    assert load_questions(str(csv_file), {"name": "Conch"}) == EXPECTED_ROWS

    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "q.parquet"
    columns = {"kind": None, "name": None, "reference": None, "expected": [], "only": False}
    table = pa.Table.from_pylist([{**columns, **row} for row in rows])  # typed columns: missing values are null
    pq.write_table(table, parquet)
    assert load_questions(str(parquet), {"name": "Conch"}) == EXPECTED_ROWS

    text = tmp_path / "q.txt"
    text.write_text("Who are you?\n\nName a colour.\n", encoding="utf-8")
    assert load_questions(str(text), {}) == [Question("Who are you?"), Question("Name a colour.")]


def test_missing_questions_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_questions(str(tmp_path / "none.json"), {})


# ---------------------------------------------------------------------------------------------------- totals


def hand_built() -> Comparison:
    questions = [
        Question("Who are you?", "identity", ["Conch"]),
        Question("Your name?", "identity", ["Conch"]),
        Question("你是谁？", "identity", ["Conch"]),
        Question("Capital of France?", "general", ["Paris"]),
        Question("2 + 3?", "general", ["5", "five"]),
        Question("Write a poem.", "creative", []),  # unscored
    ]
    before = [
        "I am an AI assistant.",
        "My name is Conch.",
        "我是一个助手。",
        "Paris.",
        "It is 25.",
        "Roses are red.",
    ]
    after = [
        "I am Conch, made by ACME.",
        "Conch!",
        "我是Conch。",
        "It is Lyon.",
        "Five.",
        "Violets are blue.",
    ]
    return Comparison(questions, before, after)


EXPECTED_TOTALS = {
    "identity": {"before": [1, 3], "after": [3, 3]},
    "general": {"before": [1, 2], "after": [1, 2]},
}


def test_correct_and_totals():
    comparison = hand_built()
    assert comparison.correct(comparison.before) == [False, True, False, True, False, None]
    assert comparison.correct(comparison.after) == [True, True, True, False, True, None]
    assert comparison.totals() == EXPECTED_TOTALS
    assert list(comparison.totals()) == ["identity", "general"]  # first-seen order, unscored kinds absent


def test_compare_answers_writes_json_markdown_and_html(tmp_path):
    out = tmp_path / "eval"
    compare_answers(hand_built(), out)
    record = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert record["totals"] == EXPECTED_TOTALS
    assert len(record["questions"]) == 6
    assert record["questions"][0] == {
        "question": "Who are you?",
        "kind": "identity",
        "expected": ["Conch"],
        "reference": None,
        "category": None,
        "only": False,
        "name": None,
        "maker": None,
        "before": "I am an AI assistant.",
        "after": "I am Conch, made by ACME.",
        "before_correct": False,
        "after_correct": True,
        "before_scores": {},
        "after_scores": {},
        "before_loop": None,
        "after_loop": None,
        "outcome": "win",
        "flip": "fixed",
    }
    assert record["questions"][5]["before_correct"] is None and record["questions"][5]["outcome"] == "unscored"
    assert record["questions"][2]["after"] == "我是Conch。"  # written as UTF-8, not escaped
    # identity: 2 fixed + 1 right both times; general: Paris broken, 2 + 3 fixed
    assert record["outcomes"] == {
        "identity": {"win": 2, "tie": 1, "loss": 0},
        "general": {"win": 1, "tie": 0, "loss": 1},
    }
    assert record["flipped"] == {"fixed": ["Who are you?", "你是谁？", "2 + 3?"], "broken": ["Capital of France?"]}

    markdown = (out / "compare.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Before vs after\n")
    assert "| identity | Who are you? | ✗ I am an AI assistant. | ✓ I am Conch, made by ACME. | win |" in markdown
    assert "| creative | Write a poem. | · Roses are red. | · Violets are blue. | unscored |" in markdown
    assert "| identity | 1/3 | 3/3 | 2 | 1 | 0 | 0 → 0 |\n| general | 1/2 | 1/2 | 1 | 0 | 1 | 0 → 0 |" in markdown
    assert "**broken** (right before, wrong after):\n- Capital of France?" in markdown

    page = (out / "compare.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page  # self-contained
    assert '<td>identity</td><td class="num">1/3</td><td class="num">3/3</td><td class="num">2</td>' in page
    assert "<li>Capital of France?</li>" in page and "我是Conch。" in page


def test_html_escapes_answers(tmp_path):
    comparison = Comparison([Question("<b>Q</b>", "general", ["a"])], ["<script>alert(1)</script> a"], ["x & y"])
    compare_answers(comparison, tmp_path)
    page = (tmp_path / "compare.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page and "x &amp; y" in page


def test_reference_answers_get_metrics_and_rouge_decides_the_outcome(tmp_path):
    question = Question("Describe the sky.", "general", [], reference="The sky is blue and clear")
    comparison = Comparison([question], ["Rain falls"], ["The sky is blue"])
    record = compare_answers(comparison, tmp_path)
    row = record["questions"][0]
    assert row["before_scores"] == {"exact": 0.0, "rouge_l": 0.0, "bleu4": 0.0}
    # LCS 4 of 4 predicted / 6 reference tokens: F1 = 2 * 1 * 4/6 / (1 + 4/6) = 0.8
    assert row["after_scores"]["rouge_l"] == pytest.approx(0.8)
    assert row["outcome"] == "win"
    assert record["metrics"]["general"]["after"]["rouge_l"] == pytest.approx(0.8)


def test_judge_verdicts_override_the_outcome(tmp_path):
    record = compare_answers(hand_built(), tmp_path, verdicts=["loss", "tie", "win", "win", "tie", "tie"])
    assert [r["outcome"] for r in record["questions"]] == ["loss", "tie", "win", "win", "tie", "tie"]
    assert record["judge"] is True


def test_forgetting_is_flagged_beyond_the_threshold(tmp_path):
    from tuneforge.eval.compare import check_forgetting

    questions = [Question(f"Q{i}", "general", ["yes"], category="c" if i < 5 else "d") for i in range(10)]
    before = ["yes"] * 10
    after = ["yes"] * 9 + ["no"]
    small = check_forgetting(before, after, questions, threshold=10)
    assert small.drop == pytest.approx(10.0) and not small.forgot
    big = check_forgetting(before, after, questions, threshold=5)
    assert big.forgot and "lower train.learning_rate" in big.advice()
    assert big.per_category == {"c": [1.0, 1.0], "d": [1.0, 0.8]}
    record = compare_answers(hand_built(), tmp_path, forgetting=big)
    assert record["forgetting"]["base"] == 1.0 and record["forgetting"]["tuned"] == 0.9
    assert "base 100.0% → tuned 90.0% on 10 items (-10.0 points, threshold 5)" in (tmp_path / "compare.md").read_text()


def test_markdown_escapes_pipes_and_newlines(tmp_path):
    comparison = Comparison([Question("Q", "general", ["a"])], ["a | b\nc"], ["x"])
    compare_answers(comparison, tmp_path)
    markdown = (tmp_path / "compare.md").read_text(encoding="utf-8")
    assert "| general | Q | ✓ a \\| b c | ✗ x | loss |" in markdown


# ---------------------------------------------------------------------------------------------------- replay trimming


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Hello there. How are", "Hello there."),
        ("Done!", "Done!"),
        ("What? Yes! Fine. And then", "What? Yes! Fine."),
        ("Pi is about 3.14 and", ""),  # a decimal point is not a sentence end
        ("我很好。你呢", "我很好。"),
        ("你好！今天天气很好？我们去", "你好！今天天气很好？"),
        ("Line one\nline two without end", "Line one"),
        ("No sentence end at all", ""),
        ("", ""),
    ],
)
def test_trim_to_sentence(text, expected):
    assert trim_to_sentence(text) == expected


# ---------------------------------------------------------------------------------------------------- bundled data


def test_bundled_identity_dataset():
    path = bundled_path("identity")
    assert path is not None and path.name == "identity.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    assert len(rows) >= 40
    assert all(set(row) <= {"instruction", "input", "output"} for row in rows)
    chinese = [row for row in rows if CJK.search(row["instruction"])]
    english = [row for row in rows if not CJK.search(row["instruction"])]
    assert chinese and english
    assert all("{{name}}" in row["output"] for row in rows)
    # held-out: the identity demo questions are not training instructions
    instructions = {row["instruction"].strip().lower() for row in rows}
    demo = load_questions("demo_questions", {"name": "Conch"})
    identity_questions = [q.question for q in demo if q.kind == "identity"]
    assert len(identity_questions) == 5
    assert not [q for q in identity_questions if q.strip().lower() in instructions]


def test_bundled_general_prompts_are_distinct_and_held_out_from_the_eval_sets():
    path = bundled_path("general_prompts")
    assert path is not None and path.name == "general_prompts.json"
    prompts = json.loads(path.read_text(encoding="utf-8"))
    assert prompts[0] == "What is a volcano?" and len(prompts) >= 40
    normalised = [str(p).strip().lower() for p in prompts]
    assert all(normalised) and len(set(normalised)) == len(prompts) and not any("{{" in p for p in normalised)
    # self-replay trains on the base model's answers to these: none may be a question the evaluation asks
    asked = [q.question for q in load_questions("demo_questions", {}) + load_questions("general_check", {})]
    assert not set(normalised) & {q.strip().lower() for q in asked}
