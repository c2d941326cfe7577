"""Read data files row by row, keeping each row's location (line or row number) for error reports.

JSON (an array, or JSON Lines), JSONL, CSV (header row), Parquet and plain text (one document per non-empty line,
read as {"text": line}, the way continued-pretraining corpora are laid out).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

__all__ = ["SUPPORTED_SUFFIXES", "LineCounter", "RawRow", "read_rows"]

SUPPORTED_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt")
_SEPARATORS = re.compile(r"[ \t\r\n,]*")
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of bytes that are not UTF-8


@dataclass
class RawRow:
    """One row of a file: the parsed value (or the reason it could not be parsed) and where it starts."""

    line: int
    value: Any = None
    error: str | None = None
    unit: str = "line"
    reason: str | None = None  # the count's reason for an unreadable row (default: by the file type)

    def where(self, path: Path | str) -> str:
        """`file:line` (or `file:row N` for Parquet) — the location printed in every report."""
        return f"{path}:{self.line}" if self.unit == "line" else f"{path}:{self.unit} {self.line}"


class LineCounter:
    """The line number of positions in `text` asked for in increasing order, counted on from the previous one.

    Each character is scanned once however many positions are asked for (`scanned` counts them), so numbering
    every row of a file is linear in its size. A position before the previous one restarts from the top.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.scanned = 0
        self._position = 0
        self._line = 1

    def line_at(self, position: int) -> int:
        """The 1-based line holding character `position`."""
        if position < self._position:
            self._position, self._line = 0, 1
        self._line += self.text.count("\n", self._position, position)
        self.scanned += position - self._position
        self._position = position
        return self._line


def _json_array_rows(text: str, path: Path) -> Iterator[RawRow]:
    """Yield the elements of a top-level JSON array with the line each starts on."""
    decoder = json.JSONDecoder()
    lines = LineCounter(text)
    index = text.index("[") + 1
    while True:
        index = _SEPARATORS.match(text, index).end()  # type: ignore[union-attr]  # "*" matches the empty string
        if index >= len(text):
            raise UserError(f"{path}: the JSON array is not closed with ']'")
        if text[index] == "]":
            return
        line = lines.line_at(index)
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as err:
            raise _array_error(path, err.lineno, err.msg) from None
        except (ValueError, RecursionError) as err:  # e.g. an integer too long, or nesting too deep
            raise _array_error(path, line, f"{type(err).__name__}: {err}") from None
        yield RawRow(line=line, value=value)


def _array_error(path: Path, line: int, why: str) -> UserError:
    return UserError(
        f"{path}:{line}: invalid JSON ({why}); the file cannot be read past it. "
        "Fix that line, or store the data as JSON Lines (.jsonl) so one bad row only drops that row"
    )


def _jsonl_rows(text: str) -> Iterator[RawRow]:
    # split on "\n" only: str.splitlines also breaks at U+2028/U+2029 and other separators valid inside JSON strings
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        if _UNDECODABLE.search(raw):
            yield _not_utf8(number)
            continue
        try:
            yield RawRow(line=number, value=json.loads(raw))
        except json.JSONDecodeError as err:
            yield RawRow(line=number, error=f"malformed JSON ({err.msg} at column {err.colno})")
        except (ValueError, RecursionError) as err:  # an integer too long to convert, nesting too deep
            yield RawRow(line=number, error=f"malformed JSON ({type(err).__name__}: {err})")


def _not_utf8(line: int) -> RawRow:
    return RawRow(line=line, error="the line is not valid UTF-8 text", reason="not UTF-8")


def _csv_rows(text: str) -> Iterator[RawRow]:
    # csv.reader (not DictReader) so that blank lines, which DictReader skips silently, still advance the start line
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return
    end = reader.line_num
    for fields in reader:
        start, end = end + 1, reader.line_num
        if not fields:
            continue
        if len(fields) > len(header):
            yield RawRow(line=start, error=f"more fields than the {len(header)} header columns")
        else:
            padded: list[str | None] = [*fields, *[None] * (len(header) - len(fields))]  # missing fields are None
            yield RawRow(line=start, value=dict(zip(header, padded, strict=True)))


def _text_rows(text: str) -> Iterator[RawRow]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if _UNDECODABLE.search(raw):
            yield _not_utf8(number)
        elif raw.strip():
            yield RawRow(line=number, value={"text": raw})


def _parquet_rows(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        raise UserError(f"cannot read Parquet file {path}: {err}") from None
    for number, value in enumerate(table.to_pylist(), start=1):
        yield RawRow(line=number, value=value, unit="row")


def _read_text(path: Path, per_line: bool) -> str:
    """The file's text. With `per_line`, bytes that are not UTF-8 become lone surrogates (`_UNDECODABLE`) so that
    only their lines are dropped; otherwise they make the whole file unreadable (a CSV field or a JSON array
    element can span lines)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read data file {path}: {err}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        if not per_line:
            line = data.count(b"\n", 0, err.start) + 1
            raise UserError(f"{path}:{line}: not UTF-8 text ({err.reason}). Data files must be UTF-8 text") from None
        text = data.decode("utf-8-sig", errors="surrogateescape")
    return text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as text-mode reading gives


def read_rows(path: Path) -> Iterator[RawRow]:
    """Rows of a supported data file; a missing or unreadable file raises a UserError."""
    if not path.is_file():
        raise UserError(f"data file {path} not found")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UserError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if suffix == ".parquet":
        yield from _parquet_rows(path)
        return
    text = _read_text(path, per_line=suffix != ".csv")
    if suffix == ".csv":
        yield from _csv_rows(text)
    elif suffix == ".txt":
        yield from _text_rows(text)
    elif text.lstrip().startswith("["):
        bad = _UNDECODABLE.search(text)
        if bad:
            line = text.count("\n", 0, bad.start()) + 1
            raise UserError(f"{path}:{line}: not UTF-8 text; the JSON array cannot be read. Data files must be UTF-8")
        yield from _json_array_rows(text, path)
    else:
        yield from _jsonl_rows(text)
