"""The comparison as the terminal shows it: every question side by side, the summary table and the closing lines.

It prints the same rows and numbers that compare.json, compare.md and compare.html hold (tuneforge.eval.report).
"""

from __future__ import annotations

from typing import Any

from tuneforge.eval.report import SUMMARY_COLUMNS, answer_mark, summary_rows

__all__ = ["print_tables"]


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _answer(row: dict[str, Any], side: str) -> str:
    loop = f" [{row[f'{side}_loop']}]" if row[f"{side}_loop"] else ""
    return f"{answer_mark(row, side)} {_clip(row[side])}{loop}"


def print_tables(rows: list[dict[str, Any]], record: dict[str, Any], notes: list[tuple[str, str, bool]]) -> None:
    """Print the question table, the summary table, a line per kind and the `notes` ((name, text, alarming))."""
    from rich.markup import escape
    from rich.table import Table

    from tuneforge.progress import console

    table = Table(title="Before vs after (held-out questions)", show_lines=True, expand=True)
    for name, ratio in (("kind", 2), ("question", 3), ("before", 5), ("after", 5)):
        table.add_column(name, ratio=ratio, overflow="fold")
    for row in rows:
        table.add_row(
            *(escape(cell) for cell in (row["kind"], row["question"], _answer(row, "before"), _answer(row, "after")))
        )
    console.print(table)
    summary = Table(title="Summary")
    for column in SUMMARY_COLUMNS:
        summary.add_column(column, justify="left" if column == "kind" else "right")
    for cells in summary_rows(rows, record["totals"]):
        summary.add_row(*(escape(cell) for cell in cells))
    console.print(summary)
    for kind, total in record["totals"].items():
        loops = record["loops"].get(kind, {"after": 0})["after"]
        caught = f" ({loops} in a repetition loop)" if loops else ""
        console.print(
            f"[bold]{escape(kind)}[/]: before {total['before'][0]}/{total['before'][1]} correct, "
            f"after {total['after'][0]}/{total['after'][1]} correct{caught}"
        )
    for name, text, alarming in notes:
        style = "red" if alarming else "yellow" if name == "note" else "green"
        console.print(f"[{style}]{escape(name)}[/]: {escape(text)}")
