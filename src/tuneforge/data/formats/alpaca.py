"""Alpaca rows: instruction, input, output; optional system, history ([[user, assistant], ...]) and tools.

With LLaMA-Factory `columns` the same layout covers preference data (chosen/rejected strings), KTO (a label
column) and raw text (a prompt column and no response: the text itself).
"""

from __future__ import annotations

from typing import Any

from tuneforge.data.formats.base import FORMATS, Columns, ParsedRow, kto_label, malformed, optional_text, require_text
from tuneforge.data.formats.sharegpt import parse_tools
from tuneforge.data.messages import Message, RowError

__all__ = ["parse_alpaca"]

_DEFAULT = Columns()


def _prompt(row: dict[str, Any], columns: Columns) -> str:
    instruction = require_text(row, columns.prompt) if columns.prompt else ""
    extra = optional_text(row, columns.query) or ""
    return f"{instruction}\n\n{extra}" if instruction.strip() and extra.strip() else instruction or extra


def _history(row: dict[str, Any], columns: Columns) -> list[Message]:
    history = columns.get(row, "history")
    if history is None or history == "" or history == []:  # CSV files hold an empty string for "no history"
        return []
    if not isinstance(history, list):
        raise malformed(f"field {columns.history!r}", "a list of [user, assistant] pairs", history)
    messages = []
    for index, pair in enumerate(history):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise RowError(
                "malformed field", f"{columns.history}[{index}] must be a [user, assistant] pair of strings"
            )
        messages += [Message("user", pair[0]), Message("assistant", pair[1])]
    return messages


def _answer(row: dict[str, Any], column: str) -> Message:
    return Message("assistant", require_text(row, column))


@FORMATS.register("alpaca")
def parse_alpaca(row: dict[str, Any], columns: Columns = _DEFAULT) -> ParsedRow:
    """Convert one Alpaca row; `input`, when present, follows the instruction after a blank line."""
    ranking = columns.chosen in row and columns.rejected in row if columns.chosen and columns.rejected else False
    if columns.response is None and not ranking and columns.prompt:
        return ParsedRow([], text=require_text(row, columns.prompt))
    messages: list[Message] = []
    system = optional_text(row, columns.system)
    if system and system.strip():
        messages.append(Message("system", system))
    messages += _history(row, columns)
    messages.append(Message("user", _prompt(row, columns)))
    tools = parse_tools(columns.get(row, "tools"), columns.tools or "tools")
    if ranking:
        return ParsedRow(messages, tools, _answer(row, columns.chosen), _answer(row, columns.rejected))
    messages.append(_answer(row, columns.response or "output"))
    return ParsedRow(messages, tools, label=kto_label(columns.get(row, "kto_tag")))
