"""Sequence-classification rows: a text and its class, e.g. {"text": "Great film!", "label": "positive"}.

The label is a class name or an integer id (0, 1, ... into `method.labels`); which is which is decided by the
`classify` method once every row is read. The columns are `text` and `label` unless `data.columns` renames them
(`{text: review, label: sentiment}`). `method.name: classify` reads rows in this format when `data.format` is auto.
"""

from __future__ import annotations

from typing import Any

from tuneforge.data.formats.base import FORMATS, Columns, ParsedRow, malformed
from tuneforge.data.messages import RowError
from tuneforge.errors import UserError

__all__ = ["CLASSIFICATION_COLUMNS", "classification_columns", "class_name", "parse_classification"]

CLASSIFICATION_COLUMNS = ("text", "label")
_DEFAULT = Columns(text="text", label="label")


def classification_columns(given: dict[str, str] | None) -> Columns:
    """The columns of classification rows from `data.columns` (keys text and label; the rest keep their name)."""
    given = given or {}
    unknown = sorted(set(given) - set(CLASSIFICATION_COLUMNS))
    if unknown:
        raise UserError(
            f"data.columns {', '.join(unknown)}: classification rows have the columns text and label only "
            "(e.g. data.columns: {text: review, label: sentiment})"
        )
    return Columns(text=given.get("text", "text"), label=given.get("label", "label"))


def class_name(value: Any, key: str) -> str:
    """A row's class as text: a name (stripped), or an integer id written as digits; RowError when there is none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError("missing label", f"no label in field {key!r}")
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        raise malformed(f"field {key!r}", "a class name or an integer id", value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():  # an integer column with gaps reads as floats (Parquet)
        return str(int(value))
    raise malformed(f"field {key!r}", "a class name or an integer id", value)


@FORMATS.register("classification")
def parse_classification(row: dict[str, Any], columns: Columns = _DEFAULT) -> ParsedRow:
    """A labelled text for sequence classification."""
    text_key, label_key = columns.text or "text", columns.label or "label"
    if text_key not in row:
        raise RowError("missing field", f"missing text field {text_key!r}")
    text = row[text_key]
    if text is None:
        raise RowError("empty text", f"field {text_key!r} is empty")
    if not isinstance(text, str):
        raise malformed(f"field {text_key!r}", "a string", text)
    return ParsedRow([], text=text, category=class_name(row.get(label_key), label_key))
