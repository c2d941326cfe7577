"""`tuneforge compare` end to end on tiny models: every output file, and the files agree with the terminal."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import MEMORISE, run_cli, write_config, write_memorisation_set

from fixtures.judge_server import answers_of, fake_judges
from tuneforge.eval.scores import bleu4, exact_match, rouge_l


@pytest.fixture(scope="module")
def tuned_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("compare-run")
    data = write_memorisation_set(work / "m.jsonl")
    config = write_config(
        work / "cfg.yaml",
        tiny_llama_dir,
        data,
        work / "run",
        train={"max_steps": 30, "learning_rate": 1.0e-2, "scheduler": "constant"},
    )
    result = run_cli("train", str(config), cwd=work)
    assert result.returncode == 0, result.stderr
    return work / "run"


def _questions(path: Path) -> Path:
    """The questions as a JSON list, or as JSON Lines (one {question, ...} object a line) for a .jsonl path."""
    items = [{"question": q, "kind": "memorised", "expected": [a.split()[-1].strip(".")]} for q, a in MEMORISE[:4]]
    items.append({"question": "Say hello.", "kind": "reference", "reference": "Hello there, friend."})
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    else:
        path.write_text(json.dumps(items), encoding="utf-8")
    return path


REFERENCE = [
    ("What is a tree?", "A tree is a tall plant with a wooden trunk."),
    ("Why do we cook food?", "Cooking makes food safer to eat and easier to digest."),
    ("What is a river?", "A river is a stream of water that flows to the sea."),
]

# the word the fake judge looks for in each question's answers (the memorised answer's last word, or "friend")
JUDGE_WORDS = {q: a.split()[-1].strip(".").lower() for q, a in MEMORISE[:4]} | {"Say hello.": "friend"}


def _judge_reply(prompt: str) -> str:
    """A contrary judge: it prefers the answer *without* the question's word (TIE when both or neither have it),
    so its verdicts are the opposite of what correctness alone would give and cannot be mistaken for them."""
    word = JUDGE_WORDS[prompt.split("Question: ", 1)[1].split("\n\n", 1)[0]]
    a, b = (word in answer.lower() for answer in answers_of(prompt))
    return "B" if a and not b else "A" if b and not a else "TIE"


def _expected_outcome(row: dict[str, Any]) -> str:
    word = JUDGE_WORDS[row["question"]]
    tuned, base = word in row["after"].lower(), word in row["before"].lower()
    return "loss" if tuned and not base else "win" if base and not tuned else "tie"


@pytest.mark.scenario("judge_key")
def test_compare_writes_every_report_and_matches_the_terminal(
    tiny_llama_dir: Path, tuned_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = _questions(tmp_path / "q.jsonl")  # JSON Lines, the layout of every other data file
    general = tmp_path / "general.json"
    general.write_text(json.dumps([{"question": q, "expected": [a.split()[-1].strip(".")]} for q, a in MEMORISE]))
    reference = tmp_path / "reference.jsonl"
    reference.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in REFERENCE))
    monkeypatch.setenv("TUNEFORGE_JUDGE_API_KEY", "compare-key")
    monkeypatch.delenv("TUNEFORGE_JUDGE_URL", raising=False)
    with fake_judges() as serve:
        judge = serve(reply=_judge_reply)
        result = run_cli(
            "compare", "--base", str(tiny_llama_dir), "--tuned", str(tuned_run), "--questions", str(questions),
            "--general", str(general), "--general-reference", str(reference), "--judge", judge.url, "--judge-model", "fake-judge", "--max-new-tokens", "12",
            "--out", str(tmp_path / "out"), cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # the endpoint named with --judge got both orders of all 5 questions, with the key
    assert judge.authorizations() == ["Bearer compare-key"] * 10
    assert [r["body"]["model"] for r in judge.seen] == ["fake-judge"] * 10
    out = tmp_path / "out"
    record = json.loads((out / "compare.json").read_text())
    assert len(record["questions"]) == 5 and record["judge"] is True
    # the judge's verdicts, worked out from the recorded answers, are the outcomes
    expected = [_expected_outcome(row) for row in record["questions"]]
    assert [row["outcome"] for row in record["questions"]] == expected
    assert "loss" in expected  # the tuned model learned answers the base model did not give: the judge disagrees
    memorised = Counter(expected[:4])
    assert record["outcomes"]["memorised"] == {k: memorised[k] for k in ("win", "tie", "loss")}
    said_hello = record["questions"][4]
    assert said_hello["after_scores"] == {
        "exact": exact_match(said_hello["after"], ["Hello there, friend."]),
        "rouge_l": pytest.approx(rouge_l(said_hello["after"], ["Hello there, friend."])),
        "bleu4": pytest.approx(bleu4(said_hello["after"], ["Hello there, friend."])),
    }
    assert record["forgetting"]["items"] == 8
    # the likelihood figure beside the generation figure, on answers neither model was trained on
    likelihood = record["likelihood"]
    assert likelihood["items"] == len(REFERENCE) and likelihood["tokens"] > 0
    assert likelihood["source"] == str(reference) and likelihood["forgot"] == (likelihood["rise"] > 0.05)
    # the memorised answers were learned: the tuned model gets more of them right than the base model
    right_before, scored = record["totals"]["memorised"]["before"]
    right_after, _ = record["totals"]["memorised"]["after"]
    assert scored == 4 and right_after > right_before
    # the terminal summary carries the same numbers as the files
    terminal = result.stderr + result.stdout
    outcome = record["outcomes"]["memorised"]
    row = rf"memorised\s*│\s*{right_before}/4\s*│\s*{right_after}/4\s*│\s*{outcome['win']}\s*│\s*{outcome['tie']}"
    assert re.search(row, terminal), terminal
    page = (out / "compare.html").read_text()
    assert f'<td>memorised</td><td class="num">{right_before}/4</td><td class="num">{right_after}/4</td>' in page
    assert (out / "compare.md").read_text().count("| memorised |") == 5  # 4 questions + the totals row
    flat = " ".join(terminal.split())
    assert f"base {likelihood['base_loss']:.3f} → tuned {likelihood['tuned_loss']:.3f}" in flat


def test_compare_defaults_to_the_run_directory(tiny_llama_dir: Path, tuned_run: Path, tmp_path: Path) -> None:
    questions = _questions(tmp_path / "q.json")
    result = run_cli(
        "compare", "--base", str(tiny_llama_dir), "--tuned", str(tuned_run), "--questions", str(questions),
        "--max-new-tokens", "4", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tuned_run / "eval").iterdir()} >= {"compare.json", "compare.md", "compare.html"}


def test_compare_needs_questions(tiny_llama_dir: Path, tmp_path: Path) -> None:
    result = run_cli("compare", "--base", str(tiny_llama_dir), "--tuned", str(tiny_llama_dir), cwd=tmp_path)
    assert result.returncode == 2 and "--questions" in result.stderr and "--general-reference" in result.stderr


@pytest.mark.scenario("judge_key")
def test_compare_refuses_a_remote_judge_without_the_opt_in(tiny_llama_dir: Path, tmp_path: Path) -> None:
    questions = _questions(tmp_path / "q.json")
    result = run_cli(
        "compare", "--base", str(tiny_llama_dir), "--tuned", str(tiny_llama_dir), "--questions", str(questions),
        "--judge", "https://judge.example.com/v1", "--judge-model", "m", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "'judge.example.com' is not on this machine" in result.stderr and "--judge-remote" in result.stderr
    assert "loading base model" not in result.stderr  # refused before any model was loaded
