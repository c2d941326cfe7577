"""`tuneforge data validate|stats|inspect CONFIG_OR_FILE`: see what training will see before it starts.

validate: every problem row with file:line and reason, counts per reason, kept + truncated + dropped = total
          (exit 1 when any row is dropped or truncated);
stats:    token-length histogram against the cutoff (text and PNG), supervised-token share, roles, kinds, mix;
inspect:  samples rendered with the model's chat template, supervised tokens highlighted.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["HELP", "NAME", "add_parser"]

NAME = "data"
HELP = "validate, describe or inspect training data"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, helptext in (
        ("validate", _validate, "report every problem row and the counts"),
        ("stats", _stats, "length histogram, supervised share, roles, mix"),
        ("inspect", _inspect, "show samples as the model sees them, loss mask highlighted"),
    ):
        action = actions.add_parser(name, help=helptext, description=helptext)
        action.add_argument("target", help="YAML config (its data and model sections) or a data file / folder")
        action.add_argument("overrides", nargs="*", help="config overrides such as data.cutoff_len=1024")
        action.add_argument("--model", help="model whose tokenizer and chat template to use (default: the config's)")
        action.set_defaults(handler=handler)
        if name == "stats":
            action.add_argument("--plot", default="data_stats.png", help="where to write the histogram PNG")
        if name == "inspect":
            action.add_argument("--n", type=int, default=3, help="how many samples to show")
            action.add_argument("--plain", action="store_true", help="mark supervised text with [[ ]], no colour")


def _stdout() -> Any:
    """Reports go to stdout (progress and loading messages go to stderr)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _config(args: argparse.Namespace) -> tuple[Any, Path | None]:
    import tuneforge.methods  # noqa: F401  (registers the method and adapter parameters configs are checked against)
    from tuneforge.cli.options import apply_config_access
    from tuneforge.config.load import load_config
    from tuneforge.errors import UserError

    target = Path(args.target)
    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model.name_or_path={args.model}")
    if target.suffix.lower() in (".yaml", ".yml"):
        if not target.is_file():
            raise UserError(f"config file {target} not found")
        config = load_config(target, overrides)
        apply_config_access(config, str(target))
        return config, target.resolve().parent
    if not target.exists():
        raise UserError(f"{target} not found: give a YAML config or a data file / folder")
    config = load_config(None, overrides)
    config.data.train = [str(target.resolve())]
    config.data.dataset = []
    return config, None


def _prepare(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """Config, its folder, tokenizer and prepared data; the drop-ratio stop becomes a warning here."""
    from tuneforge.data.build import build_dataset
    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.methods import METHODS
    from tuneforge.models.load import load_tokenizer
    from tuneforge.paths import data_cache_dir
    from tuneforge.progress import console

    config, base_dir = _config(args)
    console.print(f"tokenizer and chat template of {config.model.name_or_path}")
    tokenizer = load_tokenizer(config.model.name_or_path, config.model.trust_remote_code)
    ensure_chat_template(tokenizer, config.data.template)
    data = METHODS.get(config.method.name).data_section(config.data)  # e.g. classify: rows of a text and a label
    data = data.model_copy(update={"max_drop_ratio": 1.0})
    prepared, _ = build_dataset(data, tokenizer, config.train.seed, base_dir, cache_dir=data_cache_dir())
    _warn_drop_ratio(prepared.report, config.data.max_drop_ratio)
    return config, base_dir, tokenizer, prepared


def _warn_drop_ratio(report: Any, limit: float) -> None:
    from rich.markup import escape

    from tuneforge.data.build import check_drop_ratio
    from tuneforge.errors import UserError
    from tuneforge.progress import console

    try:
        check_drop_ratio(report, limit)
    except UserError as err:
        console.print(f"[red]warning: training would stop on this data:[/] {escape(str(err))}", highlight=False)


def _validate(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    console = _stdout()

    config, _, _, prepared = _prepare(args)
    report = prepared.report
    for problem in report.issues:
        style = "red" if problem.dropped else "yellow"
        where, detail = escape(problem.where), escape(problem.detail)  # row text must not read as markup
        console.print(f"[{style}]{where}[/]: {escape(problem.reason)}: {detail}", highlight=False)
    table = Table(title="rows by reason")
    table.add_column("reason")
    table.add_column("rows", justify="right")
    table.add_column("fate")
    for reason, count in report.dropped.most_common():
        table.add_row(escape(reason), str(count), "dropped")
    if report.truncated:
        table.add_row("over the cutoff length", str(report.truncated), f"truncated to {config.data.cutoff_len}")
    for reason, count in report.flagged.most_common():
        table.add_row(reason, str(count), "kept (flagged)")
    if table.row_count:
        console.print(table)
    for note in report.notes:
        console.print(escape(note))
    console.print(f"[bold]{escape(report.summary())}[/]")
    return 1 if report.dropped_total or report.truncated else 0


def _stats(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tuneforge.data.build import cleaning_options, data_sources
    from tuneforge.data.pipeline import read_sources
    from tuneforge.data.quality import DataReport
    from tuneforge.data.stats import compute_stats, plot_histogram, text_histogram

    console = _stdout()

    config, base_dir, _, prepared = _prepare(args)
    d = config.data
    conversations = read_sources(data_sources(d, base_dir), cleaning_options(d, config.train.seed), DataReport())
    samples = prepared.train + prepared.val
    stats = compute_stats(samples, conversations, d.cutoff_len)
    console.print(f"[bold]{len(samples)} samples[/] ({len(prepared.train)} train / {len(prepared.val)} validation)")
    console.print(
        f"tokens per sample: min {min(stats.lengths)}, median {stats.percentile(0.5)}, p95 {stats.percentile(0.95)}, "
        f"max {max(stats.lengths)}; cutoff_len {d.cutoff_len}; truncated {stats.truncated}"
    )
    for line in text_histogram(stats):
        console.print(line, highlight=False)
    console.print(
        f"supervised tokens: {stats.supervised_tokens} of {stats.total_tokens} ({100 * stats.supervised_share:.1f}%)"
    )
    console.print(
        "roles in the rows read: " + ", ".join(f"{role} {count}" for role, count in stats.roles.most_common())
    )
    console.print("sample kinds: " + ", ".join(f"{kind} {count}" for kind, count in stats.kinds.most_common()))
    table = Table(title="per dataset after cleaning and mixing")
    for column in ("dataset", "rows read", "samples", "share"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for name, count in stats.per_dataset.most_common():
        read = prepared.report.read_per_dataset.get(name, 0)
        table.add_row(name, str(read), str(count), f"{100 * count / len(samples):.1f}%")
    console.print(table)
    for note in prepared.report.notes:
        console.print(note)
    plot = plot_histogram(stats, Path(args.plot), f"{len(samples)} samples, cutoff_len {d.cutoff_len}")
    console.print(f"histogram: {plot}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import sys

    from rich.text import Text

    from tuneforge.progress import console

    _, _, tokenizer, prepared = _prepare(args)
    plain = args.plain or not sys.stdout.isatty()
    samples = (prepared.train + prepared.val)[: max(0, args.n)]
    legend = "[[supervised]]" if plain else "green = supervised (carries the loss)"
    print(f"{len(samples)} samples; {legend}")  # noqa: T201
    for index, sample in enumerate(samples, start=1):
        parts = [("", sample)] if sample.rejected is None else [("chosen", sample), ("rejected", sample.rejected)]
        for label, part in parts:
            title = f"--- sample {index}: {sample.source} ({sample.kind}{', ' + label if label else ''}; "
            title += f"{len(part.input_ids)} tokens, {part.supervised_tokens} supervised) ---"
            print(title)  # noqa: T201
            _show(tokenizer, part, plain, console, Text)
    return 0


def _show(tokenizer: Any, sample: Any, plain: bool, console: Any, text_cls: Any) -> None:
    from tuneforge.data.stats import supervised_runs

    runs = supervised_runs(tokenizer, sample)
    if plain:
        print("".join(f"[[{text}]]" if flag else text for text, flag in runs))  # noqa: T201
        return
    text = text_cls()
    for piece, flag in runs:
        text.append(piece, style="bold green" if flag else "dim")
    console.print(text, soft_wrap=True)
