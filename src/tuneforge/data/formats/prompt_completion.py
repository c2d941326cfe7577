"""TRL-style rows: {"prompt", "chosen", "rejected"} preference pairs and {"prompt", "completion", "label"} KTO rows.

`prompt` is a string or a message list; answers are a string or a message list ending with the assistant turn.
Without a prompt, chosen/rejected are whole conversations that share everything but the last turn.
"""

from __future__ import annotations

from typing import Any

from tuneforge.data.formats.base import FORMATS, Columns, ParsedRow, kto_label, malformed, optional_text
from tuneforge.data.formats.openai import parse_message_list
from tuneforge.data.formats.sharegpt import parse_tools
from tuneforge.data.messages import Message, RowError

__all__ = ["parse_prompt_completion", "parse_text"]

_DEFAULT = Columns(prompt="prompt", response="completion")


def _answer(raw: Any, key: str) -> tuple[list[Message], Message]:
    """(messages before the answer, the answer) from a string or a message list."""
    if isinstance(raw, str):
        return [], Message("assistant", raw)
    messages = parse_message_list(raw, key)
    if not messages:
        raise RowError("missing field", f"field {key!r} is empty")
    return messages[:-1], messages[-1]


@FORMATS.register("prompt_completion")
def parse_prompt_completion(row: dict[str, Any], columns: Columns = _DEFAULT) -> ParsedRow:
    """Convert a TRL-style preference or prompt/completion (KTO) row."""
    prompt_key = columns.prompt or "prompt"
    prompt = parse_message_list(row[prompt_key], prompt_key) if row.get(prompt_key) is not None else []
    system = optional_text(row, columns.system)
    if system and system.strip() and not (prompt and prompt[0].role == "system"):
        prompt.insert(0, Message("system", system))
    tools = parse_tools(columns.get(row, "tools"), columns.tools or "tools")
    if "chosen" in row or "rejected" in row:
        head_chosen, chosen = _answer(row.get("chosen"), "chosen")
        head_rejected, rejected = _answer(row.get("rejected"), "rejected")
        if not prompt:
            if [m.to_template() for m in head_chosen] != [m.to_template() for m in head_rejected]:
                raise RowError("malformed field", "chosen and rejected conversations differ before the last turn")
            prompt = head_chosen
        return ParsedRow(prompt, tools, chosen, rejected)
    response_key = columns.response or "completion"
    head, answer = _answer(row.get(response_key), response_key)
    return ParsedRow(prompt + head + [answer], tools, label=kto_label(columns.get(row, "kto_tag")))


@FORMATS.register("text")
def parse_text(row: dict[str, Any], columns: Columns = _DEFAULT) -> ParsedRow:
    """A raw-text row for continued pretraining: {"text": ...} (or the configured text column)."""
    key = columns.text or "text"
    value = row.get(key)
    if value is None:
        raise RowError("missing field", f"missing text field {key!r}")
    if not isinstance(value, str):
        raise malformed(f"field {key!r}", "a string", value)
    return ParsedRow([], text=value)
