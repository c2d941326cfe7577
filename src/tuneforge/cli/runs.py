"""`tuneforge runs [DIR]`: the runs in DIR (default: runs) as a table; `tuneforge runs compare A B ...`: their loss
curves in one PNG and the config keys that differ between them.

A run directory is found by its run.json (DIR itself, or folders below it). The table shows each run's method,
adapter, training data, steps done of planned (≈: estimated from train.epochs), best validation loss, the
before→after totals and general ability of its eval/compare.json, and its status. `--json` prints the same as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_FOLDER",
    "DEFAULT_PLOT",
    "HELP",
    "NAME",
    "PLOT_MARK",
    "add_parser",
    "general_cell",
    "plot_overlay",
    "questions_cell",
    "run",
    "steps_cell",
    "value_text",
    "write_plot",
    "written_by_us",
]

NAME = "runs"
HELP = "list runs (steps, losses, scores, status); `runs compare A B` overlays their curves and config diffs"

DEFAULT_FOLDER = "runs"
DEFAULT_PLOT = "runs-compare.png"
PLOT_MARK = "tuneforge runs compare"  # the PNG's Software text: a plot this command may overwrite
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STATUS_STYLE = {"finished": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}


def add_parser(sub: Any) -> None:
    """Add `runs` to the CLI's sub-commands."""
    parser = sub.add_parser(
        NAME,
        help=HELP,
        description=__doc__,
        usage="tuneforge runs [DIR] [--json]\n       tuneforge runs compare RUN RUN [RUN ...] [--out FILE] [--json]",
    )
    parser.add_argument("words", nargs="*", metavar="DIR | compare RUN ...", help="folder of runs, or compare RUN ...")
    parser.add_argument("--out", metavar="FILE", help=f"compare: the PNG to write (default: ./{DEFAULT_PLOT})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(handler=run)


def _stdout() -> Any:
    """Tables go to stdout (notes go to stderr, so that --json output stays pure JSON)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def run(args: argparse.Namespace) -> int:
    """List the runs of a folder, or (`compare A B ...`) set runs side by side."""
    from tuneforge.errors import UserError

    words = list(args.words)
    if words[:1] == ["compare"]:
        return _compare(words[1:], Path(args.out or DEFAULT_PLOT), args.json)
    if args.out:
        raise UserError("--out is for `tuneforge runs compare RUN RUN ...` (it names the PNG of the curves)")
    if len(words) > 1:
        raise UserError(
            f"`tuneforge runs` takes one folder, not {len(words)}; to set runs side by side: "
            f"tuneforge runs compare {' '.join(words)}"
        )
    return _list(Path(words[0] if words else DEFAULT_FOLDER), args.json)


# ---------------------------------------------------------------------------------------------------- listing


def _list(folder: Path, as_json: bool) -> int:
    from tuneforge.models.runs_index import find_runs, summarize_run

    runs = find_runs(folder)
    summaries = [summarize_run(path, _name(path, folder)) for path in runs]
    if as_json:
        sys.stdout.write(
            json.dumps({"folder": str(folder), "runs": [s.as_dict() for s in summaries]}, indent=2) + "\n"
        )
        return 0
    out = _stdout()
    out.print(_runs_table(summaries, f"Runs in {folder}"))
    for summary in summaries:
        if summary.error and summary.status != "finished":
            out.print(f"{summary.name}: {summary.error.splitlines()[0][:300]}", markup=False)
    return 0


def _name(path: Path, folder: Path) -> str:
    """The run's path relative to the listed folder (its own name when it is that folder)."""
    return path.relative_to(folder).as_posix() if path != folder else path.resolve().name or str(path)


def _loss(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def steps_cell(steps: int | None, total: int | None, exact: bool) -> str:
    """'12/40', '12/≈40' (planned steps estimated from train.epochs) or '–'."""
    if steps is None and total is None:
        return "–"
    planned = "?" if total is None else f"{'' if exact else '≈'}{total}"
    return f"{'–' if steps is None else steps}/{planned}"


def questions_cell(questions: dict[str, dict[str, list[int]]]) -> str:
    """compare.json's totals, one kind a line: 'identity 1/5→5/5'."""
    return "\n".join(
        f"{kind} {sides['before'][0]}/{sides['before'][1]}→{sides['after'][0]}/{sides['after'][1]}"
        for kind, sides in questions.items()
    ) or "–"  # fmt: skip


def general_cell(general: dict[str, float] | None, likelihood: dict[str, float] | None) -> str:
    """The forgetting check: 'base→tuned' accuracy in % (items), and the loss per token on reference answers."""
    lines = []
    if general is not None:
        items = f" ({general['items']})" if general.get("items") else ""
        lines.append(f"{100 * general['base']:.1f}%→{100 * general['tuned']:.1f}%{items}")
    if likelihood is not None:
        lines.append(f"loss {likelihood['base_loss']:.3f}→{likelihood['tuned_loss']:.3f}")
    return "\n".join(lines) or "–"


def _data_cell(sources: list[str]) -> str:
    return "\n".join(Path(source).name or source for source in sources) or "–"


def _runs_table(summaries: list[Any], title: str) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=title,
        caption="eval: right/scored per kind of question, general: general-ability check; both base→tuned",
        show_lines=len(summaries) > 1,
    )
    for column in ("run", "method", "adapter", "data", "steps", "best val", "eval", "general", "status"):
        short = column in ("method", "adapter", "steps", "best val")
        table.add_column(column, overflow="fold", no_wrap=short, min_width={"status": 11, "data": 10}.get(column))
    for s in summaries:
        style = STATUS_STYLE.get(s.status, "red" if s.status.startswith("unreadable") else "")
        cells = [
            s.name,
            s.method or "–",
            s.adapter or "–",
            _data_cell(s.data),
            steps_cell(s.steps, s.total_steps, s.total_exact),
            _loss(s.best_val_loss),
            questions_cell(s.questions),
            general_cell(s.general, s.likelihood),
        ]
        status = escape(s.status)
        table.add_row(*(escape(cell) for cell in cells), f"[{style}]{status}[/]" if style else status)
    return table


# ---------------------------------------------------------------------------------------------------- comparing


def _resolve(word: str) -> Path:
    """A run directory named on the command line: a path, or a run's name under ./runs."""
    from tuneforge.errors import UserError
    from tuneforge.models.rundir import RunLayout

    path = Path(word).expanduser()
    if not path.is_dir() and (Path(DEFAULT_FOLDER) / word).is_dir():
        path = Path(DEFAULT_FOLDER) / word
    if not path.is_dir():
        raise UserError(f"{word}: no such run directory; `tuneforge runs` lists the runs and their paths")
    layout = RunLayout(path)
    if not layout.status.is_file() and not layout.config.is_file():
        raise UserError(f"{path} is not a run directory (no run.json or config.yaml); `tuneforge runs` lists the runs")
    return path


def _labels(paths: list[Path]) -> list[str]:
    """Each run's name, or its whole path where two runs share a name."""
    names = [path.name or str(path) for path in paths]
    return [str(path) if names.count(name) > 1 else name for path, name in zip(paths, names, strict=True)]


def _compare(words: list[str], out: Path, as_json: bool) -> int:
    from tuneforge.errors import UserError
    from tuneforge.models.runs_index import config_differences, loss_series, read_config, summarize_run
    from tuneforge.progress import console

    if len(words) < 2:
        raise UserError("`tuneforge runs compare` needs two or more run directories: tuneforge runs compare RUN RUN")
    paths = [_resolve(word) for word in words]
    if len({path.resolve() for path in paths}) < len(paths):
        raise UserError(f"a run is named twice in {' '.join(words)}; name each run once")
    labels = _labels(paths)
    differences = config_differences([read_config(path) for path in paths])
    summaries = [summarize_run(path, label) for path, label in zip(paths, labels, strict=True)]
    curves = {label: loss_series(path) for label, path in zip(labels, paths, strict=True)}
    plotted = any(steps for series in curves.values() for steps, _ in series.values())
    if plotted:
        write_plot(out, plot_overlay(curves))
    else:
        console.print("[yellow]none of these runs has logged a loss yet (metrics.jsonl): no plot written[/]")
    if as_json:
        record = {
            "runs": [s.as_dict() for s in summaries],
            "plot": str(out) if plotted else None,
            "differences": [d.as_dict() for d in differences],
        }
        sys.stdout.write(json.dumps(record, indent=2, default=str) + "\n")
        return 0
    stdout = _stdout()
    stdout.print(_runs_table(summaries, "Runs"))
    stdout.print(_differences_table(differences, labels))
    if plotted:
        stdout.print(f"loss curves (train solid, validation dashed): {out}")
    return 0


def value_text(value: Any, present: bool = True) -> str:
    """A config value as the table shows it: YAML spelling (null, true), lists as JSON, '–' for an absent key."""
    if not present:
        return "–"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return json.dumps(value, default=str) if isinstance(value, list | dict) else str(value)


def _differences_table(differences: list[Any], labels: list[str]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    if not differences:
        return "The configs are the same (output.dir aside)."
    table = Table(title="Config differences (output.dir aside)")
    table.add_column("key", overflow="fold")
    for label in labels:
        table.add_column(escape(label), overflow="fold")
    for row in differences:
        texts = [value_text(value, present) for value, present in zip(row.values, row.present, strict=True)]
        table.add_row(escape(row.key), *(escape(text) for text in texts))
    return table


def plot_overlay(curves: dict[str, dict[str, tuple[list[int], list[float]]]]) -> bytes:
    """The runs' loss curves in one PNG: one colour per run, training loss solid, validation loss dashed."""
    from matplotlib.figure import Figure  # no pyplot: no global state

    figure = Figure(figsize=(9, 4.5), dpi=110)
    axes = figure.add_subplot()
    for index, (label, series) in enumerate(curves.items()):
        colour = f"C{index % 10}"
        if "train" in series:
            steps, values = series["train"]
            axes.plot(steps, values, color=colour, linewidth=1.3, marker="." if len(steps) < 2 else None,
                      label=f"{label}: train")  # fmt: skip
        if "validation" in series:
            steps, values = series["validation"]
            axes.plot(steps, values, color=colour, linewidth=1.3, linestyle="--", marker="o", markersize=3,
                      label=f"{label}: validation")  # fmt: skip
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (mean per supervised token)")
    axes.set_title("Loss curves")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": PLOT_MARK})
    return buffer.getvalue()


def written_by_us(path: Path) -> bool:
    """Whether `path` is a PNG this command wrote (its Software text chunk says so)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(64 * 1024)
    except OSError:
        return False
    return head.startswith(PNG_SIGNATURE) and b"Software\x00" + PLOT_MARK.encode() in head


def write_plot(out: Path, png: bytes) -> None:
    """Write the plot atomically; refuse a target that is not a .png, or an existing file this command did not
    write (it is never replaced or deleted)."""
    from tuneforge.atomic import atomic_write_bytes
    from tuneforge.errors import UserError

    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: the plot is a PNG; name a file ending in .png")
    if out.is_dir() or (out.exists() and not written_by_us(out)):
        raise UserError(
            f"{out} exists and is not a plot written by `tuneforge runs compare`; it is left as it is: "
            "name another file with --out, or move it away"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, png)
