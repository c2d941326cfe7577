"""Jobs: commands run as argument lists in their own process, their output read like a terminal shows it
(rich's live bars), stopped with SIGINT — which makes `tuneforge train` save a checkpoint."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

from e2e.cli_helpers import write_memorisation_set
from tuneforge.errors import UserError
from tuneforge.webui.jobs import JobManager
from tuneforge.webui.terminal import Progress, TerminalText, find_progress


def test_carriage_returns_and_erase_line_redraw_one_line() -> None:
    term = TerminalText(live=2)
    final = term.feed("loading\n\r\x1b[2Ktraining  0/3 eta -\r\x1b[2Ktraining ━━ 1/3 eta 0:00:02 loss 2.0")
    assert final == []
    assert term.screen() == ["loading", "training ━━ 1/3 eta 0:00:02 loss 2.0"]
    final = term.feed(
        "\r\x1b[2Kline 1\ntraining ━━ 1/3 eta 0:00:02 loss 2.0\r\x1b[2K\x1b[1mtraining\x1b[0m ━━━━ 3/3 eta 0:00:00\n"
    )
    assert final == ["loading", "line 1"]
    assert term.finish() == ["training ━━━━ 3/3 eta 0:00:00"]


def test_cursor_up_rewrites_a_multi_line_live_display() -> None:
    term = TerminalText()
    term.feed("a\nbar 1/4 eta x\nsecond line\r\x1b[2K\x1b[1A\x1b[2Kbar 2/4 eta y\nsecond again")
    assert term.screen() == ["a", "bar 2/4 eta y", "second again"]


def test_progress_is_the_last_bar() -> None:
    lines = ["generating ━━ 2/8 eta 0:00:09", "text", "training ━━━━━━━━━╸ 3/5 eta 0:00:05 0:00:10 loss 9.332"]
    progress = find_progress(lines)
    assert progress == Progress("training", 3, 5, lines[2])
    assert progress.fraction == 0.6
    assert find_progress(["no bar here", "3/5 apples"]) is None


BAR_SCRIPT = """
import time
from tuneforge.progress import console, progress_bar
console.print("before")
with progress_bar("training", 3) as advance:
    for i in range(3):
        time.sleep(0.2)
        console.print(f"step {i}")
        advance(1, info=f"loss {3 - i}.0")
console.print("after")
"""


def test_a_job_runs_an_argument_list_and_reads_rich_progress(tmp_path: Path) -> None:
    jobs = JobManager(tmp_path / "jobs")
    job = jobs.start("train", [sys.executable, "-c", BAR_SCRIPT], tmp_path, "runs/a")
    seen = set()
    while job.process.poll() is None:
        view = job.view()
        if view.progress is not None:
            seen.add(view.progress.done)
        time.sleep(0.05)
    assert job.wait(30) == 0
    view = job.view()
    assert (view.state, view.returncode, view.progress.done, view.progress.total) == ("finished", 0, 3, 3)
    assert len(seen - {3}) >= 2  # the bar was read while it moved, not only at the end
    log = job.log_path.read_text(encoding="utf-8").splitlines()
    assert log == ["before", "step 0", "step 1", "step 2", log[4], "after"]
    assert log[4].startswith("training ━━━━━━━━━━━━━━━━ 3/3 eta 0:00:00") and log[4].endswith("loss 1.0")
    record = json.loads((job.folder / "job.json").read_text(encoding="utf-8"))
    assert (record["argv"], record["returncode"], record["target"]) == (
        [sys.executable, "-c", BAR_SCRIPT],
        0,
        "runs/a",
    )


def test_a_shell_string_is_not_a_job(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="argument list"):
        JobManager(tmp_path).start("train", "tuneforge train x.yaml", tmp_path, "x")  # type: ignore[arg-type]


WAIT_SCRIPT = """
import signal, sys, time
def stop(signum, frame):
    print("asked to stop", flush=True)
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
print("ready", flush=True)
time.sleep(60)
"""


def test_stop_sends_sigint_and_one_job_of_a_kind_at_a_time(tmp_path: Path) -> None:
    jobs = JobManager(tmp_path / "jobs")
    job = jobs.start("train", [sys.executable, "-c", WAIT_SCRIPT], tmp_path, "runs/a", exclusive=True)
    while "ready" not in job.view().log:
        time.sleep(0.05)
    with pytest.raises(UserError, match="a train job is already running"):
        jobs.start("train", [sys.executable, "-c", "print(1)"], tmp_path, "runs/b", exclusive=True)
    job.stop()
    assert job.wait(20) == 130
    view = job.view()
    assert (view.state, view.log.splitlines()) == ("stopped", ["ready", "asked to stop"])
    assert jobs.latest("train") is job and jobs.running() == []


def test_stop_makes_tuneforge_train_save_a_checkpoint(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """The page's Stop is the terminal's Ctrl-C: the run ends at the step with a checkpoint to resume from."""
    data = write_memorisation_set(tmp_path / "data.jsonl")
    config = {
        "model": {"name_or_path": str(tiny_llama_dir)},
        "data": {"train": [str(data)], "cutoff_len": 64, "val_size": 0},
        "train": {"max_steps": 400, "batch_size": 1, "grad_accum": 1},
        "output": {"dir": "runs/stopped"},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    jobs = JobManager(tmp_path / "jobs")
    argv = [sys.executable, "-m", "tuneforge.cli.main", "train", "cfg.yaml"]
    job = jobs.start("train", argv, tmp_path, "runs/stopped")
    metrics = tmp_path / "runs" / "stopped" / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while not (metrics.is_file() and metrics.read_text(encoding="utf-8").strip()):
        assert job.process.poll() is None, job.view().log
        assert time.monotonic() < deadline, job.view().log
        time.sleep(0.1)
    job.stop()
    assert job.wait(120) == 130, job.view().log
    view = job.view()
    assert view.state == "stopped"
    assert "checkpoint saved to" in view.log and "--resume" in view.log
    assert 1 <= view.progress.done < 400 and view.progress.total == 400
    checkpoints = sorted((tmp_path / "runs" / "stopped" / "checkpoints").glob("step-*"))
    assert checkpoints and (checkpoints[-1] / "trainer_state.json").is_file()


TWO_BARS = """
from tuneforge.progress import progress_bar
with progress_bar("training", 2) as advance:
    advance(2, info="loss 1.5")
with progress_bar("answering (tuned)", 3) as advance:
    advance(3)
"""


def test_an_ended_job_shows_its_training_bar_not_the_last_report(tmp_path: Path) -> None:
    job = JobManager(tmp_path / "jobs").start("train", [sys.executable, "-c", TWO_BARS], tmp_path, "runs/a")
    assert job.wait(60) == 0
    progress = job.view().progress
    assert (progress.label, progress.done, progress.total) == ("training", 2, 2)
    assert job.bars["answering (tuned)"].done == 3


def test_the_server_address_is_read_from_its_log_even_when_wrapped() -> None:
    from tuneforge.webui.deploy_tab import serve_url

    log = "loading\nserving tiny, r on\nhttp://127.0.0.1:8123/v1 with TransformersEngine (POST /v1/chat/completions)"
    assert serve_url(log) == "http://127.0.0.1:8123/v1"
    assert serve_url("loading model runs/r") is None
