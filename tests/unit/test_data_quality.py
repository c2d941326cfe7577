"""tuneforge.data.quality and the row report: duplicates, the drop-ratio guard, an injected-fault file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from fixtures.tiny_models import write_jsonl
from tuneforge.config.schema import DataSection
from tuneforge.data import Conversation, DataReport, Message
from tuneforge.data.build import build_dataset, check_drop_ratio
from tuneforge.data.pipeline import PreparedData
from tuneforge.data.quality import DuplicateFinder, Problem, normalise_text
from tuneforge.errors import UserError


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def build(tokenizer: Any, files: list[Path], **options: Any) -> PreparedData:
    """build_dataset without a cache or a validation split; the report must always balance."""
    options = {"val_size": 0, "max_drop_ratio": 1.0, **options}
    prepared, cached = build_dataset(DataSection(train=[str(f) for f in files], **options), tokenizer, seed=0)
    assert cached is False
    report = prepared.report
    assert report.balanced, report.summary()
    assert report.kept + report.truncated + report.dropped_total == report.total
    assert len(prepared.train) + len(prepared.val) == report.kept + report.truncated
    return prepared


def sources(prepared: PreparedData) -> list[str]:
    return sorted(s.source for s in prepared.train + prepared.val)


# ---------------------------------------------------------------------------------------------------- duplicates

DUPLICATE_ROWS = [
    {"instruction": "What is the capital of France?", "output": "Paris."},  # 1
    {"instruction": "What is the capital of France?", "output": "Paris."},  # 2: exact copy of 1
    {"instruction": "what is the capital of france", "output": "paris"},  # 3: case and punctuation differ from 1
    {"instruction": "WHAT  is the   capital of France?!", "output": "Paris!"},  # 4: spaces and punctuation
    {"instruction": "How many legs does a spider have?", "output": "Eight."},  # 5
    {"instruction": "what is the capital of france", "output": "paris"},  # 6: exact copy of 3
    {"instruction": "How many legs does a spider have", "output": "Eight"},  # 7: near copy of 5
]


def duplicate_problems(path: Path) -> list[tuple[str, str, str]]:
    return [
        (f"{path}:2", "exact duplicate", f"same as {path}:1"),
        (f"{path}:3", "near-duplicate", f"same as {path}:1"),
        (f"{path}:4", "near-duplicate", f"same as {path}:1"),
        (f"{path}:6", "exact duplicate", f"same as {path}:3"),
        (f"{path}:7", "near-duplicate", f"same as {path}:5"),
    ]


@pytest.mark.parametrize(
    ("dedup", "dropped_reasons", "kept_lines"),
    [
        ("none", set(), [1, 2, 3, 4, 5, 6, 7]),
        ("exact", {"exact duplicate"}, [1, 3, 4, 5, 7]),
        ("normalized", {"exact duplicate", "near-duplicate"}, [1, 5]),
    ],
)
def test_dedup_modes_drop_or_flag(tokenizer, tmp_path, dedup, dropped_reasons, kept_lines):
    path = write_jsonl(tmp_path / "dups.jsonl", DUPLICATE_ROWS)
    prepared = build(tokenizer, [path], dedup=dedup)
    report = prepared.report
    assert report.total == 7
    assert sources(prepared) == sorted(f"{path}:{n}" for n in kept_lines)
    assert report.kept == len(kept_lines)
    counts = {"exact duplicate": 2, "near-duplicate": 3}
    assert report.dropped == {r: c for r, c in counts.items() if r in dropped_reasons}
    assert report.flagged == {r: c for r, c in counts.items() if r not in dropped_reasons}
    expected = [Problem(w, r, d, dropped=r in dropped_reasons) for w, r, d in duplicate_problems(path)]
    assert report.issues == expected
    assert report.problems[0] == f"{path}:2: exact duplicate: same as {path}:1"


def test_summary_line_counts_dropped_and_flagged(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "dups.jsonl", DUPLICATE_ROWS)
    report = build(tokenizer, [path], dedup="exact").report
    assert report.summary() == (
        "kept 5 + truncated 0 + dropped 2 = 7 rows (dropped: exact duplicate 2); flagged: near-duplicate 3"
    )


def test_duplicates_are_found_across_files_first_occurrence_wins(tokenizer, tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Hi", "output": "Hello"}, {"text": "Hello, world!"}])
    second = write_jsonl(
        tmp_path / "b.jsonl",
        [
            {"text": "A new line of text."},
            {"instruction": "Hi", "output": "Hello"},
            {"text": "hello world"},
        ],
    )
    prepared = build(tokenizer, [first, second], dedup="normalized")
    report = prepared.report
    assert report.total == 5 and report.kept == 3
    assert report.problems == [
        f"{second}:2: exact duplicate: same as {first}:1",
        f"{second}:3: near-duplicate: same as {first}:2",
    ]
    assert report.read_per_dataset == {str(first): 2, str(second): 3}
    assert report.per_dataset == {str(first): 2, str(second): 1}


def test_rows_that_only_look_alike_are_not_duplicates(tokenizer, tmp_path):
    path = write_jsonl(
        tmp_path / "distinct.jsonl",
        [
            {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."},
            {"prompt": "Sky?", "chosen": "Green.", "rejected": "Blue."},  # the answers swapped: another pair
            {"prompt": "2 + 2?", "completion": "4", "label": True},
            {"prompt": "2 + 2?", "completion": "4", "label": False},  # another label
            {"instruction": "Hi", "output": "Hello"},
            {"instruction": "Hello", "output": "Hi"},  # the same words in other roles
            {"instruction": "2+2=4?", "output": "Yes"},
            {"instruction": "2 + 2 = 5?", "output": "Yes"},  # a different digit
        ],
    )
    report = build(tokenizer, [path], dedup="normalized").report
    assert report.total == report.kept == 8
    assert report.issues == []


def test_normalise_text():
    assert normalise_text("  Hello,   WORLD!! _under_score_ ") == "hello world under score"
    assert normalise_text("你好，世界！") == "你好 世界"
    assert normalise_text("Ça va?  ÇA VA!") == "ça va ça va"
    assert normalise_text("?!...") == ""


def test_duplicate_finder_reports_the_first_copy():
    finder = DuplicateFinder()

    def row(source: str, answer: str) -> Conversation:
        return Conversation([Message("user", "Hi"), Message("assistant", answer)], source=source)

    assert finder.check(row("f:1", "Hello!")) is None
    assert finder.check(row("f:2", "Hello!")) == ("exact duplicate", "f:1")
    assert finder.check(row("f:3", "hello")) == ("near-duplicate", "f:1")
    assert finder.check(row("f:4", "hello")) == ("exact duplicate", "f:3")
    assert finder.check(row("f:5", "Goodbye")) is None
    assert finder.check(Conversation([], text="Hi hello", source="f:6")) is None


# ---------------------------------------------------------------------------------------------------- drop ratio


def report_with(total: int, **dropped: int) -> DataReport:
    report = DataReport(total=total)
    for reason, count in dropped.items():
        for index in range(count):
            report.drop(f"d.jsonl:{index + 1}", reason.replace("_", " "), "detail")
    report.kept = total - report.dropped_total
    assert report.balanced
    return report


def test_check_drop_ratio_names_the_ratio_and_the_validate_command():
    report = report_with(20, malformed_JSON=2, missing_field=1, exact_duplicate=4)
    with pytest.raises(UserError) as info:
        check_drop_ratio(report, 0.05)
    message = str(info.value)
    assert message.startswith(
        "3 of 20 rows (15.0%) are unusable (malformed JSON 2, missing field 1), more than data.max_drop_ratio=0.05. "
        "Run `tuneforge data validate` for the full list, fix the data, or raise data.max_drop_ratio. "
        "First: d.jsonl:1: malformed JSON: detail; d.jsonl:2: malformed JSON: detail; d.jsonl:1: missing field: detail"
    )
    assert "duplicate" not in message
    check_drop_ratio(report, 0.15)  # 15% is not more than 15%
    with pytest.raises(UserError, match=r"3 of 20 rows \(15\.0%\).*max_drop_ratio=0\.149"):
        check_drop_ratio(report, 0.149)


def test_check_drop_ratio_does_not_count_duplicates_or_length_filters():
    report = report_with(
        10, exact_duplicate=3, **{"near-duplicate": 2}, too_short=1, over_the_cutoff_length=1, empty_answer=1
    )
    assert report.dropped_total == 8
    check_drop_ratio(report, 0.1)  # only the empty answer counts: 1 of 10
    with pytest.raises(UserError, match=r"^1 of 10 rows \(10\.0%\) are unusable \(empty answer 1\)"):
        check_drop_ratio(report, 0.05)
    check_drop_ratio(DataReport(), 0.0)  # nothing read, nothing to complain about


def test_too_many_malformed_rows_stop_the_build(tokenizer, tmp_path):
    rows = [json.dumps({"instruction": f"Question {i}?", "output": f"Answer {i}."}) for i in range(18)]
    rows[4] = '{"instruction": "broken"'
    rows[9] = json.dumps({"instruction": "no output"})
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        build_dataset(DataSection(train=[str(path)], val_size=0), tokenizer, seed=0)
    message = str(info.value)
    assert message.startswith("2 of 18 rows (11.1%) are unusable (malformed JSON 1, missing field 1)")
    assert "data.max_drop_ratio=0.05" in message and "`tuneforge data validate`" in message
    assert f"First: {path}:5: malformed JSON: " in message
    assert f"{path}:10: missing field: missing field 'output'" in message
    # the same share of exact duplicates is no error: they are dropped and counted
    duplicated = [json.dumps({"instruction": f"Question {i}?", "output": f"Answer {i}."}) for i in range(16)]
    duplicated += duplicated[:2]
    path.write_text("\n".join(duplicated) + "\n", encoding="utf-8")
    prepared, _ = build_dataset(DataSection(train=[str(path)], val_size=0), tokenizer, seed=0)
    assert prepared.report.dropped == {"exact duplicate": 2}
    assert prepared.report.kept == 16 and prepared.report.balanced
    # raising the limit lets the malformed file through, every bad row still counted
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    prepared = build(tokenizer, [path], max_drop_ratio=0.12)
    assert prepared.report.dropped == {"malformed JSON": 1, "missing field": 1}


# ---------------------------------------------------------------------------------------------------- injected faults

STORY = (
    "Once upon a time, in a quiet village near the mountains, there lived an old baker who loved music. "
    "Every morning she opened her shop, lit the oven, and sang while the bread was rising."
)


def write_faults(path: Path) -> Path:
    lines = [
        json.dumps({"instruction": "Say hi", "input": "", "output": "hi"}),  # 1 ok (36 tokens)
        '{"instruction": "broken", "output": "x"',  # 2 bad JSON
        json.dumps({"instruction": "No answer here", "input": ""}),  # 3 missing output
        json.dumps({"instruction": "Empty", "input": "", "output": "   "}),  # 4 empty answer
        json.dumps({"instruction": "Say hi", "input": "", "output": "hi"}),  # 5 duplicate of 1
        "",  # 6 blank: not a row
        json.dumps({"instruction": "Tell me a story.", "input": "", "output": STORY}),  # 7 over the cutoff
        json.dumps({"instruction": "What is the capital of France?", "input": "", "output": "Paris."}),  # 8 ok (42)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


READ_PROBLEMS = [
    (3, "missing field", "missing field 'output'"),
    (4, "empty answer", "message 2 (assistant) is empty"),
]


def test_injected_faults_are_each_reported_with_line_and_reason(tokenizer, tmp_path):
    path = write_faults(tmp_path / "faults.jsonl")
    prepared = build(tokenizer, [path], format="alpaca", cutoff_len=48)
    report = prepared.report
    assert (report.total, report.kept, report.truncated, report.dropped_total) == (7, 2, 1, 4)
    assert report.dropped == {"malformed JSON": 1, "missing field": 1, "empty answer": 1, "exact duplicate": 1}
    assert report.flagged == {}
    assert [(p.where, p.reason, p.dropped) for p in report.issues] == [
        (f"{path}:2", "malformed JSON", True),
        (f"{path}:3", "missing field", True),
        (f"{path}:4", "empty answer", True),
        (f"{path}:5", "exact duplicate", True),
        (f"{path}:7", "over the cutoff length", False),
    ]
    assert report.problems[0].startswith(f"{path}:2: malformed JSON: malformed JSON (Expecting ',' delimiter")
    assert report.problems[1:] == [
        *(f"{path}:{line}: {reason}: {detail}" for line, reason, detail in READ_PROBLEMS),
        f"{path}:5: exact duplicate: same as {path}:1",
        f"{path}:7: over the cutoff length: longer than data.cutoff_len=48 tokens, cut to it",
    ]
    assert report.summary() == (
        "kept 2 + truncated 1 + dropped 4 = 7 rows "
        "(dropped: malformed JSON 1, missing field 1, empty answer 1, exact duplicate 1)"
    )
    samples = {s.source: s for s in prepared.train}
    assert sorted(samples) == [f"{path}:1", f"{path}:7", f"{path}:8"]
    assert samples[f"{path}:7"].truncated is True and len(samples[f"{path}:7"].input_ids) == 48
    assert [samples[f"{path}:{n}"].truncated for n in (1, 8)] == [False, False]
    assert report.per_dataset == {str(path): 3}
    assert report.read_per_dataset == {str(path): 7}


def test_injected_faults_with_overlength_drop(tokenizer, tmp_path):
    path = write_faults(tmp_path / "faults.jsonl")
    report = build(tokenizer, [path], format="alpaca", cutoff_len=48, overlength="drop").report
    assert (report.total, report.kept, report.truncated, report.dropped_total) == (7, 2, 0, 5)
    assert report.dropped == {
        "malformed JSON": 1,
        "missing field": 1,
        "empty answer": 1,
        "exact duplicate": 1,
        "over the cutoff length": 1,
    }
    assert report.problems[-1] == f"{path}:7: over the cutoff length: longer than data.cutoff_len=48"
    assert all(p.dropped for p in report.issues)


def test_injected_faults_with_min_tokens(tokenizer, tmp_path):
    path = write_faults(tmp_path / "faults.jsonl")
    prepared = build(tokenizer, [path], format="alpaca", cutoff_len=48, min_tokens=40)
    report = prepared.report
    assert (report.total, report.kept, report.truncated, report.dropped_total) == (7, 1, 1, 5)
    assert report.dropped["too short"] == 1
    assert f"{path}:1: too short: 36 tokens < data.min_tokens=40" in report.problems
    assert sources(prepared) == [f"{path}:7", f"{path}:8"]
    # the same threshold one token lower keeps the 36-token row
    assert build(tokenizer, [path], format="alpaca", cutoff_len=48, min_tokens=36).report.kept == 2


# ---------------------------------------------------------------------------------------------------- placeholders


def test_identity_data_without_variables_stops_the_build_naming_the_variables(tokenizer, tmp_path):
    other = write_jsonl(
        tmp_path / "qa.jsonl", [{"instruction": f"Question {i}?", "output": f"{i}."} for i in range(24)]
    )
    data = DataSection(train=["identity", str(other)], val_size=0)
    with pytest.raises(UserError) as info:
        build_dataset(data, tokenizer, seed=0)
    message = str(info.value)
    assert message.startswith(
        "76 of 100 rows (76.0%) are unusable (unfilled placeholder 76), more than data.max_drop_ratio=0.05. "
    )
    assert (
        " Rows use placeholders that have no value ({{name}} in 76, {{author}} in 70 rows): "
        "set data.variables.name=YourValue and data.variables.author=YourValue (identity data needs them), "
        "or set data.placeholders: keep to train the text as written. First: "
    ) in message
    # every row of the bundled identity set uses a placeholder: alone, nothing is left, and the message says why
    with pytest.raises(UserError) as info:
        build_dataset(DataSection(train=["identity"], val_size=0), tokenizer, seed=0)
    assert str(info.value).startswith(
        "no training samples left after filtering (kept 0 + truncated 0 + dropped 76 = 76 rows "
        "(dropped: unfilled placeholder 76)). Rows use placeholders that have no value ({{name}} in 76, {{author}} "
        "in 70 rows): set data.variables.name=YourValue and data.variables.author=YourValue"
    )
    prepared = build(tokenizer, [Path("identity")], variables={"name": "Conch", "author": "ACME"})
    assert prepared.report.kept == 76 and prepared.report.dropped == {}
    texts = [tokenizer.decode(s.input_ids) for s in prepared.train]
    assert sum("Conch" in t for t in texts) == 76 and not any("{{" in t for t in texts)


def test_placeholders_keep_trains_the_braces(tokenizer, tmp_path):
    rows = [{"instruction": "Loop?", "output": "loop: {{ items }}"}, {"instruction": "Hi", "output": "Hello"}]
    path = write_jsonl(tmp_path / "code.jsonl", rows)
    prepared = build(tokenizer, [path], placeholders="keep")
    answers = [tokenizer.decode([t for t in s.labels if t != -100]) for s in prepared.train]
    assert sorted(answers) == ["Hello<|im_end|>\n", "loop: {{ items }}<|im_end|>\n"]
    report = build(tokenizer, [path]).report  # the default refuses it, counted
    assert report.dropped == {"unfilled placeholder": 1} and report.kept == 1
    assert report.problems == [
        f"{path}:1: unfilled placeholder: {{{{items}}}} has no value in data.variables: set data.variables.items="
        "YourValue, or set data.placeholders: keep to train such text as written"
    ]
