"""Read data files row by row, keeping each row's line number for error reports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

__all__ = ["RawRow", "read_rows"]

SUPPORTED_SUFFIXES = (".json", ".jsonl")


@dataclass
class RawRow:
    """One row of a file: the parsed value (or the JSON error) and the line it starts on."""

    line: int
    value: Any = None
    error: str | None = None


def _json_array_rows(text: str, path: Path) -> Iterator[RawRow]:
    """Yield the elements of a top-level JSON array with the line each starts on."""
    decoder = json.JSONDecoder()
    index = text.index("[") + 1
    while True:
        while index < len(text) and text[index] in " \t\r\n,":
            index += 1
        if index >= len(text):
            raise UserError(f"{path}: the JSON array is not closed with ']'")
        if text[index] == "]":
            return
        line = text.count("\n", 0, index) + 1
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as err:
            raise UserError(
                f"{path}:{err.lineno}: invalid JSON ({err.msg}); the file cannot be read past it"
            ) from None
        yield RawRow(line=line, value=value)


def _jsonl_rows(text: str) -> Iterator[RawRow]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield RawRow(line=number, value=json.loads(raw))
        except json.JSONDecodeError as err:
            yield RawRow(line=number, error=f"malformed JSON ({err.msg} at column {err.colno})")


def read_rows(path: Path) -> Iterator[RawRow]:
    """Rows of a .json (array or JSON Lines) or .jsonl file; unreadable files raise a UserError."""
    if not path.is_file():
        raise UserError(f"data file {path} not found")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise UserError(f"{path}: unsupported file type {path.suffix!r}; use {' or '.join(SUPPORTED_SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read data file {path}: {err}") from None
    if text.lstrip().startswith("["):
        yield from _json_array_rows(text, path)
    else:
        yield from _jsonl_rows(text)
