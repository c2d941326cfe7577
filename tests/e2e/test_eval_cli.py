"""`tuneforge eval` on a run directory: loss, multiple choice and predict results as JSON and in the model card."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import MEMORISE, run_cli, write_config, write_memorisation_set

from tuneforge.data.messages import Conversation, Message
from tuneforge.data.render import render_conversation
from tuneforge.eval.predict import score_predictions
from tuneforge.models.load import load_model

MC_ITEMS = [("2+2?", ["3", "4", "5", "6"], "B"), ("3+3?", ["5", "7", "6", "9"], "C")]


def test_eval_writes_results_and_appends_to_the_model_card(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_memorisation_set(tmp_path / "m.jsonl")
    config = write_config(tmp_path / "cfg.yaml", tiny_llama_dir, data, tmp_path / "run", train={"max_steps": 2})
    assert run_cli("train", str(config), cwd=tmp_path).returncode == 0
    bench = tmp_path / "bench" / "test" / "math_test.csv"
    bench.parent.mkdir(parents=True)
    bench.write_text("".join(f"{q},{','.join(o)},{a}\n" for q, o, a in MC_ITEMS), encoding="utf-8")
    run = tmp_path / "run"
    result = run_cli(
        "eval", str(run), "--data", str(data), "--mc", str(tmp_path / "bench"), "--shots", "0",
        "--predict", str(data), "--max-new-tokens", "4", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = load_model(str(run))
    model, tokenizer = loaded.model.eval(), loaded.tokenizer

    # loss and perplexity: the mean NLL of the answer tokens of the 8 rows, computed here directly
    total, tokens = 0.0, 0
    with torch.no_grad():
        for question, answer in MEMORISE:
            sample = render_conversation(
                tokenizer, Conversation([Message("user", question), Message("assistant", answer)]), 1024
            )
            logits = model(torch.tensor([sample.input_ids])).logits[0, :-1]
            targets = torch.tensor(sample.labels[1:])
            keep = targets != -100
            total += float(F.cross_entropy(logits[keep], targets[keep], reduction="sum"))
            tokens += int(keep.sum())
    loss = json.loads((run / "eval" / "loss.json").read_text())
    assert loss["samples"] == 8 and loss["tokens"] == tokens
    assert loss["loss"] == pytest.approx(total / tokens, rel=1e-4)
    assert loss["perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-4)

    # multiple choice, 0-shot: each item's letter log-probabilities from the model's next token, computed here
    mc = json.loads((run / "eval" / "multiple_choice.json").read_text())
    letters = [tokenizer("ABCD"[k], add_special_tokens=False)["input_ids"][0] for k in range(4)]
    intro = "The following are multiple choice questions about math. Answer with the letter.\n\n"
    expected_choices = []
    for row, (question, options, answer) in zip(mc["results"], MC_ITEMS, strict=True):
        block = question + "\n" + "\n".join(f"{'ABCD'[k]}. {o}" for k, o in enumerate(options)) + "\nAnswer:"
        ids = tokenizer.apply_chat_template([{"role": "user", "content": intro + block}], add_generation_prompt=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)[letters].tolist()
        assert row["logprobs"] == pytest.approx(logprobs, abs=1e-4) and row["answer"] == answer
        expected_choices.append("ABCD"[max(range(4), key=lambda k: logprobs[k])])
    assert [row["choice"] for row in mc["results"]] == expected_choices
    right = sum(choice == answer for choice, (_, _, answer) in zip(expected_choices, MC_ITEMS, strict=True))
    assert mc["items"] == 2 and mc["accuracy"] == right / 2
    assert mc["per_subject"] == {"math": {"accuracy": right / 2, "items": 2}}

    # predict: one row per data row, metrics the scorers' means over those rows
    predict = json.loads((run / "eval" / "predict.json").read_text())
    rows = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["reference"]) for r in rows] == MEMORISE and predict["items"] == 8
    metrics = score_predictions([r["prediction"] for r in rows], [r["reference"] for r in rows])
    assert {k: predict[k] for k in metrics} == pytest.approx(metrics)

    card = (run / "README.md").read_text()
    assert "## Evaluation" in card and f"perplexity {loss['perplexity']:.2f}" in card
    assert f"multiple choice: accuracy {100 * right / 2:.1f}% on 2 questions, 0-shot" in card
    assert f"rouge-l {metrics['rouge-l']:.2f}" in card


def test_eval_needs_a_task(tiny_llama_dir: Path, tmp_path: Path) -> None:
    result = run_cli("eval", str(tiny_llama_dir), cwd=tmp_path)
    assert result.returncode == 2 and "--data" in result.stderr


def test_predict_reports_the_rows_it_cannot_use(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "p.jsonl"
    rows = [
        {"instruction": "Who are you?", "output": "I am {{name}}."},
        {"instruction": "2+2?", "output": "4"},
        {"instruction": "Capital of France?", "output": "Paris"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = run_cli(
        "eval", str(tiny_llama_dir), "--predict", str(data), "--max-new-tokens", "2", "--out", str(tmp_path / "o"),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 row(s) of" in result.stderr and "unfilled placeholder" in result.stderr, result.stderr
    assert "p.jsonl:1" in result.stderr
    predicted = [json.loads(line) for line in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    assert [r["reference"] for r in predicted] == ["4", "Paris"]
