"""`tuneforge compare` end to end on tiny models: every output file, and the files agree with the terminal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_helpers import MEMORISE, run_cli, write_config, write_memorisation_set


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
    items = [{"question": q, "kind": "memorised", "expected": [a.split()[-1].strip(".")]} for q, a in MEMORISE[:4]]
    items.append({"question": "Say hello.", "kind": "reference", "reference": "Hello there, friend."})
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def test_compare_writes_every_report_and_matches_the_terminal(
    tiny_llama_dir: Path, tuned_run: Path, tmp_path: Path
) -> None:
    questions = _questions(tmp_path / "q.json")
    general = tmp_path / "general.json"
    general.write_text(json.dumps([{"question": q, "expected": [a.split()[-1].strip(".")]} for q, a in MEMORISE]))
    result = run_cli(
        "compare", "--base", str(tiny_llama_dir), "--tuned", str(tuned_run), "--questions", str(questions),
        "--general", str(general), "--judge", str(tiny_llama_dir), "--max-new-tokens", "12",
        "--out", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    record = json.loads((out / "compare.json").read_text())
    assert len(record["questions"]) == 5 and record["judge"] is True
    assert {r["outcome"] for r in record["questions"]} <= {"win", "tie", "loss"}
    assert record["questions"][4]["after_scores"].keys() == {"exact", "rouge_l", "bleu4"}
    assert record["forgetting"]["items"] == 8
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
    assert result.returncode == 2 and "--questions" in result.stderr
