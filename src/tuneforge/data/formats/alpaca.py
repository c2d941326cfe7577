"""Alpaca rows: instruction, input, output; optional system and history ([[user, assistant], ...])."""

from __future__ import annotations

from typing import Any

from tuneforge.data.formats.base import FORMATS, ParsedRow, require_text
from tuneforge.data.messages import Message, RowError

__all__ = ["parse_alpaca"]


@FORMATS.register("alpaca")
def parse_alpaca(row: dict[str, Any]) -> ParsedRow:
    """Convert one Alpaca row; `input`, when present, follows the instruction after a blank line."""
    instruction = require_text(row, "instruction")
    output = require_text(row, "output")
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise RowError("malformed field", "field 'input' must be a string")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages: list[Message] = []
    system = row.get("system")
    if isinstance(system, str) and system.strip():
        messages.append(Message("system", system))
    for pair in row.get("history") or []:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise RowError("malformed field", "each 'history' item must be [user, assistant] strings")
        messages += [Message("user", pair[0]), Message("assistant", pair[1])]
    messages += [Message("user", prompt), Message("assistant", output)]
    return ParsedRow(messages)
