"""Metrics during training: metrics.jsonl, the loss plot, and guards on the numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

__all__ = ["MetricsLog", "check_finite", "plot_losses"]


def check_finite(value: float, what: str, step: int) -> None:
    """Stop the run when a loss or gradient norm is NaN/inf; it is never logged as a number."""
    if not math.isfinite(value):
        raise UserError(
            f"{what} became {value} at optimizer step {step}: training diverged. Lower train.learning_rate "
            "(e.g. by 10x), keep train.max_grad_norm > 0, or use dtype float32"
        )


class MetricsLog:
    """Appends one JSON object per line to `metrics.jsonl` and keeps the history for plots."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        path.write_text("", encoding="utf-8")

    def replace(self, records: list[dict[str, Any]]) -> None:
        """Start over from `records` (a resumed run's history up to its checkpoint), rewriting the file."""
        self.records = [dict(r) for r in records]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records), encoding="utf-8")
        tmp.replace(self.path)

    def write(self, **record: Any) -> None:
        """Append a record (e.g. step=3, loss=1.2)."""
        self.records.append(record)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of every record that has `key`."""
        points = [(r["step"], r[key]) for r in self.records if key in r and r[key] is not None]
        return [p[0] for p in points], [p[1] for p in points]


def plot_losses(log: MetricsLog, path: Path, title: str) -> None:
    """Write train and validation loss curves to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    steps, loss = log.series("loss")
    ax.plot(steps, loss, label="train loss", color="tab:blue", linewidth=1.2)
    val_steps, val_loss = log.series("val_loss")
    if val_steps:
        ax.plot(val_steps, val_loss, label="validation loss", color="tab:orange", marker="o", linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean per supervised token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
