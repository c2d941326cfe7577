"""Progress bars (rich) on stderr, shared by training, generation and conversion."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column

__all__ = ["console", "progress_bar"]

# soft_wrap: long lines (paths, commands to copy) are printed whole, not broken at the console width; tables keep it
console = Console(stderr=True, soft_wrap=True)


@contextmanager
def progress_bar(
    description: str, total: int, completed: int = 0, out: Console | None = None
) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, info="")`: moves the bar and shows `info` (e.g. loss, lr, tokens/s) beside it.

    The bar shows elapsed time and the ETA; `completed` starts it part-way (a resumed run), `out` replaces the
    shared stderr console.
    """
    columns = (
        TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
        BarColumn(bar_width=16),
        MofNCompleteColumn(table_column=Column(no_wrap=True)),
        TextColumn("eta", table_column=Column(no_wrap=True)),
        TimeRemainingColumn(table_column=Column(no_wrap=True, min_width=7)),
        TimeElapsedColumn(table_column=Column(no_wrap=True, min_width=7)),
        TextColumn("{task.fields[info]}", table_column=Column(ratio=1)),  # wraps instead of squeezing the rest
    )
    with Progress(*columns, console=out or console, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=completed, info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            if info is not None:
                progress.update(task, info=info)
            progress.advance(task, n)

        yield advance
