"""`tuneforge eval` on a run directory: loss, multiple choice and predict results as JSON and in the model card."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import run_cli, write_config, write_memorisation_set


def test_eval_writes_results_and_appends_to_the_model_card(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_memorisation_set(tmp_path / "m.jsonl")
    config = write_config(tmp_path / "cfg.yaml", tiny_llama_dir, data, tmp_path / "run", train={"max_steps": 2})
    assert run_cli("train", str(config), cwd=tmp_path).returncode == 0
    bench = tmp_path / "bench" / "test" / "math_test.csv"
    bench.parent.mkdir(parents=True)
    bench.write_text("2+2?,3,4,5,6,B\n3+3?,5,7,6,9,C\n", encoding="utf-8")
    run = tmp_path / "run"
    result = run_cli(
        "eval", str(run), "--data", str(data), "--mc", str(tmp_path / "bench"), "--shots", "0",
        "--predict", str(data), "--max-new-tokens", "4", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loss = json.loads((run / "eval" / "loss.json").read_text())
    assert loss["samples"] == 8 and loss["perplexity"] > 1
    mc = json.loads((run / "eval" / "multiple_choice.json").read_text())
    assert mc["items"] == 2 and set(mc["per_subject"]) == {"math"}
    predict = json.loads((run / "eval" / "predict.json").read_text())
    assert predict["items"] == 8 and len((run / "eval" / "predictions.jsonl").read_text().splitlines()) == 8
    card = (run / "README.md").read_text()
    assert "## Evaluation" in card and f"perplexity {loss['perplexity']:.2f}" in card
    assert "multiple choice: accuracy" in card and "rouge-l" in card


def test_eval_needs_a_task(tiny_llama_dir: Path, tmp_path: Path) -> None:
    result = run_cli("eval", str(tiny_llama_dir), cwd=tmp_path)
    assert result.returncode == 2 and "--data" in result.stderr
