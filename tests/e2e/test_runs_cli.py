"""`tuneforge runs` and `tuneforge runs compare` on real runs of the tiny model: a finished run with a before/after
report, a run stopped by Ctrl-C, a failed run, and a run whose run.json is damaged."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    MEMORISE,
    launch,
    read_metrics,
    run_cli,
    wait_for_checkpoint,
    write_config,
    write_memorisation_set,
)

WIDE = {"COLUMNS": "250"}  # the tables' cells unwrapped


def runs_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`tuneforge ARGS...` with a wide terminal, so that table cells are not wrapped."""
    return subprocess.run(
        [sys.executable, "-m", "tuneforge.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **WIDE},
    )


@pytest.fixture(scope="module")
def work(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/finished (+ eval/compare.json), runs/stopped (Ctrl-C), runs/failed, runs/damaged (bad run.json)."""
    work = tmp_path_factory.mktemp("runs-cli")
    data = write_memorisation_set(work / "mem.jsonl")
    runs = work / "runs"
    finished = write_config(work / "finished.yaml", tiny_llama_dir, data, runs / "finished", data={"val_size": 2})
    assert (result := run_cli("train", str(finished), cwd=work)).returncode == 0, result.stderr

    questions = work / "questions.json"
    questions.write_text(json.dumps([{"question": q, "kind": "identity", "expected": [a.split()[-1]]} for q, a in
                                     MEMORISE[:3]]))  # fmt: skip
    general = work / "general.json"
    general.write_text(json.dumps([{"question": q, "expected": [a.split()[-1].strip(".")]} for q, a in MEMORISE[3:]]))
    compare = ["compare", "--base", str(tiny_llama_dir), "--tuned", str(runs / "finished"), "--max-new-tokens", "6"]
    result = run_cli(*compare, "--questions", str(questions), "--general", str(general), cwd=work)
    assert result.returncode == 0, result.stderr

    stopped = write_config(
        work / "stopped.yaml",
        tiny_llama_dir,
        data,
        runs / "stopped",
        data={"val_size": 2},
        adapter={"name": "lora", "r": 4, "alpha": 8},
        train={"max_steps": -1, "epochs": 200, "batch_size": 2, "learning_rate": 5.0e-3, "save_steps": 2},
    )
    process = launch(stopped, work)
    wait_for_checkpoint(runs / "stopped", 2, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    (work / "stopped.log").write_text(stderr, encoding="utf-8")

    bad = work / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n' * 3, encoding="utf-8")
    failed = write_config(work / "failed.yaml", tiny_llama_dir, bad, runs / "failed")
    assert run_cli("train", str(failed), cwd=work).returncode == 2

    damaged = runs / "nested" / "damaged"
    damaged.mkdir(parents=True)
    shutil.copy(runs / "finished" / "config.yaml", damaged / "config.yaml")
    (damaged / "run.json").write_text('{"status": "fin', encoding="utf-8")
    return work


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of a rich table printed to `text`, by their first cell."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            rows[cells[0]] = cells[1:]
    return rows


def status_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))


def test_runs_lists_each_run_with_its_numbers(work: Path) -> None:
    runs = work / "runs"
    result = runs_cli("runs", "--json", cwd=work)
    assert result.returncode == 0, result.stderr
    listed = {run["name"]: run for run in json.loads(result.stdout)["runs"]}
    assert list(listed) == ["failed", "finished", "nested/damaged", "stopped"]

    finished, record = listed["finished"], status_of(runs / "finished")
    report = json.loads((runs / "finished" / "eval" / "compare.json").read_text(encoding="utf-8"))
    assert (finished["status"], finished["method"], finished["adapter"]) == ("finished", "sft", "lora")
    assert finished["data"] == [str(work / "mem.jsonl")]
    assert (finished["steps"], finished["total_steps"], finished["total_exact"]) == (4, 4, True)
    val_losses = [r["val_loss"] for r in read_metrics(runs / "finished")]
    assert finished["best_val_loss"] == record["best_val_loss"] == min(val_losses)
    assert finished["questions"] == report["totals"] and report["totals"]["identity"]["before"][1] == 3
    assert finished["general"] == {k: report["forgetting"][k] for k in ("base", "tuned", "items")}

    stopped, metrics = listed["stopped"], read_metrics(runs / "stopped")
    assert stopped["status"] == "interrupted" and stopped["error"].startswith("interrupted by SIGINT after step")
    assert stopped["steps"] == metrics[-1]["step"] >= 2
    # train.epochs (200) × the steps of an epoch: the total of the run's own progress bar
    planned = int(re.search(r"training .*? \d+/(\d+) ", (work / "stopped.log").read_text(encoding="utf-8"))[1])
    assert (stopped["total_steps"], stopped["total_exact"]) == (planned, False) and planned % 200 == 0
    assert stopped["best_val_loss"] == min(r["val_loss"] for r in metrics if "val_loss" in r)

    assert listed["failed"]["status"] == "failed" and "no training samples left" in listed["failed"]["error"]
    assert (listed["failed"]["steps"], listed["failed"]["total_steps"]) == (None, 4)
    damaged = listed["nested/damaged"]
    assert damaged["status"].startswith("unreadable: run.json: Unterminated string")
    assert (damaged["method"], damaged["adapter"]) == ("sft", "lora")

    table = runs_cli("runs", str(runs), cwd=work)
    assert table.returncode == 0, table.stderr
    rows = table_rows(table.stdout)
    identity = report["totals"]["identity"]
    general = report["forgetting"]
    assert general["items"] == len(MEMORISE[3:]) == 5
    assert rows["finished"] == [
        "sft",
        "lora",
        "mem.jsonl",
        "4/4",
        f"{record['best_val_loss']:.4f}",
        f"identity {identity['before'][0]}/3→{identity['after'][0]}/3",
        f"{100 * general['base']:.1f}%→{100 * general['tuned']:.1f}% (5)",
        "finished",
    ]
    assert rows["stopped"][3:] == [f"{stopped['steps']}/≈{planned}", f"{stopped['best_val_loss']:.4f}", "–", "–",
                                   "interrupted"]  # fmt: skip
    assert rows["failed"][3:5] == ["–/4", "–"] and rows["failed"][-1] == "failed"
    assert rows["nested/damaged"][-1].startswith("unreadable: run.json: Unterminated string")
    # why a run did not finish, under the table
    assert f"stopped: {stopped['error']}" in table.stdout
    assert "failed: no training samples left after filtering" in " ".join(table.stdout.split())


def test_runs_of_a_single_run_directory(work: Path) -> None:
    result = runs_cli("runs", "runs/stopped", "--json", cwd=work)
    assert result.returncode == 0, result.stderr
    assert [run["name"] for run in json.loads(result.stdout)["runs"]] == ["stopped"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # matplotlib's C0 and C1


def colour_pixels(png: bytes, colour: tuple[int, int, int]) -> int:
    """How many pixels of the image are (nearly) `colour`."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)
    return int((np.abs(pixels - np.array(colour)).sum(axis=-1) < 30).sum())


def test_runs_compare_overlays_curves_and_prints_config_differences(work: Path) -> None:
    result = runs_cli("runs", "compare", "runs/finished", "stopped", "--out", "plots/cmp.png", "--json", cwd=work)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert [run["name"] for run in record["runs"]] == ["finished", "stopped"]
    assert record["plot"] == "plots/cmp.png" and png_size(work / "plots" / "cmp.png") == (990, 495)
    differences = {row["key"]: row["values"] for row in record["differences"]}
    assert differences == {
        "adapter.r": [8, 4],
        "adapter.alpha": [16.0, 8.0],
        "train.epochs": [3.0, 200.0],
        "train.max_steps": [4, -1],
        "train.batch_size": [4, 2],
        "train.learning_rate": [0.001, 0.005],
        "train.save_steps": [None, 2],
    }
    first = (work / "plots" / "cmp.png").read_bytes()

    table = runs_cli("runs", "compare", "runs/finished", "runs/failed", "--out", "plots/cmp.png", cwd=work)
    assert table.returncode == 0, table.stderr
    rows = table_rows(table.stdout)
    assert rows["data.train"] == [f'["{work / "mem.jsonl"}"]', f'["{work / "bad.jsonl"}"]']
    assert rows["data.val_size"] == ["2.0", "0.0"]
    assert "output.dir" not in rows and "adapter.r" not in rows  # the same in both
    assert rows["finished"][3] == "4/4" and rows["failed"][3] == "–/4"  # the runs table comes first
    assert "loss curves (train solid, validation dashed): plots/cmp.png" in table.stdout
    second = (work / "plots" / "cmp.png").read_bytes()
    assert second != first
    # the first run is drawn in blue, the second in orange; the failed run logged no loss, so no orange there
    assert colour_pixels(first, BLUE) > 500 and colour_pixels(first, ORANGE) > 500
    assert colour_pixels(second, BLUE) > 500 and colour_pixels(second, ORANGE) == 0


def test_runs_compare_never_replaces_a_file_it_did_not_write(work: Path) -> None:
    notes = work / "notes.png"
    notes.write_text("keep me", encoding="utf-8")
    result = runs_cli("runs", "compare", "runs/finished", "runs/stopped", "--out", "notes.png", cwd=work)
    assert result.returncode == 2
    assert "notes.png exists and is not a plot written by `tuneforge runs compare`" in result.stderr
    assert notes.read_text(encoding="utf-8") == "keep me"


def test_runs_in_a_folder_without_runs_says_how_to_make_one(work: Path) -> None:
    (work / "empty").mkdir(exist_ok=True)
    result = runs_cli("runs", "empty", cwd=work)
    assert result.returncode == 2 and result.stdout == ""
    assert "no runs in empty (looked for run.json" in result.stderr and "tuneforge train CONFIG.yaml" in result.stderr
