"""What a short command does not spend its time on: redrawing loss.png at every step, generating answers in
small batches, or the interpreter's last sweep at exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.cli import main as cli_main
from tuneforge.models.generate import MAX_GENERATION_BATCH, generation_batch_size
from tuneforge.train.callbacks import LossPlot, MetricsLog


def logged(tmp_path: Path, steps: int) -> MetricsLog:
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(1, steps + 1):
        log.write(step=step, loss=2.0 / step)
    return log


def test_the_loss_plot_is_redrawn_at_most_once_per_interval_and_always_when_finished(tmp_path: Path) -> None:
    path = tmp_path / "loss.png"
    plot = LossPlot(logged(tmp_path, 3), path, "run: sft", interval=3600)
    plot()  # during training, inside the interval: nothing drawn
    assert not path.exists()
    plot.draw()  # the end of the run (or a stop) draws now
    first = path.read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    plot.log.write(step=4, loss=0.1)
    plot()
    assert path.read_bytes() == first  # still inside the interval
    plot.interval = 0.0
    plot()
    assert path.read_bytes() != first  # past the interval: redrawn with step 4


@pytest.mark.parametrize(
    ("prompts", "max_new_tokens", "expected"),
    [
        ([40] * 64, 24, MAX_GENERATION_BATCH),  # short questions and answers: the cap
        ([40, 900], 100, 4),  # 4096 tokens // (900 + 100)
        ([3000], 2048, 1),  # one long prompt alone is over the budget: still one at a time
        ([], 10, MAX_GENERATION_BATCH),
    ],
)
def test_generation_batches_hold_a_bounded_number_of_tokens(
    prompts: list[int], max_new_tokens: int, expected: int
) -> None:
    assert generation_batch_size(prompts, max_new_tokens) == expected


def test_the_command_returns_mains_exit_status(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen: list[bool] = []
    monkeypatch.setattr(cli_main, "main", lambda: 2)
    monkeypatch.setattr(cli_main.gc, "freeze", lambda: frozen.append(True))
    assert cli_main.entry_point() == 2 and frozen == [True]
