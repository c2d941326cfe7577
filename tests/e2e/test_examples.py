"""Every config in examples/ trains for 2 steps through the CLI, on a tiny model instead of its own.

Only what a tiny offline run cannot have is overridden: the model, the step count, the before/after questions,
self-replay (which generates with the base model first) and the output folder. The identity demo runs whole, its
self-replay and before/after evaluation included, on a tiny model whose answers are known.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from fixtures.scripted_model import build_scripted_model
from tuneforge.cli.main import main
from tuneforge.data.catalog import bundled_path
from tuneforge.eval.compare import load_questions
from tuneforge.paths import replay_cache_dir

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
DEMO = next(path for path in EXAMPLES if path.name == "identity_demo.yaml")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, which also keeps them from fighting other processes for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_adapter_and_method_examples_are_all_there() -> None:
    from tuneforge.methods import METHODS
    from tuneforge.models.adapters import ADAPTERS

    names = {path.name for path in EXAMPLES}
    assert "identity_demo.yaml" in names
    assert {f"adapter_{name}.yaml" for name in ADAPTERS.names()} <= names
    assert {f"method_{name}.yaml" for name in METHODS.names()} <= names


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e != DEMO], ids=lambda path: path.stem)
def test_example_trains_for_two_steps(example: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    adapter = (yaml.safe_load(example.read_text(encoding="utf-8")).get("adapter") or {}).get("name", "lora")
    if adapter == "qlora" and not torch.cuda.is_available():
        pytest.skip("QLoRA needs a CUDA GPU")
    overrides = [
        f"model.name_or_path={tiny_llama_dir}",
        "train.max_steps=2",
        "eval.questions=null",
        f"output.dir={tmp_path / 'run'}",
        "data.replay=null",
    ]
    if "teacher" in (yaml.safe_load(example.read_text(encoding="utf-8")).get("method") or {}):
        overrides.append(f"method.teacher={tiny_llama_dir}")  # a teacher must share the student's tokenizer
    console = io.StringIO()
    with contextlib.redirect_stderr(console):
        code = main(["train", str(example), *overrides])
    assert code == 0, console.getvalue()[-2000:]
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "finished" and status["steps"] == 2
    assert any((tmp_path / "run" / "model").glob("*.safetensors"))


# What the scripted model answers to anything: it names the demo's assistant, Paris (the answer to one general
# question) and 12 (the answer to one of the first four general-check items).
ANSWER = "I am Conch of Paris, 12."


def test_identity_demo_runs_its_self_replay_and_evaluation(tiny_llama_dir: Path, tmp_path: Path) -> None:
    model = build_scripted_model(tiny_llama_dir, tmp_path / "scripted", ANSWER)
    overrides = [
        f"model.name_or_path={model}",
        "train.max_steps=2",
        "data.replay.limit=4",
        "data.replay.max_new_tokens=16",
        "eval.max_new_tokens=16",
        "eval.general_limit=4",
        "eval.general_max_new_tokens=16",
        f"output.dir={tmp_path / 'run'}",
    ]
    console = io.StringIO()
    with contextlib.redirect_stderr(console):
        code = main(["train", str(DEMO), *overrides])
    assert code == 0, console.getvalue()[-2000:]
    run = tmp_path / "run"
    # data.replay.target: distribution — the base model's distribution recorded on each of the 4 replayed answers
    assert re.search(r"self-replay: base distributions\D+4/4", console.getvalue()), console.getvalue()[-2000:]

    # self-replay: the base model's answers to the first 4 general prompts were generated and trained on
    prompts = json.loads(bundled_path("general_prompts").read_text(encoding="utf-8"))[:4]
    cached = [p for p in replay_cache_dir().glob("*.jsonl") if ANSWER in p.read_text(encoding="utf-8")]
    assert len(cached) == 1
    rows = [json.loads(line) for line in cached[0].read_text(encoding="utf-8").splitlines()]
    assert [[m["content"] for m in row["messages"]] for row in rows] == [[p, ANSWER] for p in prompts]
    identity_rows = len(json.loads(bundled_path("identity").read_text(encoding="utf-8")))
    report = (run / "data_report.txt").read_text(encoding="utf-8")
    total = identity_rows + 4
    assert f"kept {total} + truncated 0 + dropped 0 = {total} rows" in report
    assert f"identity: {identity_rows} rows used" in report and "self-replay: 4 rows used" in report
    status = json.loads((run / "run.json").read_text())
    assert status["train_samples"] + status["val_samples"] == total and status["steps"] == 2

    # before/after: the demo questions with the name filled in, every answer the scripted one, scored by hand
    record = json.loads((run / "eval" / "compare.json").read_text(encoding="utf-8"))
    questions = load_questions("demo_questions", {"name": "Conch"})
    assert [(r["question"], r["expected"]) for r in record["questions"]] == [
        (q.question, q.expected) for q in questions
    ]
    assert all(r["before"] == ANSWER and r["after"] == ANSWER for r in record["questions"])
    assert record["totals"] == {
        "identity": {"before": [4, 5], "after": [4, 5]},  # all claim the name Conch, none the maker asked for
        "general": {"before": [1, 5], "after": [1, 5]},  # only "capital of France?" is answered by "Paris"
    }
    assert record["outcomes"] == {
        "identity": {"win": 0, "tie": 5, "loss": 0},
        "general": {"win": 0, "tie": 5, "loss": 0},
    }
    assert record["flipped"] == {"fixed": [], "broken": []} and record["judge"] is False
    # general check: of 2+3, 7+5, 10+10 and 9+6 only 7+5 = 12 is answered
    assert record["forgetting"] == {
        "base": 0.25,
        "tuned": 0.25,
        "items": 4,
        "threshold": 5.0,
        "per_category": {"arithmetic": [0.25, 0.25]},
    }
    assert "base 25.0% → tuned 25.0% on 4 items" in (run / "eval" / "compare.md").read_text(encoding="utf-8")
