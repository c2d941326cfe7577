"""`tuneforge runs`' reading of run folders written by hand: finding runs, summarising damaged and unfinished ones,
compare.json scores, config differences, and the plot file it may (and may not) replace."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from tuneforge.cli.runs import (
    PLOT_MARK,
    general_cell,
    plot_overlay,
    questions_cell,
    steps_cell,
    value_text,
    write_plot,
    written_by_us,
)
from tuneforge.errors import UserError
from tuneforge.models.runs_index import (
    MAX_DEPTH,
    config_differences,
    find_runs,
    flatten_config,
    loss_series,
    summarize_run,
)

CONFIG: dict[str, Any] = {
    "model": {"name_or_path": "tiny"},
    "data": {"train": ["data/a.jsonl", "/abs/b.csv"], "dataset": ["identity"], "val_size": 0.1},
    "method": {"name": "sft"},
    "adapter": {"name": "lora", "r": 8, "target_modules": "all-linear"},
    "train": {"max_steps": -1, "epochs": 2.0, "learning_rate": 0.001},
    "output": {"dir": "runs/x"},
}


def make_run(
    folder: Path,
    status: dict[str, Any] | str | None = None,
    metrics: list[dict[str, Any]] | None = None,
    config: dict[str, Any] | None = None,
    compare: dict[str, Any] | str | None = None,
) -> Path:
    """A run folder as `tuneforge train` leaves it (only the files given)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config or CONFIG, sort_keys=False), encoding="utf-8")
    if status is not None:
        (folder / "run.json").write_text(status if isinstance(status, str) else json.dumps(status), encoding="utf-8")
    if metrics is not None:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics), encoding="utf-8")
    if compare is not None:
        (folder / "eval").mkdir(exist_ok=True)
        text = compare if isinstance(compare, str) else json.dumps(compare)
        (folder / "eval" / "compare.json").write_text(text, encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------------- finding


def test_find_runs_walks_below_the_folder_but_not_into_runs_or_hidden_folders(tmp_path: Path) -> None:
    first = make_run(tmp_path / "a", {"status": "finished"})
    nested = make_run(tmp_path / "group" / "b", {"status": "running"})
    make_run(first / "eval" / "inner", {"status": "finished"})  # inside a run: not a run of the folder
    make_run(tmp_path / ".trash" / "c", {"status": "finished"})
    deep = tmp_path.joinpath(*[f"d{i}" for i in range(MAX_DEPTH)], "too-deep")
    make_run(deep, {"status": "finished"})
    (tmp_path / "notes").mkdir()
    assert find_runs(tmp_path) == [first, nested]
    assert find_runs(first) == [first]  # the folder itself is a run


def test_find_runs_reaches_max_depth(tmp_path: Path) -> None:
    deepest = make_run(tmp_path.joinpath(*[f"d{i}" for i in range(MAX_DEPTH - 1)], "run"), {"status": "finished"})
    assert find_runs(tmp_path) == [deepest]


def test_no_runs_says_where_it_looked_and_how_to_make_one(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError) as caught:
        find_runs(tmp_path / "empty")
    message = str(caught.value)
    assert f"no runs in {tmp_path / 'empty'}" in message and "run.json" in message
    assert "tuneforge train CONFIG.yaml" in message and str(tmp_path / "empty" / "my-run") in message
    with pytest.raises(UserError, match="does not exist; train one with `tuneforge train"):
        find_runs(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------- one run


def test_a_corrupt_run_json_is_listed_as_unreadable_with_its_config(tmp_path: Path) -> None:
    run = make_run(tmp_path / "bad", '{"status": "finis', metrics=[{"step": 1, "loss": 2.5, "val_loss": 2.0}])
    summary = summarize_run(run)
    assert summary.status.startswith("unreadable: run.json: Unterminated string")
    assert (summary.method, summary.adapter, summary.steps, summary.best_val_loss) == ("sft", "lora", 1, 2.0)
    listed = make_run(tmp_path / "list", "[1, 2]")
    assert summarize_run(listed).status == "unreadable: run.json holds a JSON list, not an object"


def test_an_unreadable_config_leaves_config_fields_empty(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", {"status": "failed", "error": "out of memory"})
    (run / "config.yaml").write_text("model: [unclosed\n", encoding="utf-8")
    summary = summarize_run(run)
    assert (summary.status, summary.method, summary.data, summary.error) == ("failed", "", [], "out of memory")


def test_a_finished_run_uses_run_json_numbers(tmp_path: Path) -> None:
    status = {"status": "finished", "steps": 6, "best_val_loss": 1.25, "final_loss": 1.5, "stopped_early": False}
    metrics = [{"step": s, "epoch": s / 3, "loss": 3.0 - s / 4, "val_loss": 1.0 + s} for s in range(1, 7)]
    summary = summarize_run(make_run(tmp_path / "done", status, metrics), name="group/done")
    assert summary.name == "group/done" and summary.status == "finished"
    assert summary.data == ["data/a.jsonl", "/abs/b.csv", "identity"]
    assert (summary.steps, summary.total_steps, summary.total_exact) == (6, 6, True)
    assert (summary.best_val_loss, summary.final_loss) == (1.25, 1.5)  # run.json's, not the metrics' minimum


def test_a_running_run_counts_steps_from_metrics_and_skips_a_half_written_line(tmp_path: Path) -> None:
    config = {**CONFIG, "train": {"max_steps": 40, "epochs": 3.0}}
    metrics = [{"step": 1, "loss": 4.0}, {"step": 2, "loss": 3.5, "val_loss": 3.75}, {"step": 3, "loss": 3.0}]
    run = make_run(tmp_path / "live", {"status": "running"}, metrics, config)
    with (run / "metrics.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"step": 4, "loss": 2.')
    summary = summarize_run(run)
    assert (summary.status, summary.steps, summary.total_steps, summary.total_exact) == ("running", 3, 40, True)
    assert (summary.best_val_loss, summary.final_loss) == (3.75, 3.0)
    assert steps_cell(summary.steps, summary.total_steps, summary.total_exact) == "3/40"
    assert loss_series(run) == {"train": ([1, 2, 3], [4.0, 3.5, 3.0]), "validation": ([2], [3.75])}


def test_an_interrupted_epoch_run_estimates_its_planned_steps(tmp_path: Path) -> None:
    # 7 optimizer steps an epoch (epoch rounded to 3 places as the loop logs it), train.epochs 2 → 14 planned
    metrics = [{"step": s, "epoch": round(s / 7, 3), "loss": 2.0, "val_loss": 3.0 - s / 10} for s in range(1, 6)]
    summary = summarize_run(make_run(tmp_path / "stop", {"status": "interrupted", "error": "SIGINT"}, metrics))
    assert (summary.steps, summary.total_steps, summary.total_exact) == (5, 14, False)
    assert summary.best_val_loss == pytest.approx(2.5) and summary.error == "SIGINT"
    assert steps_cell(5, 14, False) == "5/≈14"
    assert steps_cell(None, 4, True) == "–/4" and steps_cell(None, None, True) == "–"


def test_eval_scores_come_from_compare_json(tmp_path: Path) -> None:
    compare = {
        "totals": {"identity": {"before": [1, 5], "after": [5, 5]}, "general": {"before": [2, 4], "after": [1, 4]}},
        "forgetting": {"base": 0.40625, "tuned": 0.34375, "items": 64, "threshold": 5.0},
        "likelihood": {"base_loss": 2.3104, "tuned_loss": 2.3342, "rise": 0.0238},
    }
    summary = summarize_run(make_run(tmp_path / "e", {"status": "finished", "steps": 3}, compare=compare))
    assert summary.questions == compare["totals"]
    assert summary.general == {"base": 0.40625, "tuned": 0.34375, "items": 64}
    assert summary.likelihood == {"base_loss": 2.3104, "tuned_loss": 2.3342}
    assert questions_cell(summary.questions) == "identity 1/5→5/5\ngeneral 2/4→1/4"
    assert general_cell(summary.general, summary.likelihood) == "40.6%→34.4% (64)\nloss 2.310→2.334"
    assert questions_cell({}) == "–" and general_cell(None, None) == "–"


def test_a_damaged_compare_json_shows_no_scores(tmp_path: Path) -> None:
    broken = summarize_run(make_run(tmp_path / "a", {"status": "finished"}, compare='{"totals": '))
    odd = summarize_run(make_run(tmp_path / "b", {"status": "finished"}, compare={"totals": {"x": {"before": 3}}}))
    assert (broken.questions, broken.general, odd.questions, odd.status) == ({}, None, {}, "finished")


# ---------------------------------------------------------------------------------------------------- configs


def test_flatten_config_dots_nested_sections_and_keeps_lists() -> None:
    flat = flatten_config({"a": {"b": {"c": 1}, "d": [1, 2], "e": {}}, "f": None})
    assert flat == {"a.b.c": 1, "a.d": [1, 2], "a.e": {}, "f": None}


def test_config_differences_list_only_differing_keys_in_config_order() -> None:
    lora = {**CONFIG, "output": {"dir": "runs/a"}}
    ia3 = {
        **CONFIG,
        "adapter": {"name": "ia3", "target_modules": "all-linear"},
        "data": {**CONFIG["data"], "train": ["data/a.jsonl"]},
        "train": {**CONFIG["train"], "learning_rate": 0.01},
        "output": {"dir": "runs/b"},
    }
    rows = [(d.key, d.values, d.present) for d in config_differences([lora, ia3, lora])]
    assert rows == [
        ("data.train", [["data/a.jsonl", "/abs/b.csv"], ["data/a.jsonl"], ["data/a.jsonl", "/abs/b.csv"]], [True] * 3),
        ("adapter.name", ["lora", "ia3", "lora"], [True] * 3),
        ("adapter.r", [8, None, 8], [True, False, True]),
        ("train.learning_rate", [0.001, 0.01, 0.001], [True] * 3),
    ]
    assert config_differences([CONFIG, CONFIG]) == []


def test_value_text_spells_values_as_the_table_shows_them() -> None:
    cells = [value_text(v) for v in (None, True, 0.001, "lora", ["a", "b"])]
    assert cells == ["null", "true", "0.001", "lora", '["a", "b"]']
    assert value_text(None, present=False) == "–"


# ---------------------------------------------------------------------------------------------------- the plot


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_overlay_draws_each_run_and_marks_the_file() -> None:
    one = {"a": {"train": ([1, 2, 3], [3.0, 2.0, 1.5]), "validation": ([3], [2.2])}}
    two = {**one, "b": {"train": ([1, 2, 3], [3.5, 3.0, 2.9])}}
    first, second = plot_overlay(one), plot_overlay(two)
    assert png_size(first) == png_size(second) == (990, 495)
    assert first != second
    assert b"Software\x00" + PLOT_MARK.encode() in first


def test_write_plot_replaces_only_its_own_png(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    png = plot_overlay({"a": {"train": ([1, 2], [2.0, 1.0])}})
    out = tmp_path / "plots" / "cmp.png"
    write_plot(out, png)
    assert out.read_bytes() == png and written_by_us(out)
    newer = plot_overlay({"a": {"train": ([1, 2], [2.0, 0.5])}})
    write_plot(out, newer)  # its own earlier plot: replaced
    assert out.read_bytes() == newer

    notes = tmp_path / "notes.png"
    notes.write_text("my notes", encoding="utf-8")
    foreign = tmp_path / "photo.png"
    buffer = io.BytesIO()
    Figure(figsize=(1, 1)).savefig(buffer, format="png")
    foreign.write_bytes(buffer.getvalue())
    for target, before in ((notes, b"my notes"), (foreign, buffer.getvalue())):
        with pytest.raises(UserError, match="is not a plot written by `tuneforge runs compare`"):
            write_plot(target, png)
        assert target.read_bytes() == before
    with pytest.raises(UserError, match="ending in .png"):
        write_plot(tmp_path / "cmp.jpg", png)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.png", "photo.png", "plots"]
    assert [p.name for p in out.parent.iterdir()] == ["cmp.png"]  # no temporary file left behind
