"""What a command printed, as a terminal would show it: carriage returns and rich's cursor codes applied.

Jobs run with rich's live progress bars on (they redraw one line with `\\r` and ESC[2K, several with ESC[nA),
so the page can show the current bar ("training ━━━ 3/5 eta 0:00:02 loss 1.234") and a clean log. Only the
last `live` lines can still change; older ones are final and handed out once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Progress", "TerminalText", "find_progress"]

_TOKEN = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b[^\[]|\r|\n|\x08|[^\x1b\r\n\x08]+")
_PROGRESS = re.compile(r"^\s*(?P<label>\S.*?)\s+[━╸╺╾╼─\s]*(?P<done>\d+)/(?P<total>\d+)\s+eta\b")


@dataclass(frozen=True)
class Progress:
    """A progress bar line: its label, how far it is, and the whole line (ETA, loss, speed)."""

    label: str
    done: int
    total: int
    line: str

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


def find_progress(lines: list[str]) -> Progress | None:
    """The last progress bar among `lines`, or None."""
    for line in reversed(lines):
        match = _PROGRESS.match(line)
        if match:
            return Progress(match["label"].strip(), int(match["done"]), int(match["total"]), line.strip())
    return None


class TerminalText:
    """A tiny terminal: feed it output, read back final lines and the live (still changing) ones."""

    def __init__(self, live: int = 40) -> None:
        self.live = live
        self.lines: list[str] = [""]
        self.row = 0
        self.col = 0

    def _write(self, text: str) -> None:
        line = self.lines[self.row].ljust(self.col)
        self.lines[self.row] = line[: self.col] + text + line[self.col + len(text) :]
        self.col += len(text)

    def _control(self, params: str, command: str) -> None:
        numbers = [int(p) for p in params.replace("?", "").split(";") if p.isdigit()]
        count = numbers[0] if numbers else 1
        if command == "A":
            self.row = max(0, self.row - count)
        elif command == "B":
            self.row = min(len(self.lines) - 1, self.row + count)
        elif command == "G":
            self.col = max(0, count - 1)
        elif command == "K":
            mode = numbers[0] if numbers else 0
            line = self.lines[self.row]
            self.lines[self.row] = (
                "" if mode == 2 else line[: self.col] if mode == 0 else " " * self.col + line[self.col :]
            )
        elif command == "J":
            self.lines[self.row] = self.lines[self.row][: self.col]
            del self.lines[self.row + 1 :]

    def feed(self, text: str) -> list[str]:
        """Apply `text`; returns the lines that became final (scrolled out of the live window)."""
        for match in _TOKEN.finditer(text):
            token = match.group(0)
            if match.group(2):
                self._control(match.group(1), match.group(2))
            elif token == "\r":
                self.col = 0
            elif token == "\n":
                self.row += 1
                self.col = 0
                if self.row == len(self.lines):
                    self.lines.append("")
            elif token == "\x08":
                self.col = max(0, self.col - 1)
            elif not token.startswith("\x1b"):
                self._write(token)
        keep_from = max(0, min(self.row, len(self.lines) - self.live))
        done = [line.rstrip() for line in self.lines[:keep_from]]
        if keep_from:
            del self.lines[:keep_from]
            self.row -= keep_from
        return done

    def screen(self) -> list[str]:
        """The live lines (what may still change), trailing empty line dropped."""
        lines = [line.rstrip() for line in self.lines]
        return lines[:-1] if lines and not lines[-1] else lines

    def finish(self) -> list[str]:
        """Every remaining line, final (the program ended)."""
        lines = self.screen()
        self.lines, self.row, self.col = [""], 0, 0
        return lines
