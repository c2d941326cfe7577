"""The console tuneforge prints through: what a user copies from piped output must come out whole."""

from __future__ import annotations

import re

from rich.table import Table

from tuneforge.progress import console


def printed(*renderables: object) -> str:
    with console.capture() as captured:  # leaves the console's own output stream untouched
        console.print(*renderables)
    return re.sub(r"\x1b\[[0-9;]*m", "", captured.get())


def test_a_long_path_or_command_is_printed_on_one_line_not_broken_at_the_width() -> None:
    path = "/tmp/" + "deeper/" * 25 + "ollama/Modelfile"
    line = f"Ollama: ollama create run -f {path} && ollama run run"
    assert len(line) > console.width
    assert printed(line) == line + "\n"


def test_tables_still_fit_the_width() -> None:
    table = Table("question", "answer")
    table.add_row("Who are you? " * 8, "I am Forge, made by the tuneforge authors. " * 4)
    lines = printed(table).splitlines()
    assert len(lines) > 5 and max(len(line) for line in lines) <= console.width
