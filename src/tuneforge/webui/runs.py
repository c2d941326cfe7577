"""The runs of the workspace as the page lists them: status, numbers, loss curves and reports.

Everything is read from what `tuneforge train` writes into a run directory (see tuneforge.models.rundir):
run.json (status and numbers), config.yaml (method, adapter, base model), metrics.jsonl (curves) and the
before/after report in eval/.
"""

from __future__ import annotations

import html
import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuneforge.models.rundir import RunLayout, read_status

__all__ = [
    "REPORT_FILES",
    "RunInfo",
    "file_url",
    "loss_figure",
    "loss_points",
    "read_report",
    "run_info",
    "runs_table_html",
]

# report name → path inside the run directory
REPORT_FILES = {
    "compare.html": "eval/compare.html",
    "compare.md": "eval/compare.md",
    "README.md": "README.md",
    "loss.png": "loss.png",
    "data_report.txt": "data_report.txt",
}


@dataclass
class RunInfo:
    """One run directory, summarised."""

    name: str
    path: Path
    status: str
    method: str = ""
    adapter: str = ""
    base_model: str = ""
    steps: int | None = None
    best_val_loss: float | None = None
    final_loss: float | None = None
    error: str = ""
    updated: float = 0.0
    reports: dict[str, Path] = field(default_factory=dict)


def _config(run_dir: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(RunLayout(run_dir).config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _best_val_loss(status: dict[str, Any], run_dir: Path) -> float | None:
    """run.json's best validation loss; for a run still going, the lowest one logged so far."""
    if _number(status.get("best_val_loss")) is not None:
        return _number(status["best_val_loss"])
    values = [p["loss"] for p in loss_points(run_dir) if p["series"] == "validation loss"]
    return min(values) if values else _number(status.get("final_val_loss"))


def run_info(run_dir: Path) -> RunInfo:
    """What the runs table shows about `run_dir`."""
    try:
        status = read_status(run_dir)
    except (OSError, ValueError):
        status = {"status": "unreadable"}
    config = _config(run_dir)
    method = (config.get("method") or {}).get("name", "")
    adapter = (config.get("adapter") or {}).get("name", "")
    reports = {name: run_dir / rel for name, rel in REPORT_FILES.items() if (run_dir / rel).is_file()}
    updated = max((p.stat().st_mtime for p in (RunLayout(run_dir).status, RunLayout(run_dir).metrics) if p.exists()),
                  default=run_dir.stat().st_mtime)  # fmt: skip
    return RunInfo(
        name=run_dir.name,
        path=run_dir,
        status=str(status.get("status", "unknown")),
        method=str(method),
        adapter=str(adapter),
        base_model=str((config.get("model") or {}).get("name_or_path", "")),
        steps=status.get("steps") if isinstance(status.get("steps"), int) else None,
        best_val_loss=_best_val_loss(status, run_dir),
        final_loss=_number(status.get("final_loss")),
        error=str(status.get("error", "")),
        updated=updated,
        reports=reports,
    )


def loss_points(run_dir: Path) -> list[dict[str, Any]]:
    """The loss curves of metrics.jsonl as points {step, loss, series} (train, validation, per dataset).

    A line still being written (a run in progress) is skipped.
    """
    path = RunLayout(run_dir).metrics
    if not path.is_file():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue
        for key, value in record.items():
            if _number(value) is None:
                continue
            if key == "loss":
                series = "train loss"
            elif key == "val_loss":
                series = "validation loss"
            elif key.startswith("val_loss/"):
                series = f"validation: {key.split('/', 1)[1]}"
            else:
                continue
            points.append({"step": record["step"], "loss": float(value), "series": series})
    return points


def loss_figure(points: list[dict[str, Any]], title: str, xlabel: str, ylabel: str) -> Any:
    """The loss curves as a matplotlib figure, drawn like the run's own loss.png (train line, validation dots)."""
    from matplotlib.figure import Figure  # no pyplot: no global state shared between the server's threads

    figure = Figure(figsize=(8, 3.6), dpi=100)
    axes = figure.add_subplot()
    series: dict[str, tuple[list[int], list[float]]] = {}
    for point in points:
        steps, values = series.setdefault(point["series"], ([], []))
        steps.append(point["step"])
        values.append(point["loss"])
    for label, (steps, values) in series.items():
        if label == "train loss":
            axes.plot(steps, values, label=label, color="tab:blue", linewidth=1.4)
        elif label == "validation loss":
            axes.plot(steps, values, label=label, color="tab:orange", marker="o", linewidth=1.5)
        else:
            axes.plot(steps, values, label=label, marker=".", linestyle="--", linewidth=1.0)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure


def read_report(run_dir: Path) -> tuple[str, dict[str, Any] | None]:
    """The before/after report of a run: compare.md's text ("" when none) and compare.json's record."""
    folder = RunLayout(run_dir).eval
    markdown = (folder / "compare.md").read_text(encoding="utf-8") if (folder / "compare.md").is_file() else ""
    record = None
    if (folder / "compare.json").is_file():
        try:
            record = json.loads((folder / "compare.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            record = None
    return markdown, record


def file_url(path: Path) -> str:
    """The page's link to a file it may serve (the runs folder is in Gradio's allowed paths)."""
    return "/gradio_api/file=" + urllib.parse.quote(str(path))


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def runs_table_html(infos: list[RunInfo], headers: list[str], live: set[Path]) -> str:
    """The runs as an HTML table (escaped), with links to each run's reports; `live` marks runs the page runs."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    rows = []
    for info in infos:
        status = info.status + (" ●" if info.path in live else "")
        links = " · ".join(
            f'<a href="{html.escape(file_url(path))}" target="_blank">{html.escape(name)}</a>'
            for name, path in info.reports.items()
        )
        cells = [
            f"<b>{html.escape(info.name)}</b>",
            html.escape(status) + (f"<br><small>{html.escape(info.error[:200])}</small>" if info.error else ""),
            html.escape(info.method),
            html.escape(info.adapter),
            html.escape(info.base_model),
            "–" if info.steps is None else str(info.steps),
            _fmt(info.best_val_loss),
            _fmt(info.final_loss),
            links or "–",
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f'<table class="tf-runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
