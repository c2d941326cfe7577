"""The runs of a folder, summarised for `tuneforge runs`: what each trained, how far it got, how it scored, and
how the configs of several runs differ.

Everything is read from what a run directory holds (see tuneforge.models.rundir): run.json (status and numbers),
config.yaml (method, adapter, data, length), metrics.jsonl (steps and losses, also of a run still going) and
eval/compare.json (the before/after totals and the forgetting check). A damaged file never stops the listing: the
run is shown with what could be read.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import UserError
from tuneforge.models.rundir import RunLayout

__all__ = [
    "MAX_DEPTH",
    "ConfigDifference",
    "RunSummary",
    "config_differences",
    "find_runs",
    "flatten_config",
    "loss_series",
    "read_config",
    "summarize_run",
]

MAX_DEPTH = 4  # how many folders below the searched one a run directory may sit
# keys that differ between any two runs by construction, and so say nothing about them
IGNORED_KEYS = ("output.dir",)


@dataclass
class RunSummary:
    """One run directory as `tuneforge runs` lists it."""

    name: str
    path: str
    status: str
    method: str = ""
    adapter: str = ""
    data: list[str] = field(default_factory=list)
    steps: int | None = None
    total_steps: int | None = None
    total_exact: bool = True
    best_val_loss: float | None = None
    final_loss: float | None = None
    questions: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    general: dict[str, float] | None = None
    likelihood: dict[str, float] | None = None
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain JSON values."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------------- finding runs


def find_runs(folder: Path) -> list[Path]:
    """The run directories (folders holding a run.json) in `folder`: itself when it is one, else the folders below it
    (up to MAX_DEPTH levels, hidden folders and the insides of runs skipped), sorted by path."""
    folder = Path(folder).expanduser()
    make_one = (
        f"train one with `tuneforge train CONFIG.yaml` (its output.dir, e.g. {folder / 'my-run'}, becomes the run "
        "directory), or name the folder that holds your runs: `tuneforge runs FOLDER`"
    )
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UserError(f"no runs in {folder}: it {what}; {make_one}")
    if RunLayout(folder).status.is_file():
        return [folder]
    found = []
    top = len(folder.parts)
    for current, dirs, files in os.walk(folder):
        here = Path(current)
        if "run.json" in files and here != folder:
            found.append(here)
            dirs[:] = []  # a run's checkpoints/, eval/ and model/ hold no runs
            continue
        depth = len(here.parts) - top
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
    if not found:
        raise UserError(f"no runs in {folder} (looked for run.json up to {MAX_DEPTH} folders deep); {make_one}")
    return sorted(found)


# ---------------------------------------------------------------------------------------------------- reading files


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _read_status(run_dir: Path) -> tuple[dict[str, Any], str]:
    """run.json's record and "" , or {} and why it could not be read ("" with no run.json at all)."""
    path = RunLayout(run_dir).status
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, ""
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return {}, f"{path.name}: {err}"
    if not isinstance(record, dict):
        return {}, f"{path.name} holds a JSON {type(record).__name__}, not an object"
    return record, ""


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml as a mapping; a UserError naming the file when it is missing or not YAML."""
    path = RunLayout(run_dir).config
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{path} is missing: {run_dir} holds no run config (was it made by `tuneforge train`?)"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path} is not readable YAML ({reason}); restore it from the run's log or config") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} holds no mapping of config sections; restore it from the config you trained with")
    return raw


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records that have an integer step; a line being written (or damaged) is skipped."""
    path = RunLayout(run_dir).metrics
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and not isinstance(record["step"], bool):
            records.append(record)
    return records


def loss_series(run_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """The run's "train" and "validation" loss curves as (steps, losses) from metrics.jsonl (empty when none)."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for record in _metrics(run_dir):
        for key, name in (("loss", "train"), ("val_loss", "validation")):
            value = _number(record.get(key))
            if value is not None:
                steps, values = curves.setdefault(name, ([], []))
                steps.append(record["step"])
                values.append(value)
    return curves


def _compare_record(run_dir: Path) -> dict[str, Any]:
    path = RunLayout(run_dir).eval / "compare.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


# ---------------------------------------------------------------------------------------------------- one run


def _sources(data: dict[str, Any]) -> list[str]:
    """The training sources: data.train files and data.dataset catalog names."""
    sources = []
    for key in ("train", "dataset"):
        value = data.get(key)
        items = value if isinstance(value, list) else [value] if isinstance(value, str) else []
        sources += [str(item) for item in items if item]
    return sources


def _total_steps(
    config: dict[str, Any], status: dict[str, Any], records: list[dict[str, Any]], done: int | None
) -> tuple[int | None, bool]:
    """(planned optimizer steps, whether the number is exact): train.max_steps, a finished run's own count, or
    train.epochs × the steps per epoch its metrics show (rounded epochs make that an estimate)."""
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    max_steps = train.get("max_steps")
    if isinstance(max_steps, int) and not isinstance(max_steps, bool) and max_steps > 0:
        return max_steps, True
    if status.get("status") == "finished" and not status.get("stopped_early") and done is not None:
        return done, True
    epochs = _number(train.get("epochs"))
    timed = [r for r in records if (_number(r.get("epoch")) or 0) > 0]
    if epochs is None or not timed:
        return None, True
    last = max(timed, key=lambda r: r["step"])
    per_epoch = max(1, round(last["step"] / float(last["epoch"])))
    return max(1, math.ceil(epochs * per_epoch)), False


def _eval_scores(run_dir: Path) -> tuple[dict[str, dict[str, list[int]]], dict[str, float] | None, dict | None]:
    """compare.json's totals per kind, its forgetting accuracies and its likelihood losses (what is there)."""
    record = _compare_record(run_dir)
    questions = {}
    totals = record.get("totals") if isinstance(record.get("totals"), dict) else {}
    for kind, sides in totals.items():
        pairs = [sides.get(side) if isinstance(sides, dict) else None for side in ("before", "after")]
        if all(isinstance(p, list) and len(p) == 2 and all(isinstance(n, int) for n in p) for p in pairs):
            questions[str(kind)] = {"before": list(pairs[0]), "after": list(pairs[1])}
    general = None
    forgetting = record.get("forgetting") if isinstance(record.get("forgetting"), dict) else {}
    if _number(forgetting.get("base")) is not None and _number(forgetting.get("tuned")) is not None:
        general = {"base": float(forgetting["base"]), "tuned": float(forgetting["tuned"])}
        general["items"] = int(forgetting["items"]) if isinstance(forgetting.get("items"), int) else 0
    likelihood = None
    found = record.get("likelihood") if isinstance(record.get("likelihood"), dict) else {}
    if _number(found.get("base_loss")) is not None and _number(found.get("tuned_loss")) is not None:
        likelihood = {"base_loss": float(found["base_loss"]), "tuned_loss": float(found["tuned_loss"])}
    return questions, general, likelihood


def summarize_run(run_dir: Path, name: str | None = None) -> RunSummary:
    """What `tuneforge runs` shows about `run_dir`; damaged files leave their fields empty, never raise."""
    status, problem = _read_status(run_dir)
    summary = RunSummary(name=name or run_dir.name, path=str(run_dir), status="unknown")
    if problem:
        summary.status = f"unreadable: {problem}"
    elif isinstance(status.get("status"), str):
        summary.status = status["status"]
    try:
        config = read_config(run_dir)
    except UserError as err:
        config = {}
        summary.error = str(err)
    section = lambda key: config.get(key) if isinstance(config.get(key), dict) else {}  # noqa: E731
    summary.method = str(section("method").get("name", ""))
    summary.adapter = str(section("adapter").get("name", ""))
    summary.data = _sources(section("data"))
    records = _metrics(run_dir)
    done = status.get("steps")
    summary.steps = done if isinstance(done, int) else max((r["step"] for r in records), default=None)
    summary.total_steps, summary.total_exact = _total_steps(config, status, records, summary.steps)
    val_losses = [v for r in records if (v := _number(r.get("val_loss"))) is not None]
    best = _number(status.get("best_val_loss"))
    summary.best_val_loss = best if best is not None else min(val_losses, default=None)
    train_losses = [v for r in records if (v := _number(r.get("loss"))) is not None]
    final = _number(status.get("final_loss"))
    summary.final_loss = final if final is not None else (train_losses[-1] if train_losses else None)
    if isinstance(status.get("error"), str) and status["error"]:
        summary.error = status["error"]
    summary.questions, summary.general, summary.likelihood = _eval_scores(run_dir)
    return summary


# ---------------------------------------------------------------------------------------------------- configs


def flatten_config(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys ({"train": {"seed": 1}} → {"train.seed": 1}); lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


@dataclass
class ConfigDifference:
    """One dotted config key whose value is not the same in every run; `present[i]` False: run i has no such key."""

    key: str
    values: list[Any]
    present: list[bool]

    def as_dict(self) -> dict[str, Any]:
        """The difference as plain JSON values."""
        return asdict(self)


def config_differences(configs: list[dict[str, Any]]) -> list[ConfigDifference]:
    """The dotted keys (in config order) whose values differ between the runs' configs, `output.dir` left out."""
    flats = [flatten_config(config) for config in configs]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    missing = object()
    rows = []
    for key in keys:
        if key in IGNORED_KEYS:
            continue
        values = [flat.get(key, missing) for flat in flats]
        if all(value == values[0] and type(value) is type(values[0]) for value in values):
            continue
        present = [value is not missing for value in values]
        rows.append(ConfigDifference(key, [v if v is not missing else None for v in values], present))
    return rows
