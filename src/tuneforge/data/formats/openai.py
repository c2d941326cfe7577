"""OpenAI fine-tuning rows: {"messages": [...], "tools": [...]}, one per JSONL line, tool calls included.

Assistant messages may carry `weight` (0 excludes the turn from the loss) and `reasoning_content` (a thinking
trace, kept as a leading <think> block). A boolean `label` column makes the row a KTO example.
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.data.formats.base import FORMATS, Columns, ParsedRow, kto_label
from tuneforge.data.formats.sharegpt import parse_tools
from tuneforge.data.messages import ROLES, Message, RowError

__all__ = ["parse_message_list", "parse_openai"]

_DEFAULT = Columns(messages="messages")


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(parts) == len(content):
            return "".join(parts)
    raise RowError("malformed field", f"{where}.content must be text")


def _tool_calls(raw: Any, where: str) -> list[dict[str, Any]] | None:
    if not raw:
        return None
    calls = []
    for call in raw:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or "name" not in function:
            raise RowError("malformed field", f"{where}.tool_calls items need function.name")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                raise RowError("malformed field", f"{where} tool call arguments are not JSON") from None
        calls.append({"name": function["name"], "arguments": arguments})
    return calls


def _message(item: Any, where: str) -> Message:
    if not isinstance(item, dict) or "role" not in item:
        raise RowError("malformed field", f"{where} needs 'role' and 'content'")
    role = "system" if item["role"] == "developer" else item["role"]
    if role not in ROLES:
        raise RowError("unsupported role", f"{where} has role {item['role']!r}")
    content = _content_text(item.get("content"), where)
    thinking = item.get("reasoning_content")
    if role == "assistant" and isinstance(thinking, str) and thinking.strip():
        content = f"<think>\n{thinking.strip()}\n</think>\n\n{content}"
    weight = item.get("weight") if role == "assistant" else None
    if weight is not None and weight not in (0, 1):
        raise RowError("malformed field", f"{where}.weight must be 0 or 1")
    return Message(role, content, tool_calls=_tool_calls(item.get("tool_calls"), where), weight=weight)


def parse_message_list(items: Any, key: str) -> list[Message]:
    """A list of OpenAI-style message dicts (a plain string counts as one user message)."""
    if isinstance(items, str):
        return [Message("user", items)]
    if not isinstance(items, list):
        raise RowError("missing field", f"field {key!r} must be a list of messages")
    return [_message(item, f"{key}[{index}]") for index, item in enumerate(items)]


@FORMATS.register("openai")
def parse_openai(row: dict[str, Any], columns: Columns = _DEFAULT) -> ParsedRow:
    """Convert one OpenAI-style row (`developer` is treated as system)."""
    key = columns.messages or "messages"
    if not isinstance(row.get(key), list):
        raise RowError("missing field", f"field {key!r} must be a list")
    messages = parse_message_list(row[key], key)
    return ParsedRow(messages, parse_tools(columns.get(row, "tools")), label=kto_label(columns.get(row, "kto_tag")))
