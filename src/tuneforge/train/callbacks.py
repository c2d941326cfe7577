"""Metrics during training: metrics.jsonl, the loss plot, and guards on the numbers."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from tuneforge.atomic import atomic_write_text
from tuneforge.errors import UserError

__all__ = ["LossPlot", "MetricsLog", "check_finite", "loss_curves", "plot_losses"]


def check_finite(value: float, what: str, step: int) -> None:
    """Stop the run when a loss or gradient norm is NaN/inf; it is never logged as a number."""
    if not math.isfinite(value):
        raise UserError(
            f"{what} became {value} at optimizer step {step}: training diverged. Lower train.learning_rate "
            "(e.g. by 10x), keep train.max_grad_norm > 0, or use dtype float32"
        )


class MetricsLog:
    """Appends one JSON object per line to `metrics.jsonl` and keeps the history for plots.

    With `path` None it only keeps the history (the processes of a data-parallel run other than rank 0).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if path is not None:
            path.write_text("", encoding="utf-8")

    def replace(self, records: list[dict[str, Any]]) -> None:
        """Start over from `records` (a resumed run's history up to its checkpoint), rewriting the file."""
        self.records = [dict(r) for r in records]
        if self.path is not None:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, **record: Any) -> None:
        """Append a record (e.g. step=3, loss=1.2)."""
        self.records.append(record)
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of every record that has `key`."""
        points = [(r["step"], r[key]) for r in self.records if key in r and r[key] is not None]
        return [p[0] for p in points], [p[1] for p in points]


def loss_curves(log: MetricsLog) -> dict[str, tuple[list[int], list[float]]]:
    """The curves of the loss plot: train loss, validation loss and, with several datasets, each one's."""
    curves = {"train loss": log.series("loss")}
    if log.series("val_loss")[0]:
        curves["validation loss"] = log.series("val_loss")
    tasks = sorted({key for record in log.records for key in record if key.startswith("val_loss/")})
    for key in tasks:
        curves[f"validation: {key.split('/', 1)[1]}"] = log.series(key)
    return curves


def plot_losses(log: MetricsLog, path: Path, title: str) -> None:
    """Write train and validation loss curves to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, (steps, values) in loss_curves(log).items():
        if label == "train loss":
            ax.plot(steps, values, label=label, color="tab:blue", linewidth=1.2)
        elif label == "validation loss":
            ax.plot(steps, values, label=label, color="tab:orange", marker="o", linewidth=1.5)
        else:
            ax.plot(steps, values, label=label, marker=".", linestyle="--", linewidth=1.0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean per supervised token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class LossPlot:
    """loss.png of a run: redrawn during training at most once every `interval` seconds, and whenever finished.

    A redraw costs about 0.1 s (the first, importing matplotlib, about 0.6 s): after every validation and checkpoint
    of a short run that was most of its time. The curves are in metrics.jsonl as soon as they are logged.
    """

    def __init__(self, log: MetricsLog, path: Path, title: str, interval: float = 30.0) -> None:
        self.log, self.path, self.title, self.interval = log, path, title, interval
        self.drawn_at = time.monotonic()  # the first redraw comes `interval` seconds into training

    def __call__(self) -> None:
        """Redraw when the last drawing is older than the interval."""
        if time.monotonic() - self.drawn_at >= self.interval:
            self.draw()

    def draw(self) -> None:
        """Redraw now."""
        plot_losses(self.log, self.path, self.title)
        self.drawn_at = time.monotonic()
